"""The Starlette application: routes, error handlers, and the Kafka link opened in the lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import Route

from contract.settings import Settings
from service.auth import ApiKeys
from service.errors import ApiError, handle_api_error, handle_http_exception, handle_unexpected
from service.health import health
from service.jobs import cancel_job, get_image, get_job, submit_job
from service.kafka_link import KafkaLink
from service.metrics import MetricsMiddleware, metrics
from service.openapi import build_spec, openapi
from service.state import AppState

ROUTES = [
    Route("/v1/jobs", submit_job, methods=["POST"]),
    Route("/v1/jobs/{job_id}", get_job, methods=["GET"]),
    Route("/v1/jobs/{job_id}/images/{index:int}", get_image, methods=["GET"]),
    Route("/v1/jobs/{job_id}/cancel", cancel_job, methods=["POST"]),
    Route("/health", health, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
]


def create_app(settings: Settings) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        kafka = KafkaLink(settings)
        await kafka.start(wait_s=10.0)
        app.state.easel = AppState(settings=settings, keys=ApiKeys(settings.all_keys), kafka=kafka)
        app.state.openapi = build_spec()
        try:
            yield
        finally:
            await kafka.stop()

    return Starlette(
        routes=ROUTES,
        middleware=[Middleware(MetricsMiddleware)],
        exception_handlers={
            ApiError: handle_api_error,
            HTTPException: handle_http_exception,
            Exception: handle_unexpected,
        },
        lifespan=lifespan,
    )

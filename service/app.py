"""The Starlette application: routes, error handlers, and the Kafka link opened in the lifespan.

`create_app(settings)` is the whole API; Starlette's TestClient (or httpx with a lifespan) runs it in-process
against a real broker.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Route

from contract.blobs import open_blob_store
from contract.catalog import Catalog
from contract.errors import SettingsError
from contract.job import MAX_ECHO_BYTES
from contract.settings import Settings
from service import a1111_api, loras_api, modelslab_api, runpod_api, skidio_api
from service.auth import ApiKeys
from service.errors import EXCEPTION_HANDLERS, UnexpectedErrors
from service.file_urls import get_file
from service.health import health, live, ready
from service.jobs import cancel_job, get_image, get_job, submit_job
from service.kafka_link import KafkaLink
from service.live import LIVE_ROUTES, start_stream_hub
from service.metrics import MetricsMiddleware, metrics
from service.openapi import build_spec, openapi
from service.retention import RetentionPurger
from service.state import AppState
from service.stream_slots import StreamSlots
from service.webhooks import start_delivery_view

STARTUP_WAIT_S = 10.0  # for Kafka, then the stream hub; the API starts anyway, answering 503 until they are ready

ROUTES = [
    Route("/v1/jobs", submit_job, methods=["POST"]),
    Route("/v1/jobs/{job_id}", get_job, methods=["GET"]),
    Route("/v1/jobs/{job_id}/images/{index:int}", get_image, methods=["GET"]),
    Route("/v1/jobs/{job_id}/cancel", cancel_job, methods=["POST"]),
    Route("/health", health, methods=["GET"]),
    Route("/health/live", live, methods=["GET"]),
    Route("/health/ready", ready, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
    Route("/files/{job_id}/{index:int}", get_file, methods=["GET"]),
    # ModelsLab realtime (seed 002)
    Route("/api/v6/realtime/text2img", modelslab_api.text2img, methods=["POST"]),
    Route("/api/v6/realtime/img2img", modelslab_api.img2img, methods=["POST"]),
    Route("/api/v6/realtime/inpaint", modelslab_api.inpaint, methods=["POST"]),
    Route("/api/v6/realtime/fetch/{job_id}", modelslab_api.fetch, methods=["POST"]),
    # RunPod serverless (seeds 001, 003)
    Route("/v2/{endpoint_id}/run", runpod_api.run, methods=["POST"]),
    Route("/v2/{endpoint_id}/runsync", runpod_api.runsync, methods=["POST"]),
    Route("/v2/{endpoint_id}/status/{job_id}", runpod_api.status, methods=["GET", "POST"]),
    Route("/v2/{endpoint_id}/stream/{job_id}", runpod_api.stream, methods=["GET", "POST"]),
    Route("/v2/{endpoint_id}/cancel/{job_id}", runpod_api.cancel, methods=["POST"]),
    Route("/v2/{endpoint_id}/retry/{job_id}", runpod_api.retry, methods=["POST"]),
    Route("/v2/{endpoint_id}/purge-queue", runpod_api.purge_queue, methods=["POST"]),
    Route("/v2/{endpoint_id}/health", runpod_api.health, methods=["GET"]),
    # AUTOMATIC1111 (seed 001's payload)
    Route("/sdapi/v1/txt2img", a1111_api.txt2img, methods=["POST"]),
    Route("/sdapi/v1/img2img", a1111_api.img2img, methods=["POST"]),
    Route("/sdapi/v1/progress", a1111_api.progress, methods=["GET"]),
    Route("/sdapi/v1/interrupt", a1111_api.interrupt, methods=["POST"]),
    Route("/sdapi/v1/samplers", a1111_api.samplers, methods=["GET"]),
    Route("/sdapi/v1/schedulers", a1111_api.schedulers, methods=["GET"]),
    Route("/sdapi/v1/sd-models", a1111_api.sd_models, methods=["GET"]),
    Route("/sdapi/v1/options", a1111_api.options, methods=["GET"]),
    Route("/sdapi/v1/loras", loras_api.loras, methods=["GET"]),
    # Skidio (seed 000)
    Route("/api/txt2img", skidio_api.txt2img, methods=["POST"]),
    Route("/api/txt2img/async", skidio_api.txt2img_async, methods=["POST"]),
    Route("/api/txt2img/status", skidio_api.job_status, methods=["GET", "POST"]),
    *LIVE_ROUTES,
]


def create_app(settings: Settings) -> Starlette:
    if settings.max_echo_bytes > MAX_ECHO_BYTES:  # the contract's cap: a job with more is invalid on Kafka
        raise SettingsError(f"EASEL_MAX_ECHO_BYTES={settings.max_echo_bytes} is over the contract's {MAX_ECHO_BYTES}")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        kafka = KafkaLink(settings)
        await kafka.start(wait_s=STARTUP_WAIT_S)
        app.state.easel = AppState(
            settings=settings,
            keys=ApiKeys(settings.all_keys, basic_users=settings.a1111_auth),
            kafka=kafka,
            blobs=open_blob_store(settings),
            catalog=Catalog.from_settings(settings),
            stream_slots=StreamSlots(settings.max_streams_per_key),
        )
        app.state.openapi = build_spec(app.routes)
        app.state.streams = await start_stream_hub(app.state.easel)
        if kafka.ready:  # then the hub is a moment away: start ready (/health/ready) when it is
            await app.state.streams.wait_ready(STARTUP_WAIT_S)
        app.state.webhook_deliveries = start_delivery_view(settings)
        purger = RetentionPurger(app.state.easel)
        purger.start()
        try:
            yield
        finally:
            await purger.stop()
            await app.state.webhook_deliveries.stop()
            await app.state.streams.stop()
            await kafka.stop()
            await app.state.easel.blobs.close()

    return Starlette(
        routes=ROUTES,
        middleware=[cors(settings), Middleware(MetricsMiddleware), Middleware(UnexpectedErrors)],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )


# Response headers a browser page may read: where a job is, how long to back off, Skidio's raw-image answer.
EXPOSED_HEADERS = ("Location", "Retry-After", "X-Job-Id", "X-Image-Count")


def cors(settings: Settings) -> Middleware:
    """Browser pages on EASEL_CORS_ORIGINS may call every route: preflights are answered for any method and the
    headers they ask for (Authorization, Content-Type, ...). Outermost, so error answers carry the headers too.
    No credentials: keys travel in headers or bodies, never in cookies."""
    return Middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_methods=["*"],
        allow_headers=["*"],
        expose_headers=EXPOSED_HEADERS,
    )

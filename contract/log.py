"""structlog set-up shared by every process: JSON in production, readable in a terminal."""

from __future__ import annotations

import logging
import os
import sys

import orjson
import structlog


def configure_logging(fmt: str = "console", level: str = "info") -> None:
    # transformers warns on import that torchvision is missing and it falls back to PIL image processors: the
    # runner needs no torchvision, so nothing a user can act on. Only its errors are shown (its variable still wins).
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    renderer: structlog.typing.Processor
    logger_factory: structlog.BytesLoggerFactory | structlog.PrintLoggerFactory
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer(serializer=orjson.dumps)
        logger_factory = structlog.BytesLoggerFactory(sys.stderr.buffer)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        logger_factory = structlog.PrintLoggerFactory(sys.stderr)
    factory = structlog.make_filtering_bound_logger(logging.getLevelName(level.upper()))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=factory,
        logger_factory=logger_factory,
        cache_logger_on_first_use=True,
    )

"""structlog set-up shared by every process: JSON in production, readable in a terminal."""

from __future__ import annotations

import logging
import os
import sys

import orjson
import structlog


class _OncePerMessage(logging.Filter):
    """Lets each distinct message through once. aiokafka logs "Topic X not found in cluster metadata" on every
    metadata refresh (several a second) while a topic it follows does not exist yet, e.g. the API's view of the
    dispatcher's delivery statuses before a dispatcher ever ran: once per topic says it."""

    def __init__(self, limit: int = 1000) -> None:
        super().__init__()
        self._seen: set[str] = set()
        self._limit = limit

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message in self._seen:
            return False
        if len(self._seen) < self._limit:  # bounded: past it, messages pass rather than memory grow
            self._seen.add(message)
        return True


# Loggers whose repeated messages say nothing new: aiokafka's metadata refreshes (above), and diffusers 0.42 saying
# "There are modules in AutoencoderKL that should be kept in float32: []" on every img2img and inpainting call.
ONCE_PER_MESSAGE_LOGGERS = ("aiokafka.cluster", "diffusers.models.modeling_utils")


def configure_logging(fmt: str = "console", level: str = "info") -> None:
    for name in ONCE_PER_MESSAGE_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _OncePerMessage) for f in logger.filters):
            logger.addFilter(_OncePerMessage())
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

"""The HTTP API (Starlette): validate, authenticate, submit to Kafka, serve reads from the state view."""

from service.app import create_app

__all__ = ["create_app"]

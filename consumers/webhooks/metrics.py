"""Prometheus metrics of the dispatcher (served on EASEL_WEBHOOK_METRICS_PORT when set)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

ATTEMPTS = Counter("easel_webhook_attempts_total", "Webhook delivery attempts", ["outcome"])
LATENCY = Histogram("easel_webhook_attempt_seconds", "Webhook attempt latency (request to response)")
DELIVERIES = Counter("easel_webhook_deliveries_total", "Deliveries that reached a final state", ["state"])
RETRIES = Counter("easel_webhook_retries_scheduled_total", "Failed attempts scheduled for another try")
IN_FLIGHT = Gauge("easel_webhook_in_flight", "Records being routed, waiting for their due time, or sent")

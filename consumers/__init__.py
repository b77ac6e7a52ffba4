"""Reading from Kafka into materialized views that the service (and the runner) serve from."""

from consumers.state_view import StateView

__all__ = ["StateView"]

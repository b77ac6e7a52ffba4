"""What every route needs, opened once in the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from contract.settings import Settings
from service.auth import ApiKeys
from service.kafka_link import KafkaLink


@dataclass
class AppState:
    settings: Settings
    keys: ApiKeys
    kafka: KafkaLink
    model_names: tuple[str, ...] = ("default",)

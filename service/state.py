"""What every route needs, opened once in the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass, field

from contract.blobs import BlobStore
from contract.catalog import Catalog
from contract.settings import Settings
from service.auth import ApiKeys
from service.kafka_link import KafkaLink
from service.stream_slots import StreamSlots


@dataclass
class AppState:
    settings: Settings
    keys: ApiKeys
    kafka: KafkaLink
    # Where the runners put images (contract/blobs.py); the API reads and, after retention, deletes them.
    blobs: BlobStore
    # The configured models, refiners and safety checker, by the names clients use.
    catalog: Catalog = field(default_factory=Catalog)
    # The live streams each key holds open on this instance, capped by EASEL_MAX_STREAMS_PER_KEY.
    stream_slots: StreamSlots = field(default_factory=lambda: StreamSlots(0))

    @property
    def model_names(self) -> tuple[str, ...]:
        return self.catalog.models

    @property
    def refiner_names(self) -> tuple[str, ...]:
        return self.catalog.refiners

    @property
    def safety_checker(self) -> bool:
        return self.catalog.safety_checker

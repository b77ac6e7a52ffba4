"""The models a deployment serves, by the names clients pick them with.

The API checks a job against it before queueing (a 4xx naming the configured ones), and the runner
checks again before running (a job written straight to Kafka never went through the API).
"""

from __future__ import annotations

from dataclasses import dataclass

from contract.job import JobSpec
from contract.settings import Settings

DEFAULT_MODEL = "default"


@dataclass(frozen=True)
class Catalog:
    models: tuple[str, ...] = (DEFAULT_MODEL,)
    refiners: tuple[str, ...] = ()
    safety_checker: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> Catalog:
        return cls(
            # The configured name first (A1111's current checkpoint), and "default" always.
            models=tuple(dict.fromkeys((settings.model_name or DEFAULT_MODEL, DEFAULT_MODEL))),
            refiners=(settings.refiner_name or "refiner",) if settings.refiner else (),
            safety_checker=bool(settings.safety_checker),
        )

    @property
    def model_name(self) -> str:
        """The base model's own name, as infotexts and A1111 report it."""
        return self.models[0]

    def problem(self, spec: JobSpec) -> tuple[str, str] | None:
        """(field, rule) for the first thing `spec` asks for that is not configured, else None."""
        if spec.model not in self.models:
            return "model", f"must be one of: {', '.join(self.models)}"
        if spec.refiner is not None and spec.refiner not in self.refiners:
            return "refiner", refiner_rule(self.refiners)
        if spec.safety_checker and not self.safety_checker:
            return "safety_checker", SAFETY_CHECKER_RULE
        return None


SAFETY_CHECKER_RULE = "no safety checker is configured on this server; send false"


def refiner_rule(refiners: tuple[str, ...]) -> str:
    return f"must be one of: {', '.join(refiners)}" if refiners else "no refiner is configured"

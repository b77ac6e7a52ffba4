"""The models a deployment serves, by the names clients pick them with, and the request topic of each.

The API checks a job against it before queueing (a 4xx naming the configured ones) and sends it to its
model's topic; the runner checks again before running (a job written straight to Kafka never went through
the API, and may sit on another model's topic).

Several models (EASEL_MODELS `name=folder-or-hub-id`, in order): the first keeps the one request topic of a
single-model deployment and also answers to "default"; each other one has a topic of its own
(`Topics.requests_for`), served by the runners that hold it (EASEL_MODEL_NAME picks a runner's model).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from contract.errors import SettingsError
from contract.job import JobSpec
from contract.loras import LoraFolder
from contract.settings import Settings
from contract.topics import MAX_TOPIC_NAME, TOPIC_NAME_PATTERN, Topics

DEFAULT_MODEL = "default"


@dataclass(frozen=True)
class ServedModel:
    name: str
    # A diffusers folder or hub id; empty: the tiny model built offline (EASEL_MODEL unset).
    source: str


def served_models(settings: Settings) -> tuple[ServedModel, ...]:
    """EASEL_MODELS in order, else the one EASEL_MODEL by EASEL_MODEL_NAME. Raises SettingsError on a bad list: a
    pair without `=`, a name Kafka cannot put in a topic name, "default" (it names the first), a name twice."""
    if not settings.models:
        return (ServedModel(settings.model_name or DEFAULT_MODEL, settings.model),)
    served: list[ServedModel] = []
    topics = Topics(settings.topic_prefix)
    for pair in settings.models:
        name, _, source = (part.strip() for part in pair.partition("="))
        if not name or not source:
            raise SettingsError(f"EASEL_MODELS: {pair!r} is not name=folder-or-hub-id")
        if name == DEFAULT_MODEL:
            raise SettingsError(f"EASEL_MODELS: {DEFAULT_MODEL!r} always names the first model; give it its own name")
        if not re.fullmatch(TOPIC_NAME_PATTERN, name) or len(topics.requests_for(name)) > MAX_TOPIC_NAME:
            raise SettingsError(
                f"EASEL_MODELS: model name {name!r} must be letters, digits, '.', '_' or '-' (it names a Kafka topic), "
                f"at most {MAX_TOPIC_NAME - len(topics.requests_for(''))} characters"
            )
        # Kafka refuses a topic whose name differs from another's only by '.' against '_' (their metrics collide).
        if clash := next((m.name for m in served if _kafka_metric_name(m.name) == _kafka_metric_name(name)), None):
            raise SettingsError(f"EASEL_MODELS: {name!r} and {clash!r} would name the same Kafka topic; rename one")
        served.append(ServedModel(name, source))
    return tuple(served)


def _kafka_metric_name(name: str) -> str:
    return name.replace(".", "_")


@dataclass(frozen=True)
class Catalog:
    # The names a job may give: the configured ones in order (the first is A1111's current checkpoint), "default".
    models: tuple[str, ...] = (DEFAULT_MODEL,)
    refiners: tuple[str, ...] = ()
    safety_checker: bool = False
    # The models after the first: each has a request topic of its own.
    routed: tuple[str, ...] = ()
    # Each model's folder or hub id, where one is configured (A1111 `/sd-models` `filename`).
    sources: Mapping[str, str] = field(default_factory=dict)
    # The LoRA adapters jobs may name (EASEL_LORA_DIR); None: not checked here.
    loras: LoraFolder | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Catalog:
        """Raises SettingsError on a bad EASEL_MODELS (served_models)."""
        served = served_models(settings)
        return cls(
            models=tuple(dict.fromkeys((*(m.name for m in served), DEFAULT_MODEL))),
            refiners=(settings.refiner_name or "refiner",) if settings.refiner else (),
            safety_checker=bool(settings.safety_checker),
            routed=tuple(m.name for m in served[1:]),
            sources={m.name: m.source for m in served if m.source},
            loras=LoraFolder.from_settings(settings),
        )

    @property
    def model_name(self) -> str:
        """The base (first) model's own name, as infotexts and A1111 report it."""
        return self.models[0]

    def own_name(self, name: str) -> str:
        """A model's own name: "default" is the first model's."""
        return self.model_name if name == DEFAULT_MODEL else name

    def source(self, name: str) -> str:
        """The model's folder or hub id; empty when none is configured (the tiny model) or it is not served."""
        return self.sources.get(self.own_name(name), "")

    def route(self, name: str) -> str | None:
        """What picks the model's request topic and runner group (`Topics.requests_for`): None for the first."""
        own = self.own_name(name)
        return own if own in self.routed else None

    def request_topic(self, topics: Topics, name: str) -> str:
        return topics.requests_for(self.route(name))

    def request_topics(self, topics: Topics) -> list[str]:
        """Every model's request topic, the first model's first."""
        return [topics.requests_for(route) for route in (None, *self.routed)]

    def runner_groups(self, topics: Topics) -> list[str]:
        """Every model's runner group, the first model's first."""
        return [topics.runner_group_for(route) for route in (None, *self.routed)]

    def serving(self, name: str) -> Catalog:
        """What a runner holding only model `name` runs: that model (and "default" if it is the first)."""
        own = self.own_name(name)
        names = (own, DEFAULT_MODEL) if own == self.model_name else (own,)
        return Catalog(
            models=tuple(dict.fromkeys(names)), refiners=self.refiners, safety_checker=self.safety_checker,
            routed=(own,) if own in self.routed else (), sources={own: self.source(own)} if self.source(own) else {},
            loras=self.loras,
        )

    def problem(self, spec: JobSpec) -> tuple[str, str] | None:
        """(field, rule) for the first thing `spec` asks for that is not configured, else None."""
        if spec.model not in self.models:
            return "model", f"must be one of: {', '.join(self.models)}"
        if spec.refiner is not None and spec.refiner not in self.refiners:
            return "refiner", refiner_rule(self.refiners)
        if spec.safety_checker and not self.safety_checker:
            return "safety_checker", SAFETY_CHECKER_RULE
        if spec.loras and self.loras is not None:
            return self.loras.problem(spec.loras)
        return None


def runner_model(settings: Settings) -> ServedModel:
    """The one model a runner loads: with EASEL_MODELS, the entry EASEL_MODEL_NAME names ("default": the first);
    else EASEL_MODEL. Raises SettingsError for a name not in the list."""
    served = served_models(settings)
    if settings.model_name in (DEFAULT_MODEL, ""):
        return served[0]
    if (chosen := next((m for m in served if m.name == settings.model_name), None)) is None:
        names = ", ".join(m.name for m in served)
        raise SettingsError(f"EASEL_MODEL_NAME={settings.model_name!r} is not one of EASEL_MODELS: {names}")
    return chosen


def runner_settings(settings: Settings) -> Settings:
    """`settings` with EASEL_MODEL / EASEL_MODEL_NAME those of the model this runner loads (runner_model)."""
    if not settings.models:
        return settings
    chosen = runner_model(settings)
    return settings.replace(model=chosen.source, model_name=chosen.name)


SAFETY_CHECKER_RULE = "no safety checker is configured on this server; send false"


def refiner_rule(refiners: tuple[str, ...]) -> str:
    return f"must be one of: {', '.join(refiners)}" if refiners else "no refiner is configured"

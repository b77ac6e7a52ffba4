"""LoRA adapters as jobs name them: A1111's `<lora:name:weight>` prompt tags, and the folder that holds them.

A1111 users choose LoRAs inside the prompt; every dialect's prompt (and a job written straight to Kafka) goes
through `with_prompt_loras`, JobSpec's before-validator, so the tags leave the prompt for `loras` whichever way
a job comes in. The text encoders never see a tag (A1111 removes them too, leaving the spaces around them).

`LoraFolder` is the one definition of which names exist: `<name>.safetensors` files in EASEL_LORA_DIR. The API
lists them (A1111 `/sdapi/v1/loras`) and refuses unknown names; the runner checks again before loading.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from pydantic import ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from contract.job import LORA_NAME_PATTERN, LoraSpec
from contract.settings import Settings

LORA_SUFFIX = ".safetensors"
# A1111's extra-network tag for LoRAs: `<lora:name>` or `<lora:name:weight>` (its `lora` network, by that name).
_TAG = re.compile(r"<lora:([^:>]*)(?::([^>]*))?>")
_NAME = re.compile(LORA_NAME_PATTERN)
TAG_SYNTAX = "<lora:name> or <lora:name:weight>"
# An unknown name's error lists at most this many of the installed ones.
LISTED_IN_ERRORS = 20


def with_prompt_loras(data: dict[str, Any]) -> dict[str, Any]:
    """`data` with the prompt's LoRA tags taken out and added to its `loras` (after any it names itself).

    A malformed tag (a weight that is no number, several weights, a bad name) is a ValidationError naming `prompt`.
    """
    prompt = data.get("prompt")
    if not isinstance(prompt, str) or "<lora:" not in prompt:
        return data
    tagged = [_spec_of(match, prompt) for match in _TAG.finditer(prompt)]
    if not tagged:
        return data
    explicit = data.get("loras", ())
    if not isinstance(explicit, list | tuple):
        return {**data, "prompt": _TAG.sub("", prompt)}  # `loras` itself is refused by its own validation
    return {**data, "prompt": _TAG.sub("", prompt), "loras": (*explicit, *tagged)}


def _spec_of(match: re.Match[str], prompt: str) -> LoraSpec:
    tag, name, weight = match.group(0), match.group(1), match.group(2)
    if weight is not None and ":" in weight:
        _refuse(tag, prompt, "takes one weight (separate text-encoder and UNet weights are not supported)")
    try:
        number = 1.0 if weight is None else float(weight)
    except ValueError:
        _refuse(tag, prompt, f"the weight must be a number ({TAG_SYNTAX})")
    try:
        return LoraSpec(name=name.strip(), weight=number)
    except ValidationError as exc:
        problem = exc.errors()[0]
        if problem["loc"] == ("name",):
            _refuse(tag, prompt, f"the name must be a LoRA file's name without {LORA_SUFFIX}: letters, digits, _ . -")
        _refuse(tag, prompt, f"weight: {problem['msg']}")


def _refuse(tag: str, prompt: str, rule: str) -> NoReturn:
    # A ValidationError raised in a validator keeps its location: the client is told the prompt is at fault.
    error = PydanticCustomError("lora_tag", "{tag}: {rule}", {"tag": tag, "rule": rule})
    raise ValidationError.from_exception_data("JobSpec", [InitErrorDetails(type=error, loc=("prompt",), input=prompt)])


@dataclass(frozen=True)
class LoraFolder:
    """The LoRA adapters a deployment offers: `<name>.safetensors` files in one folder (read on every call, so a
    file dropped in is offered at once)."""

    path: Path

    @classmethod
    def from_settings(cls, settings: Settings) -> LoraFolder:
        """EASEL_LORA_DIR, or `<home>/loras` when it is empty."""
        return cls(Path(settings.lora_dir) if settings.lora_dir else settings.home / "loras")

    def names(self) -> tuple[str, ...]:
        """Every adapter's name, sorted; files whose name is no valid LoRA name are not offered."""
        if not self.path.is_dir():
            return ()
        return tuple(sorted(
            entry.name.removesuffix(LORA_SUFFIX)
            for entry in self.path.iterdir()
            if entry.name.endswith(LORA_SUFFIX) and _NAME.match(entry.name.removesuffix(LORA_SUFFIX))
            and entry.is_file()
        ))

    def file_of(self, name: str) -> Path:
        return self.path / f"{name}{LORA_SUFFIX}"

    def unknown(self, names: Iterable[str]) -> list[str]:
        """The names among `names` that have no file here."""
        return [name for name in names if not self.file_of(name).is_file()]

    def problem(self, loras: Iterable[LoraSpec]) -> tuple[str, str] | None:
        """("loras", rule) when a job names a LoRA this folder does not hold, else None."""
        if not (missing := self.unknown(lora.name for lora in loras)):
            return None
        offered = self.names()
        more = f" and {len(offered) - LISTED_IN_ERRORS} more" if len(offered) > LISTED_IN_ERRORS else ""
        listed = ", ".join(offered[:LISTED_IN_ERRORS]) + more
        choice = f"available: {listed}" if offered else "no LoRAs are installed (EASEL_LORA_DIR)"
        return "loras", f"unknown LoRA {', '.join(repr(name) for name in missing)}; {choice}"

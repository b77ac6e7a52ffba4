"""LoRA adapters in the runner: loaded from the LoRA folder with diffusers' PEFT integration, kept loaded, and
switched per pipeline call.

Loading an adapter reads its file and injects its layers (seconds for a large SDXL LoRA); switching between loaded
ones only sets which layers are active and their scales. So adapters stay loaded across jobs, up to `capacity`;
past that the least recently used one is deleted. Between calls every adapter is off: a job without LoRAs runs
the plain model, whatever ran before it.

Everything here runs on the generator's thread (gpu_runner/pipeline.py), around one pipeline call: prompts are
encoded inside `applied` too, so a LoRA that has text-encoder weights shapes the prompt embeddings.
"""

from __future__ import annotations

import contextlib
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any

import structlog

from contract.errors import InvalidField, UnknownName
from contract.job import MAX_LORAS, LoraSpec
from contract.loras import LoraFolder
from contract.settings import Settings

log = structlog.get_logger(__name__)

# Adapters kept loaded; a small SDXL LoRA is tens of MB on the GPU, a large one a few hundred.
DEFAULT_CAPACITY = 16


class LoraLibrary:
    """The adapters loaded into one pipeline, most recently used last."""

    def __init__(self, folder: LoraFolder, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < MAX_LORAS:
            raise ValueError(f"capacity {capacity} is below the {MAX_LORAS} LoRAs one job may name")
        self.folder = folder
        self.capacity = capacity
        self._loaded: OrderedDict[str, int] = OrderedDict()  # name → the file's mtime when it was loaded

    @classmethod
    def from_settings(cls, settings: Settings) -> LoraLibrary:
        return cls(LoraFolder.from_settings(settings))

    @property
    def loaded(self) -> tuple[str, ...]:
        """The loaded adapters' names, least recently used first."""
        return tuple(self._loaded)

    @contextlib.contextmanager
    def applied(self, pipe: Any, loras: Sequence[LoraSpec]) -> Iterator[None]:
        """Within the block, `pipe` runs with exactly `loras` at their weights (none: the plain model).

        UnknownName naming `loras` when one has no file; InvalidField when a file does not load into this model.
        """
        if loras:
            self._load(pipe, [lora.name for lora in loras])
            pipe.enable_lora()
            pipe.set_adapters([lora.name for lora in loras], adapter_weights=[lora.weight for lora in loras])
        try:
            yield
        finally:
            if self._loaded:
                pipe.disable_lora()

    def _load(self, pipe: Any, names: list[str]) -> None:
        if problem := self.folder.problem(LoraSpec(name=name) for name in names):
            raise UnknownName(problem[1], problem[0])
        for name in names:
            mtime = self.folder.file_of(name).stat().st_mtime_ns
            if self._loaded.get(name) == mtime:
                self._loaded.move_to_end(name)
                continue
            if name in self._loaded:  # the file changed since it was loaded
                self._unload(pipe, name)
            while len(self._loaded) >= self.capacity:
                self._unload(pipe, next(lru for lru in self._loaded if lru not in names))
            self._load_one(pipe, name)
            self._loaded[name] = mtime

    def _load_one(self, pipe: Any, name: str) -> None:
        log.info("loading LoRA", lora=name)
        try:
            with warnings.catch_warnings():
                # peft says so on every adapter after the first: several adapters in one model is what we mean.
                warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
                pipe.load_lora_weights(str(self.folder.path), weight_name=self.folder.file_of(name).name,
                                       adapter_name=name)
        except Exception as exc:
            # What it injected before failing goes too, or a later load of the name would clash with it.
            with contextlib.suppress(Exception):
                pipe.delete_adapters(name)
            raise InvalidField(f"LoRA {name!r} does not load into this model", "loras") from exc

    def _unload(self, pipe: Any, name: str) -> None:
        log.info("unloading LoRA", lora=name)
        pipe.delete_adapters(name)
        del self._loaded[name]

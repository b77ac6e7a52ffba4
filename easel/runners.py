"""`easel runners --gpus all|0,1|cpu:N [--models a,b]`: one `easel runner` per device (per model), kept running.

Each runner is its own process with EASEL_DEVICE=cuda:N (or cpu) and its own EASEL_RUNNER_ID, the base id with a
per-device suffix: fixed ids are static group members, so a restarted runner takes its partitions back at once.
With EASEL_MODELS, each device gets a runner of every model (or of those `--models` names: a host whose GPUs hold
one model at a time serves that one), EASEL_MODEL_NAME picking its model and the model's name in its id.
A runner that exits is restarted with a backoff (easel/supervisor.py); SIGTERM or Ctrl-C stops them all.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable

import structlog

from contract.catalog import served_models
from contract.errors import SettingsError
from contract.settings import Settings
from easel.lifecycle import StopRequest
from easel.supervisor import STOP_TIMEOUT_S, Child, Supervisor

log = structlog.get_logger(__name__)

CPU_PREFIX = "cpu:"


def parse_devices(spec: str, count_gpus: Callable[[], int]) -> list[str]:
    """The devices `--gpus` names: `all`, GPU indexes `0,1`, or `cpu:N` (N CPU runners, for tests and trials)."""
    if spec.startswith(CPU_PREFIX):
        count = spec.removeprefix(CPU_PREFIX)
        if not count.isdigit() or int(count) < 1:
            raise SettingsError(f"--gpus {spec}: expected cpu:N with N ≥ 1")
        return ["cpu"] * int(count)
    gpu_count = count_gpus()
    if gpu_count == 0:
        raise SettingsError(f"--gpus {spec}: no CUDA GPU is visible here (torch.cuda.device_count() is 0)")
    if spec == "all":
        return [f"cuda:{index}" for index in range(gpu_count)]
    parts = [part.strip() for part in spec.split(",")]
    if not all(part.isdigit() for part in parts) or len(set(parts)) != len(parts):
        raise SettingsError(f"--gpus {spec}: expected all, distinct GPU indexes such as 0,1, or cpu:N")
    if missing := [part for part in parts if int(part) >= gpu_count]:
        raise SettingsError(f"--gpus {spec}: no GPU {', '.join(missing)} here (GPUs 0 to {gpu_count - 1})")
    return [f"cuda:{part}" for part in parts]


def parse_models(settings: Settings, spec: str) -> list[str]:
    """The models `--models` names (empty: every one of EASEL_MODELS); [] without EASEL_MODELS (one model)."""
    if not settings.models:
        if spec:
            raise SettingsError(f"--models {spec}: EASEL_MODELS is not set; this deployment has one model")
        return []
    configured = [model.name for model in served_models(settings)]
    if not spec:
        return configured
    chosen = list(dict.fromkeys(part.strip() for part in spec.split(",") if part.strip()))
    if unknown := [name for name in chosen if name not in configured]:
        raise SettingsError(f"--models {spec}: {', '.join(unknown)} not in EASEL_MODELS ({', '.join(configured)})")
    return chosen


def runner_children(settings: Settings, devices: list[str], models: list[str] | None = None) -> list[Child]:
    """A runner per device, or per device and model (`models`, from parse_models)."""
    base_id = settings.runner_id or socket.gethostname()
    children = []
    for index, device in enumerate(devices):
        suffix = device.replace(":", "") if device.startswith("cuda") else f"cpu{index}"
        for model in [*models] if models else [None]:
            runner_id = f"{base_id}-{suffix}" if model is None else f"{base_id}-{model}-{suffix}"
            env = {**os.environ, "EASEL_DEVICE": device, "EASEL_RUNNER_ID": runner_id}
            if model is not None:
                env["EASEL_MODEL_NAME"] = model
            children.append(Child(runner_id, [sys.executable, "-m", "easel.cli", "runner"], env))
    return children


class RunnerSupervisor(Supervisor):
    def stop(self) -> None:
        """All runners at once: each may first finish its running job, and one at a time adds those waits up."""
        live = [child for child in self.children if child.process is not None and child.process.poll() is None]
        log.info("stopping", processes=[child.name for child in live])
        for child in live:
            assert child.process is not None
            child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for child in live:
            assert child.process is not None
            try:
                child.process.wait(max(deadline - time.monotonic(), 0.0))
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
                log.warning("runner did not stop in time; it was killed", process=child.name, timeout_s=STOP_TIMEOUT_S)


def run_runners(settings: Settings, gpus: str, models: str = "") -> int:
    stop = StopRequest()
    stop.listen()  # before anything starts: a SIGTERM from here on stops what was started
    try:
        chosen = parse_models(settings, models)
        devices = parse_devices(gpus, _gpu_count)
    except SettingsError as exc:
        print(f"easel runners: {exc}", file=sys.stderr)
        return 2
    children = runner_children(settings, devices, chosen)
    log.info("starting runners", runners={child.name: child.env["EASEL_DEVICE"] for child in children})
    RunnerSupervisor(children).run(stop)
    return 0


def _gpu_count() -> int:
    import torch  # only when GPUs are asked for: a second or two to import

    return torch.cuda.device_count()

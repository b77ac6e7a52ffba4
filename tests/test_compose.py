"""compose.yaml agrees with the code: real settings, real subcommands, a GPU for the runner, shared blobs.

Parsing only; no Docker engine is needed.
"""

from __future__ import annotations

import shlex
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import yaml

from contract.settings import PREFIX, Settings
from easel.cli import main

COMPOSE = Path(__file__).resolve().parent.parent / "compose.yaml"
REQUIRED_SERVICES = {"kafka", "topics", "api", "runner"}


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    document = yaml.safe_load(COMPOSE.read_text())  # resolves the x-easel anchor and `<<` merges
    return document["services"]


@pytest.fixture(scope="module")
def declared_volumes() -> set[str]:
    return set(yaml.safe_load(COMPOSE.read_text()).get("volumes") or {})


def environment(service: dict[str, Any]) -> dict[str, str]:
    """Compose allows a mapping or a list of KEY=VALUE strings."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def easel_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The services built from our Dockerfile."""
    return {name: service for name, service in services.items() if "build" in service}


def is_subcommand(command: str, capsys: pytest.CaptureFixture[str]) -> bool:
    # `--help` makes argparse exit 0 for a known subcommand before anything runs; an unknown one exits 2.
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    capsys.readouterr()
    return exit_info.value.code == 0


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> volume source, for short ("src:dst[:mode]") and long syntax."""
    result: dict[str, str] = {}
    for volume in service.get("volumes") or []:
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = volume.get("source", ""), volume["target"]
        result[target] = source
    return result


def test_required_services_exist(services: dict[str, dict[str, Any]]) -> None:
    assert REQUIRED_SERVICES <= services.keys()
    assert {"topics", "api", "runner"} <= easel_services(services).keys()


def test_kafka_is_the_official_apache_image(services: dict[str, dict[str, Any]]) -> None:
    assert str(services["kafka"].get("image", "")).startswith("apache/kafka:")


def test_every_easel_variable_is_a_settings_field(services: dict[str, dict[str, Any]]) -> None:
    known = {PREFIX + f.name.upper() for f in fields(Settings) if f.name != "secret_fields"}
    seen: set[str] = set()
    for name, service in services.items():
        variables = {key for key in environment(service) if key.startswith(PREFIX)}
        assert variables <= known, f"{name}: unknown {sorted(variables - known)}"
        seen |= variables
    assert seen, "no EASEL_ variables found: the anchor did not resolve"


def test_commands_are_cli_subcommands(
    services: dict[str, dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    assert not is_subcommand("no-such-command", capsys)
    for name, service in easel_services(services).items():
        command = service.get("command")
        assert command, f"{name} has no command"
        argv = shlex.split(command) if isinstance(command, str) else [str(part) for part in command]
        assert is_subcommand(argv[0], capsys), f"{name}: `easel {argv[0]}` is not a subcommand"
    assert services["api"]["command"] in ("api", ["api"])
    assert services["runner"]["command"] in ("runner", ["runner"])


def test_runner_reserves_a_gpu(services: dict[str, dict[str, Any]]) -> None:
    devices = services["runner"].get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
    assert any(
        device.get("driver") == "nvidia"
        and "gpu" in device.get("capabilities", [])
        and device.get("count") in (1, "all")
        for device in devices
    ), devices


def test_easel_services_wait_for_a_healthy_kafka(services: dict[str, dict[str, Any]]) -> None:
    assert "healthcheck" in services["kafka"]
    for name, service in easel_services(services).items():
        depends_on = service.get("depends_on") or {}
        assert isinstance(depends_on, dict), f"{name}: depends_on needs the long form to wait for health"
        assert depends_on.get("kafka", {}).get("condition") == "service_healthy", name


def test_api_and_runner_share_the_blob_volume(
    services: dict[str, dict[str, Any]], declared_volumes: set[str]
) -> None:
    blob_dirs = {name: environment(services[name]).get(PREFIX + "BLOB_DIR") for name in ("api", "runner")}
    assert blob_dirs["api"] and blob_dirs["api"] == blob_dirs["runner"], blob_dirs
    blob_dir = blob_dirs["api"]
    sources = {name: mounts(services[name]).get(blob_dir) for name in ("api", "runner")}
    assert sources["api"] and sources["api"] == sources["runner"], f"{blob_dir} mounted as {sources}"
    assert sources["api"] in declared_volumes, f"{sources['api']} is not a named volume"

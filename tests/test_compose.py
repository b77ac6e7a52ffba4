"""compose.yaml and the Dockerfile agree with the code: every process `easel dev` runs, real settings, real
subcommands, required secrets, a GPU for the runner, shared blobs, an image built from the package.

Parsing only; no Docker engine is needed.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from dataclasses import fields
from typing import Any

import pathspec
import pytest
import yaml

from contract.settings import PREFIX, SECRET_FIELDS, Settings
from easel.cli import main
from easel.dev import PROCESSES
from tests.processes import REPO

COMPOSE = REPO / "compose.yaml"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
# `easel dev`'s processes, the broker it starts when none is configured, and the one-shot topics job.
REQUIRED_SERVICES = {"kafka", "topics", *PROCESSES}
SECRETS = {PREFIX + name.upper() for name in SECRET_FIELDS}
# Where the apache/kafka image reads a mounted server.properties (its "file input").
BROKER_CONFIG = "/mnt/shared/config/server.properties"
SASL = ("SASL_PLAINTEXT", "SASL_SSL")


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())  # resolves the anchors and `<<` merges
    services: dict[str, dict[str, Any]] = document["services"]
    return services


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


def command(service: dict[str, Any]) -> list[str]:
    raw = service.get("command") or []
    return shlex.split(raw) if isinstance(raw, str) else [str(part) for part in raw]


def with_defaults(value: str) -> str:
    """`value` as compose interpolates it when no variable is set: `${VAR:-default}` becomes `default`."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)


def gpu_ids(service: dict[str, Any]) -> list[str]:
    """The NVIDIA device ids a service reserves (with no variable set)."""
    devices = service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
    return [
        with_defaults(str(device_id))
        for device in devices
        if device.get("driver") == "nvidia" and "gpu" in device.get("capabilities", [])
        for device_id in device.get("device_ids", [])
    ]


def required_variable(value: str) -> str | None:
    """The variable a `${VAR:?message}` value requires, else None."""
    match = re.fullmatch(r"\$\{(\w+):\?[^}]+\}", value)
    return match[1] if match else None


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = (line.strip() for line in joined.splitlines())
    return [
        (keyword.upper(), rest.strip())
        for keyword, _, rest in (line.partition(" ") for line in lines if line and not line.startswith("#"))
    ]


def test_required_services_exist(services: dict[str, dict[str, Any]]) -> None:
    assert services.keys() >= REQUIRED_SERVICES
    assert REQUIRED_SERVICES - {"kafka"} <= easel_services(services).keys()


def test_every_process_easel_dev_runs_is_a_service(services: dict[str, dict[str, Any]]) -> None:
    commands = {command(service)[0] for service in easel_services(services).values() if command(service)}
    assert set(PROCESSES) <= commands, f"`easel dev` runs {sorted(set(PROCESSES) - commands)} but compose does not"


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


def test_each_runner_is_pinned_to_its_own_gpu(services: dict[str, dict[str, Any]]) -> None:
    """One runner per GPU: `runner` takes GPU 0, the gpus-N profiles add runners on GPUs 1..N-1, each by device id
    (replicas of one service asking for `count: 1` would all be handed the same GPU)."""
    runners = {
        name: service for name, service in services.items()
        if command(service) == ["runner"] and "models-2" not in service.get("profiles", ())
    }
    assert gpu_ids(runners["runner"]) == ["0"]
    assert "profiles" not in runners["runner"], "the first runner starts without a profile"
    extra = {name: gpu_ids(service) for name, service in runners.items() if name != "runner"}
    assert sorted(extra.values()) == [["1"], ["2"], ["3"]], extra
    for name in extra:
        assert environment(runners[name]) == environment(runners["runner"]), f"{name} is configured unlike runner"
        assert set(runners[name]["profiles"]) <= {"gpus-2", "gpus-4"}, name
    gpus_2 = [name for name in extra if "gpus-2" in runners[name]["profiles"]]
    assert [extra[name] for name in gpus_2] == [["1"]], gpus_2


def test_a_second_model_has_a_runner_of_its_own(services: dict[str, dict[str, Any]]) -> None:
    """`--profile models-2`: a runner loading the EASEL_MODELS entry EASEL_SECOND_MODEL names, and every service
    sees the same EASEL_MODELS list (the API routes by it, runners pick their topic by it)."""
    second = services["runner-model2"]
    assert command(second) == ["runner"] and second["profiles"] == ["models-2"]
    assert environment(second)["EASEL_MODEL_NAME"] == "${EASEL_SECOND_MODEL:-default}"
    assert environment(services["runner"])["EASEL_MODEL_NAME"] == "${EASEL_RUNNER_MODEL:-default}"
    for name in ("api", "runner", "runner-model2", "webhooks", "topics"):
        assert environment(services[name])["EASEL_MODELS"] == "${EASEL_MODELS:-}", name


def test_the_s3_option_runs_the_s3proxy_the_tests_use(services: dict[str, dict[str, Any]]) -> None:
    s3 = services["s3"]
    assert s3.get("profiles") == ["s3"], "S3 is opt-in"
    pinned = re.search(r"<artifactId>s3proxy</artifactId>\s*<version>([^<]+)</version>",
                       (REPO / "s3proxy" / "pom.xml").read_text())
    assert pinned and s3["image"] == f"andrewgaul/s3proxy:s3proxy-{pinned[1]}"
    env = environment(s3)
    assert env["JCLOUDS_PROVIDER"] == "filesystem-nio2" and mounts(s3)[env["JCLOUDS_FILESYSTEM_BASEDIR"]] == "s3-data"
    easel_env = environment(services["api"])
    for variable in ("EASEL_BLOB_URL", "EASEL_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert variable in easel_env, f"the API cannot be pointed at S3 without {variable}"
    # The store's identity is the one the Easel processes sign with.
    assert env["S3PROXY_IDENTITY"] == easel_env["AWS_ACCESS_KEY_ID"]
    assert env["S3PROXY_CREDENTIAL"] == easel_env["AWS_SECRET_ACCESS_KEY"]


def test_easel_services_wait_for_a_healthy_kafka(services: dict[str, dict[str, Any]]) -> None:
    assert "healthcheck" in services["kafka"]
    for name, service in easel_services(services).items():
        depends_on = service.get("depends_on") or {}
        assert isinstance(depends_on, dict), f"{name}: depends_on needs the long form to wait for health"
        assert depends_on.get("kafka", {}).get("condition") == "service_healthy", name


def test_api_and_runner_share_the_blob_volume(
    services: dict[str, dict[str, Any]], declared_volumes: set[str]
) -> None:
    blob_dirs = {name: with_defaults(environment(services[name])[PREFIX + "BLOB_URL"]) for name in ("api", "runner")}
    assert blob_dirs["api"] and blob_dirs["api"] == blob_dirs["runner"], blob_dirs
    blob_dir = blob_dirs["api"]
    sources = {name: mounts(services[name]).get(blob_dir) for name in ("api", "runner")}
    assert sources["api"] and sources["api"] == sources["runner"], f"{blob_dir} mounted as {sources}"
    assert sources["api"] in declared_volumes, f"{sources['api']} is not a named volume"


def test_required_secrets_are_required(services: dict[str, dict[str, Any]]) -> None:
    """Compose refuses to start without the API keys and the webhook secret, rather than run with none."""
    required = {"api": {PREFIX + "API_KEYS"}, "webhooks": {PREFIX + "WEBHOOK_SECRET"}}
    for name, variables in required.items():
        env = environment(services[name])
        for variable in variables:
            assert required_variable(env.get(variable, "")) == variable, f"{name}: {variable}={env.get(variable)!r}"


def test_no_secret_has_a_value_in_compose(services: dict[str, dict[str, Any]]) -> None:
    """A secret comes from the deployer's environment: required, or (optional ones) empty by default."""
    for name, service in services.items():
        for variable, value in environment(service).items():
            if variable in SECRETS:
                assert required_variable(value) or value == f"${{{variable}:-}}", f"{name}: {variable}"


def broker_properties(kafka: dict[str, Any]) -> dict[str, str]:
    """The broker's configuration as the image builds it: the mounted file, then KAFKA_* variables appended."""
    source = mounts(kafka)[BROKER_CONFIG]
    properties: dict[str, str] = {}
    for line in (REPO / source).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            properties[key.strip()] = value.strip()
    for variable, value in environment(kafka).items():
        if variable.startswith("KAFKA_"):  # the image's rule: _ is ., ___ is -, __ is _
            key = variable.removeprefix("KAFKA_").lower().replace("_", ".").replace("...", "-").replace("..", "_")
            properties[key] = value
    return properties


def test_the_broker_takes_no_client_without_a_password(services: dict[str, dict[str, Any]]) -> None:
    kafka = services["kafka"]
    properties = broker_properties(kafka)
    protocols = dict(entry.split(":") for entry in properties["listener.security.protocol.map"].split(","))
    listeners = {  # name -> port, from NAME://host:port entries
        name: int(address.rsplit(":", 1)[1])
        for name, _, address in (entry.partition("://") for entry in properties["listeners"].split(","))
    }
    assert all(protocols[name] in SASL for name in listeners), protocols
    controllers = set(properties["controller.listener.names"].split(","))
    for name in listeners.keys() - controllers:  # client listeners: SCRAM only, never PLAIN's cleartext password
        assert properties[f"listener.name.{name.lower()}.sasl.enabled.mechanisms"] == "SCRAM-SHA-512", name
    published = {int(str(port).split(":")[-1]) for port in kafka.get("ports", [])}
    assert published and published <= set(listeners.values()) - {listeners[name] for name in controllers}
    assert properties["authorizer.class.name"].endswith("StandardAuthorizer")
    assert properties["allow.everyone.if.no.acl.found"] == "false"
    assert properties["super.users"] == "User:admin"


def test_every_easel_process_is_its_own_kafka_user(services: dict[str, dict[str, Any]]) -> None:
    """Each process authenticates with its own user and required password, created when the storage is formatted
    (under the same variable) and given ACLs by kafka/acls.sh; only `easel topics` is admin."""
    created = environment(services["kafka-format"])
    acls = (REPO / "kafka" / "acls.sh").read_text()
    users: dict[str, str] = {}
    for name, service in easel_services(services).items():
        env = environment(service)
        assert env.get(PREFIX + "KAFKA_SECURITY_PROTOCOL") in SASL, name
        user, password = env.get(PREFIX + "KAFKA_USERNAME", ""), env.get(PREFIX + "KAFKA_PASSWORD", "")
        assert user and required_variable(password), f"{name}: user {user!r}, password {password!r}"
        assert required_variable(created.get(f"{user.upper()}_PASSWORD", "")) == required_variable(password), name
        users[name] = user
    assert users["topics"] == "admin"
    process_users = [users[name] for name in PROCESSES]
    assert len(set(process_users)) == len(process_users) and "admin" not in process_users, users
    for user in process_users:
        assert f"User:{user}" in acls, f"kafka/acls.sh gives {user} nothing"


def test_users_exist_before_the_broker_and_acls_before_easel(services: dict[str, dict[str, Any]]) -> None:
    kafka, formatting, acls = services["kafka"], services["kafka-format"], services["kafka-acls"]
    assert kafka["depends_on"]["kafka-format"]["condition"] == "service_completed_successfully"
    assert mounts(formatting)[BROKER_CONFIG] == mounts(kafka)[BROKER_CONFIG]
    assert environment(formatting)["CLUSTER_ID"] == environment(kafka)["CLUSTER_ID"]  # else the broker refuses it
    assert "--add-scram" in " ".join(command(formatting))
    assert acls["depends_on"]["kafka"]["condition"] == "service_healthy"
    script = command(acls)[-1]
    assert mounts(acls)[script] == "./kafka/acls.sh", "compose must apply the ACLs the tests prove"
    for name in PROCESSES:
        assert services[name]["depends_on"]["kafka-acls"]["condition"] == "service_completed_successfully", name


def test_api_and_dispatcher_sign_image_links_alike(services: dict[str, dict[str, Any]]) -> None:
    """Webhook bodies carry signed image links (dialects/links.py): the dispatcher needs the API's inputs."""
    inputs = [PREFIX + name for name in ("PUBLIC_URL", "API_KEYS", "URL_SECRET")]
    api, dispatcher = environment(services["api"]), environment(services["webhooks"])
    assert {v: api.get(v) for v in inputs} == {v: dispatcher.get(v) for v in inputs}


def test_http_processes_have_a_health_check(services: dict[str, dict[str, Any]]) -> None:
    api = services["api"]
    port = environment(api)[PREFIX + "PORT"]
    check = " ".join(str(part) for part in api.get("healthcheck", {}).get("test", []))
    assert f"127.0.0.1:{port}/health" in check, check


def test_dockerfile_installs_the_package_without_listing_folders() -> None:
    """A per-folder COPY list drifts (it once missed dialects/); the image installs a wheel of the checkout."""
    instructions = dockerfile_instructions()
    packages = {path.parent.name for path in REPO.glob("*/__init__.py")}
    copies = [shlex.split(args) for keyword, args in instructions if keyword == "COPY"]
    for copy in copies:
        sources = [part.rstrip("/") for part in copy[:-1] if not part.startswith("--")]
        assert not set(sources) & packages, f"COPY names package folders: {copy}"
    assert [".", "."] in copies, "the wheel is built from the whole context"
    runs = " ".join(args for keyword, args in instructions if keyword == "RUN")
    assert "pip wheel" in runs and "--no-deps" in runs
    users = [args for keyword, args in instructions if keyword == "USER"]
    assert users and users[-1] not in ("root", "0"), "the image runs as a non-root user"


def test_dockerignore_keeps_local_state_out_and_every_shipped_file_in() -> None:
    spec = pathspec.GitIgnoreSpec.from_lines(DOCKERIGNORE.read_text().splitlines())
    for local in (".venv/bin/python", ".easel/dev-key", ".git/HEAD"):
        assert spec.match_file(local), f"{local} would be sent to the Docker daemon"
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.split()
    packages = {path.parent.name for path in REPO.glob("*/__init__.py")} - {"tests", "bench"}
    shipped = [path for path in listed if path.split("/")[0] in packages or path in ("pyproject.toml", "README.md")]
    assert shipped and not [path for path in shipped if spec.match_file(path)]

"""Configuration: environment variables prefixed `EASEL_`, read once into one frozen object.

Every process builds `Settings.from_env()` at start and passes it down; nothing reads the
environment anywhere else. The README's configuration table mirrors the fields below.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from contract.deliveries import DEFAULT_WEBHOOK_BODY_BYTES
from contract.errors import SettingsError
from contract.job import DEFAULT_MAX_JOB_WORK, MAX_ECHO_BYTES

PREFIX = "EASEL_"
LOCAL_BOOTSTRAP = "127.0.0.1:19092"
# Shown as *** in repr, so settings can be logged.
SECRET_FIELDS = (
    "api_keys", "dev_key", "a1111_auth", "url_secret", "webhook_secret", "webhook_key_secrets", "job_signing_secret",
    "kafka_password",
)


@dataclass(frozen=True)
class Settings:
    # Kafka. An empty bootstrap means "start the local broker" (make run / make test).
    kafka_bootstrap: str = ""
    topic_prefix: str = "easel"
    request_partitions: int = 4
    replication_factor: int = 1
    # Longest a consumer's fetch waits at the broker for new data; bounds the latency tail we measured.
    fetch_max_wait_ms: int = 100
    # Kafka authentication: PLAINTEXT (the local broker), SASL_PLAINTEXT or SASL_SSL. With SASL, this process's
    # user and password (compose gives each process its own) and the mechanism; with SASL_SSL, an optional PEM
    # CA bundle that signed the broker's certificate (empty: the system's CAs).
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str = "SCRAM-SHA-512"
    kafka_username: str = ""
    kafka_password: str = ""
    kafka_ca_file: str = ""
    # Where the local broker, the tiny model and the blobs live.
    home: Path = Path(".easel")
    # Where images live: a local folder (a path; by default <home>/blobs) or `s3://bucket/prefix` on any
    # S3-compatible store. S3 credentials and region come from the standard AWS_* variables.
    blob_url: str = ""
    # An S3-compatible endpoint other than AWS (S3Proxy, MinIO, R2, ...); empty: AWS itself.
    s3_endpoint_url: str = ""
    # 1: image links point straight at the S3 store (presigned GET URLs) instead of through the API.
    s3_presigned_urls: int = 0
    # HTTP API.
    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str = ""
    api_keys: tuple[str, ...] = ()
    dev_key: str = ""
    # A1111 `--api-auth` style `user:key` pairs for HTTP Basic on /sdapi/v1/* (the key is an Easel API key);
    # without them, Basic is accepted with any user name and an Easel key as the password.
    a1111_auth: tuple[str, ...] = ()
    # Origins browser pages may call the API from (CORS); "*" by default: keys travel in headers, never cookies.
    cors_origins: tuple[str, ...] = ("*",)
    submit_timeout_s: float = 5.0
    # A submit Kafka did not confirm in time goes on in the background this long; then its job ends FAILED.
    submit_settle_s: float = 60.0
    # /health/ready answers 503 when a Kafka-backed view has not been caught up with Kafka for this long.
    health_max_lag_s: float = 15.0
    max_wait_s: float = 60.0
    # Signs public image URLs (ModelsLab `output`, RunPod `image_url`); shared by every API instance.
    url_secret: str = ""
    sync_wait_s: float = 90.0
    # A finished job (status, images, state record) lives this long after it finished; then it is purged, 404.
    retention_s: float = 7 * 24 * 3600.0
    # Most jobs one key may have waiting in the queue (0: no limit); more answer 429.
    max_queued_per_key: int = 100
    # Most bytes (JSON) of a request a dialect echoes back (RunPod `input`); larger answer 413. At most 64 KiB.
    max_echo_bytes: int = MAX_ECHO_BYTES
    # Most work one job may ask for, width × height × images × steps (0: no limit); more answer 422.
    max_job_work: int = DEFAULT_MAX_JOB_WORK
    # Most live streams (WebSocket + SSE) one key may hold open on one API instance; more answer 429 / close 1013.
    max_streams_per_key: int = 32
    # Input images (img2img, inpainting): the largest file a client may send (base64 or URL), and the most pixels
    # it may decode to (larger ones are refused before decoding: decompression bombs).
    max_input_image_bytes: int = 10 * 1024 * 1024
    max_input_image_pixels: int = 4096 * 4096
    # Several models: `name=folder-or-hub-id` pairs. Each model's jobs go to its own request topic, served by the
    # runners that hold it (EASEL_MODEL_NAME picks which one a runner loads); the first is also "default".
    # Empty: the one model EASEL_MODEL (below).
    models: tuple[str, ...] = ()
    # Runner.
    model: str = ""
    # The name clients pick the base model by (A1111 `sd_model_checkpoint`, native `model`); "default" works too.
    model_name: str = "default"
    # Optional SDXL refiner (folder or hub id) and its name (A1111 `refiner_checkpoint`, native `refiner`).
    refiner: str = ""
    refiner_name: str = "refiner"
    # LoRA adapters: a folder of `<name>.safetensors` files that jobs name (empty: <home>/loras).
    lora_dir: str = ""
    # Previews decoded by a tiny VAE (TAESD for SDXL, folder or hub id) instead of the linear latent-to-RGB map.
    preview_vae: str = ""
    # Optional safety checker: a folder with a saved StableDiffusionSafetyChecker and its feature extractor.
    safety_checker: str = ""
    runner_id: str = ""
    device: str = "auto"
    # auto | fp16 | bf16 | fp32 (CPU: fp32 only); auto on a GPU: fp16 with an fp16-safe VAE, else bf16.
    dtype: str = "auto"
    # A VAE (folder or hub id) replacing the model's, e.g. madebyollin/sdxl-vae-fp16-fix for fp16 on a GPU.
    vae: str = ""
    # 1: torch.compile the UNet (slow start: the warm-up compiles the expected sizes).
    compile: int = 0
    job_timeout_s: float = 600.0
    # Dynamic batching: compatible waiting jobs (same model, size, steps, sampler, guidance...) run as one
    # pipeline call of at most this many images (1: off). The window waits this long for more to arrive;
    # 0 batches only what is already waiting.
    batch_max_images: int = 4
    batch_window_s: float = 0.0
    # A running job's full status is written at most once per this many seconds (progress events go out every
    # step); state changes (started, finished) are written at once.
    status_interval_s: float = 0.25
    # Previews: every N steps for jobs with `preview`; 0 = about ten per job.
    preview_every: int = 0
    # A job that started this many times without ending (each start crashed or lost its runner) ends FAILED.
    max_job_attempts: int = 3
    # Key ids that jobs written straight to Kafka (not signed by the API) may name as owner; empty: any owner.
    kafka_direct_owners: tuple[str, ...] = ()
    # Shared by the API and the runners: the API signs the requests it writes, so runners tell them from direct ones.
    job_signing_secret: str = ""
    # TEST ONLY: 1 makes a runner exit hard after writing a job's terminal status, before committing it.
    fault_after_terminal_status: int = 0
    # Live streams (WebSocket / SSE): the per-instance history rebuilt from the events topic, and per-connection limits.
    stream_replay_s: float = 3600.0
    stream_history_jobs: int = 5000
    stream_history_events: int = 1000
    stream_queue: int = 64
    stream_keepalive_s: float = 15.0
    ws_ping_interval_s: float = 20.0
    ws_ping_timeout_s: float = 20.0
    # Webhooks. Secrets are Standard Webhooks `whsec_...` keys: one global, and per API key id as
    # `KEYID=whsec_...`. The schedule is the delay before each attempt, in seconds (Svix's by default).
    webhook_secret: str = ""
    webhook_key_secrets: tuple[str, ...] = ()
    webhook_retry_schedule_s: tuple[str, ...] = ("0", "5", "300", "1800", "7200", "18000", "36000", "36000")
    # CIDRs that webhooks may reach although the SSRF rules refuse them (e.g. 127.0.0.0/8 for local dev).
    webhook_allow_networks: tuple[str, ...] = ()
    webhook_timeout_s: float = 15.0
    webhook_concurrency: int = 256
    webhook_host_concurrency: int = 16
    webhook_progress_interval_s: float = 0.5
    webhook_partitions: int = 4
    webhook_dispatcher_id: str = ""
    webhook_metrics_port: int = 0
    # Largest webhook body (JSON bytes; at most 448 KiB): larger ones have their echoed input (RunPod `input`), then
    # their largest fields, replaced by {"truncated": true, "bytes": N}.
    webhook_max_body_bytes: int = DEFAULT_WEBHOOK_BODY_BYTES
    # Logging.
    log_format: str = "console"
    log_level: str = "info"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = env.get(PREFIX + f.name.upper())
            if raw is None or raw == "":
                continue
            values[f.name] = _parse(f.name, str(f.type), raw)
        return cls(**values)  # type: ignore[arg-type]

    def replace(self, **changes: object) -> Settings:
        current = {f.name: getattr(self, f.name) for f in fields(self)}
        current.update(changes)
        return Settings(**current)

    @property
    def all_keys(self) -> tuple[str, ...]:
        return (*self.api_keys, self.dev_key) if self.dev_key else self.api_keys

    @property
    def blob_location(self) -> str:
        """`blob_url`, or the local folder under `home` when it is empty."""
        return self.blob_url or str(self.home / "blobs")

    @property
    def bootstrap(self) -> str:
        return self.kafka_bootstrap or LOCAL_BOOTSTRAP

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    def __repr__(self) -> str:
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in SECRET_FIELDS and value:
                value = "***"
            shown.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(shown)})"


def _parse(name: str, type_name: str, raw: str) -> object:
    env_name = PREFIX + name.upper()
    try:
        if type_name == "int":
            return int(raw)
        if type_name == "float":
            return float(raw)
        if type_name == "Path":
            return Path(raw)
        if type_name.startswith("tuple"):
            return tuple(part.strip() for part in raw.split(",") if part.strip())
    except ValueError as exc:
        raise SettingsError(f"{env_name}={raw!r} is not a valid {type_name}") from exc
    return raw

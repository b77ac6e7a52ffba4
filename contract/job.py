"""The canonical job. Every dialect maps to it; nothing downstream knows dialects exist.

`JobSpec` is what a client chooses (the generation parameters); `Job` adds what Easel assigns
(id, owner, creation time) and is the message on the requests topic. `easel schema` prints
`Job`'s JSON Schema so any Kafka producer can submit jobs without the HTTP service.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal, get_args

import orjson
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, HttpUrl, model_validator

from contract.errors import InvalidField
from contract.samplers import SAMPLERS, SCHEDULES, sampler_conflict

MAX_SEED = 2**32 - 1
# A1111's default switch point: the base denoises the first 80 % of the schedule, the refiner the rest.
DEFAULT_REFINER_SWITCH = 0.8
JOB_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
# The most a client's echoed request (`client_input`) may take, JSON-encoded. With the other fields' caps below,
# it bounds every job and status record far under Kafka's 1 MiB (tests/test_ingress_limits.py proves the sum).
MAX_ECHO_BYTES = 64 * 1024
# Pydantic's limit for a URL, which it checks on the URL as sent: we check it once percent-encoded too, as stored.
MAX_URL_LENGTH = 2083
# The default work budget (EASEL_MAX_JOB_WORK): width × height × images × steps of a 1024² job, 4 images, 50 steps.
DEFAULT_MAX_JOB_WORK = 1024 * 1024 * 4 * 50
# The longest a job may run, and the longest it may live from submission (queue included), that a client may ask.
MAX_EXECUTION_TIMEOUT_S = 3600
MAX_TTL_S = 7 * 24 * 3600
# img2img: A1111's default denoising strength (the share of the schedule that repaints the init image).
DEFAULT_STRENGTH = 0.75
# A1111's default mask blur, in pixels.
DEFAULT_MASK_BLUR = 4
# An input image as a job carries it: the key of the PNG the API stored (`<job id>/init.png`, `<job id>/mask.png`).
# Image bytes never travel on Kafka; what a client sends as base64 or a URL is checked and stored first.
INPUT_IMAGE_KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}/(init|mask)\.png$"
# A LoRA adapter's name: a file `<name>.safetensors` in EASEL_LORA_DIR (no path separators).
LORA_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
MAX_LORAS = 8


def _multiple_of_8(value: int) -> int:
    if value % 8:
        raise ValueError("must be a multiple of 8")
    return value


def _known_sampler(value: str) -> str:
    if value not in SAMPLERS:
        raise ValueError(f"must be one of: {', '.join(SAMPLERS)}")
    return value


def _known_schedule(value: str) -> str:
    if value not in SCHEDULES:
        raise ValueError(f"must be one of: {', '.join(SCHEDULES)}")
    return value


def echo_size(value: dict[str, Any]) -> int:
    """The size of an echoed request as it travels in records: its orjson encoding."""
    return len(orjson.dumps(value))


def _fits_echo_cap(value: dict[str, Any]) -> dict[str, Any]:
    if (size := echo_size(value)) > MAX_ECHO_BYTES:
        raise ValueError(f"is {size} bytes as JSON; at most {MAX_ECHO_BYTES} may be echoed")
    return value


# The custom validators word the errors; `json_schema_extra` puts the same rules in the published schema.
Side = Annotated[int, Field(ge=64, le=2048, json_schema_extra={"multipleOf": 8}), AfterValidator(_multiple_of_8)]
EventName = Literal["queued", "started", "progress", "preview", "completed", "failed", "cancelled", "timed_out"]
EchoedInput = Annotated[dict[str, Any], AfterValidator(_fits_echo_cap)]


def _as_tuple(value: object) -> object:
    # A JSON array is how a client sends it: taken even where the request is validated strictly (native).
    return tuple(value) if isinstance(value, list) else value


def _fits_once_encoded(url: HttpUrl) -> HttpUrl:
    # Else a URL accepted as sent could be refused when its record is read back.
    if len(str(url)) > MAX_URL_LENGTH:
        raise ValueError(f"must be at most {MAX_URL_LENGTH} characters once percent-encoded")
    return url


class WebhookSpec(BaseModel):
    """Where to POST results. `track_id` is echoed in every delivery."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: Annotated[HttpUrl, AfterValidator(_fits_once_encoded)]
    track_id: str | None = Field(default=None, max_length=256)
    events: Annotated[tuple[EventName, ...], BeforeValidator(_as_tuple)] = Field(
        default=("completed", "failed", "cancelled", "timed_out"), max_length=len(get_args(EventName))
    )


class LoraSpec(BaseModel):
    """A LoRA adapter applied to a job, by name, at a weight (A1111's `<lora:name:weight>`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=LORA_NAME_PATTERN, description="a `<name>.safetensors` file in EASEL_LORA_DIR")
    weight: float = Field(default=1.0, ge=-4.0, le=4.0)


class JobSpec(BaseModel):
    """Generation parameters. Defaults follow SDXL's; limits are documented in the README."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str = Field(max_length=4000, description="may be empty, as in A1111")
    negative_prompt: str = Field(default="", max_length=4000)
    width: Side = 1024
    height: Side = 1024
    steps: int = Field(default=30, ge=1, le=150)
    guidance: float = Field(default=5.0, ge=0.0, le=30.0)
    sampler: Annotated[str, AfterValidator(_known_sampler)] = Field(
        default="Euler", json_schema_extra={"enum": list(SAMPLERS)}
    )
    schedule: Annotated[str, AfterValidator(_known_schedule)] = Field(
        default="automatic", json_schema_extra={"enum": list(SCHEDULES)}
    )
    seed: int | None = Field(default=None, ge=-1, le=MAX_SEED, description="null or -1: random")
    num_images: int = Field(default=1, ge=1, le=4)
    model: str = Field(default="default", max_length=200)
    refiner: str | None = Field(
        default=None,
        max_length=200,
        description="a configured refiner: base and refiner denoise as an ensemble of experts",
    )
    refiner_switch_at: float | None = Field(
        default=None, gt=0, lt=1, description="fraction of the schedule the base denoises; 0.8 when a refiner is named"
    )
    safety_checker: bool = Field(
        default=False, description="run the configured safety checker; flagged images are black"
    )
    output_format: Literal["png", "jpeg", "webp"] = "png"
    preview: bool = Field(default=False, description="emit preview events while denoising")
    execution_timeout_s: float | None = Field(default=None, gt=0, le=MAX_EXECUTION_TIMEOUT_S)
    ttl_s: float | None = Field(default=None, gt=0, le=MAX_TTL_S)
    init_image: str | None = Field(
        default=None,
        pattern=INPUT_IMAGE_KEY_PATTERN,
        description="img2img: the key of the stored init image (the API stores what a client sends, base64 or URL, "
        "and puts its key here); resized to width × height",
    )
    mask_image: str | None = Field(
        default=None,
        pattern=INPUT_IMAGE_KEY_PATTERN,
        description="inpainting: the key of the stored mask (white is repainted, black kept), the init image's size",
    )
    strength: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description=f"img2img: the share of the schedule that repaints the init image (A1111 denoising_strength); "
        f"{DEFAULT_STRENGTH} when an init image is given",
    )
    mask_blur: int = Field(default=DEFAULT_MASK_BLUR, ge=0, le=64, description="inpainting: mask edge blur, pixels")
    mask_crop_padding: int | None = Field(
        default=None,
        ge=0,
        le=256,
        description="inpainting: repaint only the mask's bounding box grown by this many pixels, at full "
        "resolution (A1111 'only masked' with its padding); null: the whole image",
    )
    loras: Annotated[tuple[LoraSpec, ...], BeforeValidator(_as_tuple)] = Field(default=(), max_length=MAX_LORAS)

    @model_validator(mode="before")
    @classmethod
    def _prompt_loras(cls, data: Any) -> Any:
        # A1111's `<lora:name:weight>` tags leave the prompt for `loras`, whichever dialect (or Kafka) sent the job.
        from contract.loras import with_prompt_loras  # here: contract.loras imports this module

        return with_prompt_loras(data) if isinstance(data, dict) else data

    @model_validator(mode="before")
    @classmethod
    def _defaults_that_depend(cls, data: Any) -> Any:
        # Filled in here, not at render time, so the status's `spec` shows the switch point and strength used.
        if isinstance(data, dict):
            if data.get("refiner") and data.get("refiner_switch_at") is None:
                data = {**data, "refiner_switch_at": DEFAULT_REFINER_SWITCH}
            if data.get("init_image") and data.get("strength") is None:
                data = {**data, "strength": DEFAULT_STRENGTH}
        return data

    @model_validator(mode="after")
    def _schedule_fits_sampler(self) -> JobSpec:
        if conflict := sampler_conflict(self.sampler, self.schedule, self.steps, refiner=bool(self.refiner)):
            raise ValueError(conflict)
        if self.refiner_switch_at is not None and not self.refiner:
            raise ValueError("refiner_switch_at needs a refiner")
        if self.init_image is None and (self.mask_image or self.strength is not None or self.mask_crop_padding):
            raise ValueError("mask_image, strength and mask_crop_padding need an init_image")
        if denoising_steps(self.steps, self.strength) < 1:
            raise ValueError(
                f"strength {self.strength:g} of {self.steps} steps runs no denoising step; "
                "raise the strength or the steps so that strength × steps is at least 1"
            )
        if self.mask_image is None and self.mask_crop_padding is not None:
            raise ValueError("mask_crop_padding needs a mask_image")
        if self.init_image is not None and self.refiner:
            raise ValueError("a refiner runs on txt2img jobs only; send no refiner with an init_image")
        if len({lora.name for lora in self.loras}) < len(self.loras):
            raise ValueError("each LoRA may be named once")
        return self

    @property
    def random_seed(self) -> bool:
        return self.seed is None or self.seed == -1


class Job(JobSpec):
    """The message on the requests topic, keyed by `id`."""

    id: str = Field(pattern=JOB_ID_PATTERN)
    owner: str = Field(min_length=1, max_length=64, description="id of the API key that owns the job")
    created_at: float = Field(default_factory=time.time)
    webhook: WebhookSpec | None = None
    dialect: str = Field(default="native", max_length=32)
    client_input: EchoedInput | None = Field(
        default=None,
        description=f"the request as the client sent it, echoed by dialects that do so (RunPod); "
        f"at most {MAX_ECHO_BYTES} bytes as JSON",
    )

    @property
    def track_id(self) -> str | None:
        return self.webhook.track_id if self.webhook else None


def new_job_id() -> str:
    return uuid.uuid4().hex


def denoising_steps(steps: int, strength: float | None) -> int:
    """The user steps a job's pipeline call runs: all `steps` for txt2img (strength None). img2img and inpainting
    skip the start of the schedule and run its last int(steps × strength), as diffusers' `get_timesteps` keeps
    them (the same expression, so the same rounding); a second-order scheduler's pairs count once, as elsewhere."""
    if strength is None:
        return steps
    return min(int(steps * strength), steps)


def job_work(spec: JobSpec) -> int:
    """What a job costs, in pixel-steps: width × height × images × steps.

    A refiner adds none: it denoises the tail of the same schedule (ensemble of experts), so `steps` counts it.
    """
    return spec.width * spec.height * spec.num_images * spec.steps


def check_work_budget(spec: JobSpec, budget: int) -> None:
    """InvalidField naming `budget` when the job costs more than `budget` (0: no budget).

    The one check: the API refuses such a job (422), a runner fails one that was written straight to Kafka.
    """
    work = job_work(spec)
    if budget and work > budget:
        raise InvalidField(
            f"width × height × images × steps = {spec.width} × {spec.height} × {spec.num_images} × {spec.steps} "
            f"= {work} exceeds the budget of {budget} (EASEL_MAX_JOB_WORK)",
            "budget",
        )


def check_execution_timeout(spec: JobSpec, limit_s: float) -> None:
    """InvalidField naming `execution_timeout_s` when the job asks to run longer than the runners allow
    (EASEL_JOB_TIMEOUT_S): refused, never silently cut short."""
    if spec.execution_timeout_s is not None and spec.execution_timeout_s > limit_s:
        raise InvalidField(f"must be at most {limit_s:g} s (EASEL_JOB_TIMEOUT_S)", "execution_timeout_s")

"""AUTOMATIC1111's /sdapi/v1: txt2img and img2img payloads in, `{images, parameters, info}` out.

img2img takes one init image (`init_images`, base64), `denoising_strength`, and for inpainting a `mask` with
`mask_blur`, `inpainting_fill` 0 (fill, done on intake) or 1 (original), `inpaint_full_res` with its padding
(diffusers' `padding_mask_crop`) and `inpainting_mask_invert` (done on intake). What diffusers cannot do as A1111
does is refused by name: other fills, other resize modes, other noise multipliers.

Errors as A1111 (FastAPI) answers them: 422 `{"detail": [{"loc", "msg", "type"}]}` for a bad body (malformed
JSON included), `{"detail": "Not Found"}` for an unknown route, and A1111's own
`{"error", "detail", "body", "errors"}` for the rest, an unknown sampler (404 `Sampler not found`) included.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from contract.catalog import DEFAULT_MODEL, refiner_rule
from contract.errors import (
    INTERNAL_MESSAGE,
    UNAVAILABLE_MESSAGE,
    ClientError,
    InvalidField,
    KafkaUnavailable,
    MalformedBody,
    MethodNotAllowed,
    NotFound,
    UnknownName,
)
from contract.infotext import infotext
from contract.states import JobState, JobStatus
from dialects.samplers import resolve

# Upstream A1111's VAE for SDXL, which Easel's SDXL base carries built in: naming it changes nothing.
_BUILT_IN_VAES = {"", "Automatic", "None", "sdxl_vae.safetensors", "sdxl_vae"}


class Txt2ImgPayload(BaseModel):
    """The txt2img body as A1111 declares it (modules/api/models.py, processing.py), with its defaults.

    Pydantic's lax mode takes what A1111's pydantic takes: `"1"` for an integer, `"7.5"` for a number,
    `"true"` for a flag. Fields Easel does not read (eta, s_churn, hr_* while enable_hr is off) pass through.
    """

    model_config = ConfigDict(extra="allow")

    prompt: str = ""
    negative_prompt: str | None = ""
    styles: list[str] | None = None
    seed: int = -1
    subseed: int = -1
    subseed_strength: float = 0
    sampler_name: str | None = None
    sampler_index: str | None = "Euler"
    scheduler: str | None = None
    batch_size: int = 1
    n_iter: int = 1
    steps: int = 50
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512
    restore_faces: bool | None = False
    tiling: bool | None = False
    enable_hr: bool = False
    override_settings: dict[str, Any] | None = Field(default_factory=dict)
    override_settings_restore_afterwards: bool = True
    refiner_checkpoint: str | None = None
    refiner_switch_at: float | None = None
    script_name: str | None = None
    script_args: list[Any] = Field(default_factory=list)
    alwayson_scripts: dict[str, Any] = Field(default_factory=dict)
    send_images: bool = True
    save_images: bool = False


class Img2ImgPayload(Txt2ImgPayload):
    """The img2img body as A1111 declares it (StableDiffusionProcessingImg2Img), with its defaults.

    `init_images` and `mask` are Any: an echoed request carries stored markers in their place.
    """

    init_images: list[Any] = Field(default_factory=list)
    resize_mode: int = 0
    denoising_strength: float = 0.75
    image_cfg_scale: float | None = None
    mask: Any = None
    mask_blur_x: int = 4
    mask_blur_y: int = 4
    mask_blur: int | None = None
    inpainting_fill: int = 0
    inpaint_full_res: bool = True
    inpaint_full_res_padding: int = 0
    inpainting_mask_invert: int = 0
    initial_noise_multiplier: float | None = None
    include_init_images: bool = False


TXT2IMG_DEFAULTS: dict[str, Any] = Txt2ImgPayload().model_dump()
IMG2IMG_DEFAULTS: dict[str, Any] = Img2ImgPayload().model_dump()
# The payload's names for job fields that A1111 names differently (job field → A1111's name).
FIELD_NAMES = {"guidance": "cfg_scale", "sampler": "sampler_name", "schedule": "scheduler", "num_images": "batch_size",
               "model": "override_settings.sd_model_checkpoint", "strength": "denoising_strength",
               "init_image": "init_images", "mask_image": "mask", "mask_crop_padding": "inpaint_full_res_padding"}
# Where an img2img payload carries its images.
IMAGE_PATHS: dict[str, tuple[str | int, ...]] = {"init_image": ("init_images", 0), "mask_image": ("mask",)}
# inpainting_fill: what A1111 puts under the mask before denoising. 1 (original) is what diffusers' inpainting does;
# 0 (fill: the surrounding colours, blurred) is done on intake, to the init image stored.
FILL, ORIGINAL = 0, 1
_FILLS = {FILL: "fill", ORIGINAL: "original"}
# txt2img is synchronous: a job that did not complete is an error answer, with this status. A CANCELLED one was
# interrupted (A1111's only way to stop a job): it answers 200 with what it has, as A1111 does.
_NOT_COMPLETED_STATUS = {JobState.FAILED: 500, JobState.TIMED_OUT: 409}
DID_NOT_FINISH_STATUS = 504
# Features that would change the picture and that Easel does not do: refused, never ignored.
_UNSUPPORTED = {
    "enable_hr": "hires fix is not supported",
    "restore_faces": "face restoration is not supported",
    "tiling": "tiling is not supported",
    "subseed_strength": "variation seeds are not supported; use 0",
    "styles": "saved prompt styles are not supported; put the style's text in the prompt",
    "script_name": "scripts are not supported",
    "alwayson_scripts": "extension scripts (ControlNet, ADetailer, ...) are not supported",
}


def parse(
    payload: dict[str, Any], defaults: dict[str, Any] | None = None, model: type[Txt2ImgPayload] = Txt2ImgPayload
) -> Txt2ImgPayload:
    """The payload with `defaults` (A1111's unless given) filled in; InvalidField for a wrong type."""
    try:
        return model.model_validate({**(defaults or TXT2IMG_DEFAULTS), **payload})
    except ValidationError as exc:
        details = [
            {"field": ".".join(str(part) for part in e["loc"]) or "body", "rule": e["msg"], "type": e["type"]}
            for e in exc.errors()
        ]
        raise InvalidField(details[0]["rule"], details[0]["field"], details=details) from None


def job_fields(
    payload: dict[str, Any],
    model_names: tuple[str, ...],
    defaults: dict[str, Any] | None = None,
    refiner_names: tuple[str, ...] = (),
) -> dict[str, Any]:
    """JobSpec fields from a txt2img payload (A1111 defaults filled in).

    `model_names` / `refiner_names`: what `sd_model_checkpoint` / `refiner_checkpoint` may name.
    """
    p = parse(payload, defaults)
    for field, rule in _UNSUPPORTED.items():
        if getattr(p, field):
            raise InvalidField(rule, field)
    overrides = p.override_settings or {}
    vae = overrides.get("sd_vae")
    if vae is not None and vae not in _BUILT_IN_VAES:
        raise InvalidField("only the model's own VAE is available: send \"Automatic\"", "override_settings.sd_vae")
    refiner = p.refiner_checkpoint or None
    if refiner is not None and refiner not in refiner_names:
        raise UnknownName(refiner_rule(refiner_names), "refiner_checkpoint")
    checkpoint = overrides.get("sd_model_checkpoint")
    if checkpoint is not None and checkpoint not in model_names:
        raise UnknownName(f"must be one of: {', '.join(model_names)}", "override_settings.sd_model_checkpoint")
    sampler, schedule = resolve(p.sampler_name or p.sampler_index, p.scheduler)
    images = p.batch_size * p.n_iter
    if not 1 <= images <= 4:
        raise InvalidField("batch_size × n_iter must be between 1 and 4", "batch_size")
    return {
        "prompt": p.prompt,
        "negative_prompt": p.negative_prompt or "",
        "width": p.width,
        "height": p.height,
        "steps": p.steps,
        "guidance": p.cfg_scale,
        "sampler": sampler,
        "schedule": schedule,
        "seed": p.seed,
        "num_images": images,
        "model": checkpoint or DEFAULT_MODEL,
    } | _refiner_fields(refiner, p.refiner_switch_at)


@dataclass(frozen=True)
class Img2ImgIntake:
    """What the API does to an img2img payload's images on intake, before storing them."""

    invert_mask: bool = False
    fill_masked: bool = False


def img2img_fields(
    payload: dict[str, Any],
    model_names: tuple[str, ...],
    defaults: dict[str, Any] | None = None,
    refiner_names: tuple[str, ...] = (),
) -> dict[str, Any]:
    """JobSpec fields from an img2img payload; `init_image` / `mask_image` hold the images as sent
    (service.input_images stores them, and puts their keys in). `intake` says what to do to them first."""
    defaults = defaults or IMG2IMG_DEFAULTS
    fields = job_fields(payload, model_names, defaults, refiner_names)
    p = _img2img(payload, defaults)
    if len(p.init_images) != 1:
        raise InvalidField(f"must hold exactly one image; it holds {len(p.init_images)}", "init_images")
    if p.resize_mode != 0:
        raise InvalidField("only 0 (just resize) is supported: the init image is resized to width × height",
                           "resize_mode")
    if p.initial_noise_multiplier not in (None, 1):
        raise InvalidField("only 1 is supported", "initial_noise_multiplier")
    if p.include_init_images:
        raise InvalidField("the answer never carries the input images back; send false", "include_init_images")
    fields |= {"init_image": p.init_images[0], "strength": p.denoising_strength}
    if p.mask is None:  # A1111 ignores the inpainting fields without a mask
        return fields
    if p.inpainting_fill not in _FILLS:
        raise InvalidField("only 0 (fill) and 1 (original) are supported: diffusers' inpainting starts from the "
                           "image under the mask", "inpainting_fill")
    if p.inpainting_mask_invert not in (0, 1):
        raise InvalidField("must be 0 (repaint the white) or 1 (repaint the black)", "inpainting_mask_invert")
    if p.mask_blur is None and p.mask_blur_x != p.mask_blur_y:
        raise InvalidField("different horizontal and vertical blurs are not supported; send mask_blur", "mask_blur_x")
    return fields | {
        "mask_image": p.mask,
        "mask_blur": p.mask_blur if p.mask_blur is not None else p.mask_blur_x,
        "mask_crop_padding": p.inpaint_full_res_padding if p.inpaint_full_res else None,
    }


def intake(payload: dict[str, Any], defaults: dict[str, Any] | None = None) -> Img2ImgIntake:
    """What the API does to an img2img payload's images before storing them (the payload passed
    `img2img_fields`)."""
    p = _img2img(payload, defaults or IMG2IMG_DEFAULTS)
    if p.mask is None:
        return Img2ImgIntake()
    return Img2ImgIntake(invert_mask=p.inpainting_mask_invert == 1, fill_masked=p.inpainting_fill == FILL)


def _img2img(payload: dict[str, Any], defaults: dict[str, Any]) -> Img2ImgPayload:
    p = parse(payload, defaults, Img2ImgPayload)
    assert isinstance(p, Img2ImgPayload)
    return p


def _refiner_fields(refiner: str | None, switch_at: float | None) -> dict[str, Any]:
    """A1111 ignores `refiner_switch_at` without a refiner; with one, the contract defaults it to 0.8."""
    if refiner is None:
        return {}
    return {"refiner": refiner, "refiner_switch_at": switch_at}


def model_name(spec: dict[str, Any], base_name: str) -> str:
    """The model a job ran on, by its own name: the one it named, else the configured base's."""
    named = spec.get("model")
    return named if named and named != DEFAULT_MODEL else base_name


def info(status: JobStatus, base_name: str = DEFAULT_MODEL) -> str:
    """The `info` JSON *string* with A1111's keys. `base_name`: the configured base model's name."""
    spec = status.spec
    model = model_name(spec, base_name)
    seeds = status.seeds or [spec.get("seed") or -1]
    n = len(seeds)
    created = time.strftime("%Y%m%d%H%M%S", time.gmtime(status.created_at))
    return json.dumps(
        {
            "prompt": spec.get("prompt"),
            "all_prompts": [spec.get("prompt")] * n,
            "negative_prompt": spec.get("negative_prompt", ""),
            "all_negative_prompts": [spec.get("negative_prompt", "")] * n,
            "seed": seeds[0],
            "all_seeds": seeds,
            "subseed": -1,
            "all_subseeds": [-1] * n,
            "subseed_strength": 0,
            "width": spec.get("width"),
            "height": spec.get("height"),
            "sampler_name": spec.get("sampler"),
            "cfg_scale": spec.get("guidance"),
            "steps": spec.get("steps"),
            "batch_size": n,
            "restore_faces": False,
            "face_restoration_model": None,
            "sd_model_name": model,
            "sd_model_hash": None,
            "sd_vae_name": None,
            "sd_vae_hash": None,
            "seed_resize_from_w": -1,
            "seed_resize_from_h": -1,
            "denoising_strength": spec.get("strength") or 0,
            "extra_generation_params": _extra_generation_params(spec),
            "index_of_first_image": 0,
            "infotexts": [infotext(spec, seed, model) for seed in seeds],
            "styles": [],
            "job_timestamp": created,
            "clip_skip": 1,
            "is_using_inpainting_conditioning": False,
            "version": "easel",
        }
    )


def _extra_generation_params(spec: dict[str, Any]) -> dict[str, Any]:
    extra: dict[str, Any] = {"Schedule type": spec.get("schedule")}
    if spec.get("mask_image"):
        extra["Mask blur"] = spec.get("mask_blur")
    if spec.get("refiner"):
        extra |= {"Refiner": spec["refiner"], "Refiner switch at": spec.get("refiner_switch_at")}
    return extra


def txt2img_answer(
    status: JobStatus, images_b64: list[str], payload: dict[str, Any], base_name: str = DEFAULT_MODEL
) -> tuple[int, dict[str, Any]]:
    """(HTTP status, body) of a synchronous txt2img or img2img once its job ended, or the wait for it did."""
    if status.state in (JobState.COMPLETED, JobState.CANCELLED):
        return 200, txt2img_response(status, images_b64, payload, base_name)
    if not status.is_terminal:  # A1111 has no "come back later": say it did not finish
        return DID_NOT_FINISH_STATUS, _exception_body(
            status.state.value, f"job {status.job_id} did not finish in time; it is {status.state.value}"
        )
    error = status.error or status.state.value.lower()
    return _NOT_COMPLETED_STATUS[status.state], _exception_body(status.state.value, error)


def txt2img_response(
    status: JobStatus, images_b64: list[str], payload: dict[str, Any], base_name: str = DEFAULT_MODEL
) -> dict[str, Any]:
    """`{images, parameters, info}` (of txt2img, or of img2img for a job with an init image); `images` is empty
    when the payload says `send_images: false`."""
    parameters = parameters_that_ran(status, payload)
    images = images_b64 if parameters["send_images"] else []
    return {"images": images, "parameters": parameters, "info": info(status, base_name)}


def parameters_that_ran(status: JobStatus, payload: dict[str, Any]) -> dict[str, Any]:
    """A1111's `parameters`: the request with its defaults filled in, where a default is what the job ran with
    (the RunPod worker's steps 20, not upstream's 50), the client's own values kept as sent (coerced)."""
    spec = status.spec
    ran: dict[str, Any] = {"steps": spec.get("steps"), "cfg_scale": spec.get("guidance"),
                           "width": spec.get("width"), "height": spec.get("height")}
    if not (payload.get("sampler_name") or payload.get("sampler_index")):
        ran["sampler_index"] = spec.get("sampler")
    if not payload.get("scheduler") and spec.get("schedule"):
        ran["scheduler"] = spec["schedule"]
    if spec.get("init_image"):
        given = _img2img(payload, IMG2IMG_DEFAULTS).model_dump()  # validated once: cannot fail now
        given |= {"init_images": None, "mask": None}  # as A1111 answers: the images are not sent back
    else:
        given = parse(payload).model_dump()
    return given | {k: v for k, v in ran.items() if k not in payload and v is not None}


def progress(status: JobStatus | None, current_image: str | None = None) -> dict[str, Any]:
    """GET /sdapi/v1/progress for the key's most recent job (A1111 itself reports the one running job)."""
    step = total = 0
    fraction = eta = 0.0
    if status is not None and status.progress is not None and not status.is_terminal:
        step, total = status.progress.step, status.progress.total
        fraction, eta = status.progress.fraction, status.progress.eta_s
    active = status is not None and not status.is_terminal
    return {
        "progress": fraction,
        "eta_relative": eta,
        "state": {
            "skipped": False,
            "interrupted": status is not None and status.state is JobState.CANCELLED,
            "stopping_generation": False,
            "job": status.job_id if active and status else "",
            "job_count": 1 if active else 0,
            "job_timestamp": time.strftime("%Y%m%d%H%M%S", time.gmtime(status.created_at)) if status else "0",
            "job_no": 0,
            "sampling_step": step,
            "sampling_steps": total,
        },
        "current_image": current_image,  # base64 JPEG of the latest preview, for jobs with previews on
        "textinfo": "In queue" if status is not None and status.state is JobState.IN_QUEUE else None,
    }


def error_answer(error: Exception) -> tuple[int, dict[str, Any]]:
    """(HTTP status, body) in the shape FastAPI or A1111's own exception handler gives each case."""
    if isinstance(error, UnknownName) and error.field == "sampler_name":
        return 404, _exception_body("HTTPException", f"Sampler not found: {error.rule}", status=404)
    if isinstance(error, InvalidField | MalformedBody):
        return 422, {"detail": _validation_details(error)}
    if isinstance(error, NotFound | MethodNotAllowed):  # FastAPI's own answer for a route
        return error.status, {"detail": error.message}
    if isinstance(error, ClientError):
        return error.status, _exception_body("HTTPException", error.message, status=error.status)
    if isinstance(error, KafkaUnavailable):
        return 503, _exception_body("HTTPException", UNAVAILABLE_MESSAGE, status=503)
    return 500, _exception_body("InternalServerError", INTERNAL_MESSAGE)


def _exception_body(error: str, detail: str, status: int | None = None) -> dict[str, Any]:
    """A1111's exception handler: the exception's name, its detail, and `str(e)` (`"404: ..."` for HTTPException)."""
    return {"error": error, "detail": detail, "body": "", "errors": f"{status}: {detail}" if status else detail}


def _validation_details(error: ClientError) -> list[dict[str, Any]]:
    if isinstance(error, MalformedBody):
        return [{"loc": ["body"], "msg": error.rule, "type": "json_invalid"}]
    problems = error.details or [{"field": error.field or "body", "rule": error.rule, "type": "value_error"}]
    return [
        {"loc": ["body", *(p["field"].split(".") if p["field"] != "body" else [])], "msg": p["rule"], "type": p["type"]}
        for p in problems
    ]

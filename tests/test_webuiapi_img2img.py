"""The stock A1111 client, `webuiapi` 0.9.17, unchanged: `img2img()` with an init image, and with a mask.

Its defaults are A1111's: `inpainting_fill=0` (fill, done on intake), `inpaint_full_res=True` with padding 0
(diffusers' `padding_mask_crop=0`), `mask_blur=4`, `resize_mode=0`; they all work as sent.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import webuiapi
from PIL import Image

from tests.processes import Stack
from tests.webui_client import webui_client

SIZE = {"width": 64, "height": 64}


@pytest.fixture
def api(stack: Stack) -> Iterator[webuiapi.WebUIApi]:
    with webui_client(stack) as client:
        yield client


def init_image() -> Image.Image:
    image = Image.new("RGB", (96, 80), (30, 90, 200))
    image.paste((240, 200, 20), (20, 20, 60, 60))
    return image


def mask_image() -> Image.Image:
    mask = Image.new("L", (96, 80), 0)
    mask.paste(255, (48, 0, 96, 80))
    return mask


def test_img2img_with_the_clients_defaults(api: webuiapi.WebUIApi) -> None:
    result = api.img2img(images=[init_image()], prompt="a lighthouse", steps=4, seed=9, **SIZE)
    [image] = result.images
    assert image.size == (64, 64)
    assert result.info["denoising_strength"] == 0.75 and result.info["all_seeds"] == [9]
    assert "Denoising strength: 0.75" in result.info["infotexts"][0]
    assert result.parameters["init_images"] is None and result.parameters["denoising_strength"] == 0.75


def test_inpainting_with_the_clients_defaults(api: webuiapi.WebUIApi) -> None:
    result = api.img2img(images=[init_image()], mask_image=mask_image(), prompt="a lighthouse", steps=4, seed=9,
                         denoising_strength=0.9, **SIZE)
    [image] = result.images
    assert image.size == (64, 64)
    assert result.info["extra_generation_params"]["Mask blur"] == 4
    assert result.parameters["mask"] is None and result.parameters["inpainting_fill"] == 0


def test_img2img_differs_from_txt2img_at_the_same_seed(api: webuiapi.WebUIApi) -> None:
    txt2img = api.txt2img(prompt="a lighthouse", steps=4, seed=21, **SIZE).image
    img2img = api.img2img(images=[init_image()], prompt="a lighthouse", steps=4, seed=21, **SIZE).image
    difference = np.abs(np.asarray(txt2img, dtype=np.int16) - np.asarray(img2img, dtype=np.int16))
    assert difference.mean() > 1.0  # the init image took part: not the txt2img picture

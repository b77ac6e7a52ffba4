"""`easel generate` as a user runs it: a real subprocess against the real stack."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from PIL import Image

from tests.processes import REPO, Stack


def generate(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "easel.cli", "generate", *args, "--url", stack.base_url],
        cwd=REPO, env=stack.env, capture_output=True, text=True, timeout=120,
    )


def test_generate_saves_the_images_and_shows_progress(stack: Stack, tmp_path: Path) -> None:
    out = tmp_path / "fox.png"
    done = generate(stack, "a red fox", "--width", "128", "--height", "96", "--steps", "6", "--seed", "3",
                    "--num-images", "2", "-o", str(out), "--key", stack.key)
    assert done.returncode == 0, done.stderr
    assert Image.open(out).size == (128, 96) and Image.open(out).format == "PNG"
    assert Image.open(tmp_path / "fox-1.png").size == (128, 96)
    assert "6/6" in done.stderr and f"saved {out}" in done.stderr


def test_generate_exits_non_zero_with_the_reason(stack: Stack, tmp_path: Path) -> None:
    out = tmp_path / "x.webp"
    refused = generate(stack, "a fox", "--key", "wrong-key", "-o", str(out))
    assert refused.returncode == 3 and "invalid API key" in refused.stderr
    invalid = generate(stack, "a fox", "--width", "100", "--key", stack.key, "-o", str(out))
    assert invalid.returncode == 3 and "width: must be a multiple of 8" in invalid.stderr
    timed_out = generate(stack, "a fox", "--width", "128", "--height", "96", "--steps", "50",
                         "--execution-timeout", "0.001", "--key", stack.key, "-o", str(out))
    assert timed_out.returncode == 1 and "timed_out: execution exceeded" in timed_out.stderr
    assert not out.exists()

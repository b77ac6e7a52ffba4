"""The wheel (what the Dockerfile installs) works installed, away from the checkout.

It is built from the checkout's files and installed into a fresh virtual environment that borrows this one's
heavy dependencies (torch, diffusers) but not its editable install of Easel. There, from a directory outside
the checkout, every module in the wheel imports from the wheel, and `easel` and each of its subcommands answer
`--help`. The wheel holds every module of our packages and the playground's files.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.processes import REPO

NOT_SHIPPED = {"tests", "bench"}
IMPORT_EVERY_MODULE = """
import importlib, sys
for name in sys.argv[1:]:
    print(importlib.import_module(name).__file__)
"""


def run(argv: list[str | Path], cwd: Path) -> str:
    result = subprocess.run(
        argv, cwd=cwd, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    )
    assert result.returncode == 0, f"{argv} exited {result.returncode}:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
    return result.stdout


def checkout_files() -> list[str]:
    """What git sees in the checkout (tracked and new files, nothing ignored such as .venv or build output)."""
    listed = run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], REPO).split("\n")
    return [path for path in listed if path and (REPO / path).is_file()]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("packaging")


@pytest.fixture(scope="module")
def wheel(workdir: Path) -> Path:
    # Built from a copy, so the build's own output (build/, *.egg-info) never lands in the shared checkout.
    source = workdir / "source"
    for path in checkout_files():
        (source / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / path, source / path)
    # No isolation: the installed setuptools builds it, without reaching a package index.
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", workdir, source], workdir)
    [built] = workdir.glob("easel-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, workdir: Path) -> Path:
    venv = workdir / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv], workdir)
    [site_packages] = venv.glob("lib/python*/site-packages")
    # This environment's packages after the venv's own. A plain path line: the .pth files there (Easel's
    # editable install among them) are not read, so our packages can only come from the wheel.
    borrowed = dict.fromkeys([sysconfig.get_path("purelib"), sysconfig.get_path("platlib")])
    (site_packages / "borrowed-dependencies.pth").write_text("".join(f"{path}\n" for path in borrowed))
    # --ignore-installed: the editable Easel it can see is not this environment's to uninstall.
    run([venv / "bin/python", "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", wheel], workdir)
    return venv


def wheel_files(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return {name for name in archive.namelist() if ".dist-info/" not in name}


def test_every_module_of_our_packages_is_in_the_wheel(wheel: Path) -> None:
    packages = {path.parent.name for path in REPO.glob("*/__init__.py")} - NOT_SHIPPED
    modules = {path for path in checkout_files() if path.endswith(".py") and path.split("/")[0] in packages}
    assert modules and not modules - wheel_files(wheel), f"not in the wheel: {sorted(modules - wheel_files(wheel))}"


def test_the_playground_is_in_the_wheel(wheel: Path) -> None:
    static = {path for path in checkout_files() if path.startswith("service/static/")}
    assert any(path.endswith(".html") for path in static)
    assert static <= wheel_files(wheel), sorted(static - wheel_files(wheel))


def test_every_module_imports_from_the_installed_wheel(wheel: Path, venv: Path, workdir: Path) -> None:
    modules = sorted(
        path.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
        for path in wheel_files(wheel)
        if path.endswith(".py")
    )
    loaded_from = run([venv / "bin/python", "-c", IMPORT_EVERY_MODULE, *modules], workdir).split()
    assert len(loaded_from) == len(modules)
    [site_packages] = venv.glob("lib/python*/site-packages")
    assert all(Path(path).is_relative_to(site_packages) for path in loaded_from), loaded_from


def test_easel_and_every_subcommand_answer_help(venv: Path, workdir: Path) -> None:
    """The console script resolves, and argparse knows every subcommand (nested ones included)."""
    pending: list[list[str]] = [[]]
    answered = []
    while pending:
        argv = pending.pop()
        usage = run([venv / "bin/easel", *argv, "--help"], workdir)
        assert usage.startswith(f"usage: {' '.join(['easel', *argv])}"), usage
        answered.append(" ".join(argv))
        # argparse lists subcommands as {a,b,c} first under "positional arguments:" (options' choices come later)
        if choices := re.search(r"^positional arguments:\n  \{([\w,-]+)\}", usage, re.MULTILINE):
            pending += [[*argv, choice] for choice in choices[1].split(",")]
    assert {"dev", "api", "runner", "webhooks", "topics"} <= set(answered), answered

"""The wheel (what the Dockerfile installs) must carry every package of ours and the playground's files."""

from __future__ import annotations

import fnmatch
import tomllib

from tests.processes import REPO

NOT_SHIPPED = {"tests", "bench"}


def test_every_top_level_package_is_included() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    patterns = config["packages"]["find"]["include"]
    packages = {p.parent.name for p in REPO.glob("*/__init__.py")} - NOT_SHIPPED
    missing = {name for name in packages if not any(fnmatch.fnmatch(name, pattern) for pattern in patterns)}
    assert packages and not missing, f"not in [tool.setuptools.packages.find]: {sorted(missing)}"
    assert config["package-data"]["service"] == ["static/*"]
    assert list((REPO / "service" / "static").glob("*.html"))

"""Where every benchmark's result goes: printed, and kept as bench/results/<name>.json (git-ignored)."""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def report(name: str, result: dict[str, object]) -> None:
    text = json.dumps(result, indent=2)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(text)

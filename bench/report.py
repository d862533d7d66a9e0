"""What every benchmark shares: the machine's description and writing the JSON report."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path


def machine() -> dict:
    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "processor": platform.processor() or platform.machine()}


def write_report(path: Path, report: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**report, "machine": machine()}, indent=2) + "\n")
    print(f"wrote {path}")


def print_table(columns: list[tuple[str, str, int]], rows: list[dict]) -> None:
    """``columns``: (key, header, width); numbers right-aligned, text left-aligned."""
    print("".join(f"{h:<{w}}" if i == 0 else f"{h:>{w}}" for i, (_, h, w) in
                  enumerate(columns)))
    for row in rows:
        cells = []
        for i, (key, _, w) in enumerate(columns):
            v = row[key]
            text = f"{v:,.1f}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) \
                else str(v)
            cells.append(f"{text:<{w}}" if i == 0 else f"{text:>{w}}")
        print("".join(cells))

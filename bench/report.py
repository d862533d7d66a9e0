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


def markdown_table(columns: list[tuple[str, str, int]], rows: list[dict]) -> str:
    """``columns`` as :func:`print_table` takes them, as a Markdown table (numbers with one
    decimal, right-aligned)."""
    lines = ["| " + " | ".join(h for _, h, _ in columns) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i, _ in enumerate(columns)) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(f"{r[k]:,.1f}" if isinstance(r[k], float)
                                       else str(r[k]) for k, _, _ in columns) + " |")
    return "\n".join(lines)


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- begin {name}: written by bench/{name}.py -->", f"<!-- end {name} -->"


def write_section(path: Path, name: str, text: str) -> None:
    """Put ``text`` into the Markdown file ``path`` between the markers of section ``name``,
    in place of what was there (appended the first time); the rest of the file is kept."""
    begin, end = _markers(name)
    old = path.read_text() if path.exists() else ""
    block = f"{begin}\n{text.strip()}\n{end}\n"
    if begin in old and end in old:
        head, rest = old.split(begin, 1)
        new = head + block + rest.split(end, 1)[1].lstrip("\n")
    else:
        new = old.rstrip("\n") + ("\n\n" if old else "") + block
    path.write_text(new)
    print(f"wrote {path} (section {name})")


def sections(path: Path) -> str:
    """The marked sections of ``path`` (what other benchmarks wrote there), to keep when a
    benchmark rewrites the file."""
    if not path.exists():
        return ""
    out, text = [], path.read_text()
    while "<!-- begin " in text:
        text = text[text.index("<!-- begin "):]
        name = text[len("<!-- begin "):].split(":", 1)[0]
        end = _markers(name)[1]
        if end not in text:
            break
        block, text = text.split(end, 1)
        out.append(block + end + "\n")
    return ("\n" + "\n".join(out)) if out else ""

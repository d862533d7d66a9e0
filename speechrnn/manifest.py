"""Manifests: the list of utterances every stage after import works from.

A row has ``audio`` (a path, relative to the manifest's folder when written), ``text``,
``duration`` (seconds), ``speaker`` and optionally ``id`` and ``offset``/``end`` (seconds)
for a segment of a longer file. Stored as JSON Lines (``.jsonl``) or TSV with a header row
(``.tsv``); the suffix decides.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from .errors import InputError

COLUMNS = ("id", "audio", "text", "duration", "speaker", "offset", "end")


class ManifestError(InputError):
    """A manifest that cannot be read; the message names the file and line."""


@dataclass
class Utterance:
    audio: str
    text: str
    duration: float
    speaker: str = ""
    id: str = ""
    offset: float | None = None
    end: float | None = None

    @property
    def segment(self) -> tuple[float, float | None]:
        return (self.offset or 0.0), self.end


def _fmt(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        return "jsonl"
    if suffix in (".tsv", ".txt"):
        return "tsv"
    raise ManifestError(f"{path}: unknown manifest format {suffix!r} (use .jsonl or .tsv)")


def _row(obj: dict, base: Path, where: str) -> Utterance:
    try:
        audio = str(obj["audio"])
        text = str(obj["text"])
        duration = float(obj["duration"])
    except KeyError as err:
        raise ManifestError(f"{where}: missing column {err.args[0]!r}") from None
    except (TypeError, ValueError):
        raise ManifestError(f"{where}: duration is not a number: {obj.get('duration')!r}") from None

    def opt(key):
        value = obj.get(key)
        if value in (None, ""):
            return None
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ManifestError(f"{where}: {key} is not a number: {value!r}") from None

    return Utterance(
        audio=os.path.normpath(base / audio),
        text=text,
        duration=duration,
        speaker=str(obj.get("speaker") or ""),
        id=str(obj.get("id") or ""),
        offset=opt("offset"),
        end=opt("end"),
    )


def read_manifest(path: str | Path) -> list[Utterance]:
    """Rows with ``audio`` resolved against the manifest's folder."""
    path = Path(path)
    fmt = _fmt(path)
    try:
        handle = path.open(encoding="utf-8", newline="")
    except FileNotFoundError:
        raise ManifestError(f"{path}: manifest not found") from None
    base = path.parent
    rows = []
    with handle:
        if fmt == "jsonl":
            for n, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ManifestError(f"{path}:{n}: not valid JSON ({err.msg})") from None
                if not isinstance(obj, dict):
                    raise ManifestError(f"{path}:{n}: expected a JSON object")
                rows.append(_row(obj, base, f"{path}:{n}"))
        else:
            reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
            for n, obj in enumerate(reader, 2):
                rows.append(_row(obj, base, f"{path}:{n}"))
    return rows


def manifest_path(folder: str | Path, name: str, fmt: str) -> Path:
    """The file of manifest ``name`` in ``folder``: ``<folder>/<name>.<jsonl|tsv>``."""
    return Path(folder) / f"{name}.{fmt}"


def write_manifest(path: str | Path, rows: list[Utterance]) -> Path:
    """Write rows with audio paths relative to the manifest's folder."""
    path = Path(path)
    fmt = _fmt(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = path.parent.resolve()
    tmp = path.with_name(path.name + ".tmp")
    names = [f.name for f in fields(Utterance)]
    with tmp.open("w", encoding="utf-8", newline="") as f:
        if fmt == "tsv":
            f.write("\t".join(COLUMNS) + "\n")
        for row in rows:
            obj = asdict(row)
            obj["audio"] = os.path.relpath(Path(row.audio).resolve(), base)
            obj["duration"] = round(float(row.duration), 4)
            if fmt == "jsonl":
                ordered = {k: obj[k] for k in COLUMNS if k in names}
                if ordered["offset"] is None and ordered["end"] is None:
                    del ordered["offset"], ordered["end"]
                f.write(json.dumps(ordered, ensure_ascii=False) + "\n")
            else:
                values = ["" if obj[k] is None else str(obj[k]) for k in COLUMNS]
                if any("\t" in v or "\n" in v for v in values):
                    raise ManifestError(f"{path}: a value holds a tab or newline: {values}")
                f.write("\t".join(values) + "\n")
    os.replace(tmp, path)
    return path


def manifest_stats(rows: list[Utterance], bins: int = 10) -> dict:
    """Utterances, hours, speakers, duration spread and a duration histogram."""
    import numpy as np

    durations = np.array([r.duration for r in rows], dtype=np.float64)
    stats = {
        "utterances": len(rows),
        "hours": round(float(durations.sum()) / 3600, 4),
        "speakers": len({r.speaker for r in rows}),
        "duration_s": {},
        "histogram": [],
    }
    if len(rows):
        stats["duration_s"] = {k: round(float(f(durations)), 3) for k, f in
                               (("min", np.min), ("mean", np.mean), ("median", np.median),
                                ("max", np.max))}
        chars = sum(len(r.text) for r in rows)
        stats["chars_per_second"] = round(chars / max(float(durations.sum()), 1e-9), 2)
        counts, edges = np.histogram(durations, bins=bins)
        stats["histogram"] = [{"from_s": round(float(a), 2), "to_s": round(float(b), 2),
                               "count": int(c)} for a, b, c in zip(edges, edges[1:], counts)]
    return stats


def format_stats(name: str, stats: dict) -> str:
    lines = [f"{name}: {stats['utterances']} utterances, {stats['hours']:.3f} h, "
             f"{stats['speakers']} speakers"]
    d = stats["duration_s"]
    if d:
        lines.append(f"  duration s: min {d['min']}  mean {d['mean']}  median {d['median']}"
                     f"  max {d['max']}   ({stats['chars_per_second']} chars/s)")
        top = max(b["count"] for b in stats["histogram"]) or 1
        for b in stats["histogram"]:
            bar = "#" * round(40 * b["count"] / top)
            lines.append(f"  {b['from_s']:7.2f}-{b['to_s']:<7.2f} {b['count']:6d} {bar}")
    return "\n".join(lines)

"""Manifests: the list of utterances every stage after import works from.

A row has ``audio`` (a path, relative to the manifest's folder when written), ``text``,
``duration`` (seconds), ``speaker`` and optionally ``id`` and ``offset``/``end`` (seconds)
for a segment of a longer file. Stored as JSON Lines (``.jsonl``) or TSV with a header row
(``.tsv``); the suffix decides.

Reading is forgiving about how the text is stored (:func:`read_text`): UTF-8 with or without
a byte-order mark, UTF-16 or UTF-32 with one, UTF-16 without one, and LF, CRLF or CR line
ends. Anything else wrong with a manifest raises :class:`ManifestError` naming the file and
line. A manifest is a list its writer chose: its ``audio`` paths are followed as written
(relative to the manifest's folder, ``..`` and absolute paths included); importers, which
read a corpus's own metadata, are the ones that keep to the corpus folder.
"""

from __future__ import annotations

import codecs
import gzip
import json
import math
import os
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from .errors import InputError, NotFoundError
from .files import atomic_write

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


_BOMS = ((codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be"),
         (codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"),
         (codecs.BOM_UTF16_BE, "utf-16-be"))
_LINE_END = re.compile(r"\r\n|\r|\n")
_ESCAPED = re.compile("[\udc00-\udcff]")


def _escape(err: UnicodeDecodeError) -> tuple[str, int]:
    """Each byte that does not decode becomes U+DC00 + byte (as ``surrogateescape`` does,
    which refuses bytes below 128: UTF-16's and UTF-32's bad units hold such bytes)."""
    return "".join(chr(0xDC00 + b) for b in err.object[err.start:err.end]), err.end


codecs.register_error("speechrnn.escape", _escape)


def text_encoding(data: bytes) -> tuple[str, int]:
    """(encoding, length of its byte-order mark) of a text file's bytes: a BOM decides;
    without one, UTF-16 is recognised by a NUL byte in every other place (ASCII-range text),
    anything else is taken for UTF-8."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return encoding, len(bom)
    head = data[:4096]
    pairs = len(head) // 2
    if pairs and b"\0" in head:
        even, odd = head[0::2].count(0), head[1::2].count(0)
        if odd >= pairs / 4 and even <= odd / 8:
            return "utf-16-le", 0
        if even >= pairs / 4 and odd <= even / 8:
            return "utf-16-be", 0
    return "utf-8", 0


def text_of_bytes(data: bytes) -> str:
    """A text file's bytes as text (:func:`text_encoding`). Bytes that are not valid in
    that encoding come out as lone surrogates U+DC00 + byte for the caller to find with
    :func:`undecodable`, line by line, instead of failing the whole file."""
    encoding, skip = text_encoding(data)
    # a second BOM (text with one, saved again with one) is no part of the first line
    return data[skip:].decode(encoding, errors="speechrnn.escape").lstrip("\ufeff")


def read_text(path: str | Path) -> str:
    """:func:`text_of_bytes` of a file. Raises ``OSError`` as ``open`` does."""
    with open(path, "rb") as f:
        return text_of_bytes(f.read())


def text_file_lines(path: str | Path, what: str = "text") -> Iterator[str]:
    """The lines of a UTF-8 text file (``.gz`` too), one at a time; a file that cannot
    be read is a :class:`NotFoundError` naming it and ``what`` it was to be."""
    path = Path(path)
    try:
        if path.suffix == ".gz":
            f = gzip.open(path, "rt", encoding="utf-8-sig")
        else:
            f = open(path, encoding="utf-8-sig")  # noqa: SIM115
        with f:
            yield from f
    except (OSError, UnicodeDecodeError, EOFError) as err:
        raise NotFoundError(f"{path}: cannot read {what} ({err})") from None


def text_lines(text: str) -> list[str]:
    """Lines split at LF, CRLF or CR, and nowhere else (``str.splitlines`` also splits at
    form feeds, vertical tabs and other separators a transcript may hold)."""
    lines = _LINE_END.split(text)
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def undecodable(text: str) -> str | None:
    """Why ``text`` (from :func:`text_of_bytes`) is not text, or None: "not valid text (byte
    0xff)"."""
    m = _ESCAPED.search(text)
    return None if m is None else f"not valid text (byte 0x{ord(m.group()) - 0xDC00:02x})"


def _fmt(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        return "jsonl"
    if suffix in (".tsv", ".txt"):
        return "tsv"
    raise ManifestError(f"{path}: unknown manifest format {suffix!r} (use .jsonl or .tsv)")


def _row(obj: dict, base: Path, where: str) -> Utterance:
    for key in ("audio", "text", "duration"):
        if key not in obj or obj[key] is None:
            raise ManifestError(f"{where}: missing column {key!r}")
    if not isinstance(obj["audio"], str) or not obj["audio"]:
        raise ManifestError(f"{where}: audio is not a path: {_short(obj['audio'])}")
    audio = obj["audio"]
    text = str(obj["text"])
    duration = number(obj["duration"])
    if duration is None:
        raise ManifestError(f"{where}: duration is not a number: {_short(obj['duration'])}")
    if duration < 0:
        raise ManifestError(f"{where}: duration is negative: {duration}")

    def opt(key):
        value = obj.get(key)
        if value in (None, ""):
            return None
        x = number(value)
        if x is None:
            raise ManifestError(f"{where}: {key} is not a number: {_short(value)}")
        return x

    return Utterance(
        audio=os.path.normpath(base / audio),
        text=text,
        duration=duration,
        speaker=str(obj.get("speaker") or ""),
        id=str(obj.get("id") or ""),
        offset=opt("offset"),
        end=opt("end"),
    )


def number(value) -> float | None:
    """``value`` as a finite float, or None (not a number, NaN, infinite, too large)."""
    if isinstance(value, bool):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return x if math.isfinite(x) else None


def _short(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def read_manifest(path: str | Path) -> list[Utterance]:
    """Rows with ``audio`` resolved against the manifest's folder."""
    path = Path(path)
    fmt = _fmt(path)
    try:
        lines = text_lines(read_text(path))
    except FileNotFoundError:
        raise ManifestError(f"{path}: manifest not found") from None
    except OSError as err:
        raise ManifestError(f"{path}: cannot read the manifest ({err.strerror})") from None
    base = path.parent
    rows = []
    header: list[str] | None = None
    for n, line in enumerate(lines, 1):
        where = f"{path}:{n}"
        if not line.strip():
            continue
        bad = undecodable(line)
        if bad:
            raise ManifestError(f"{where}: {bad}")
        if fmt == "jsonl":
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise ManifestError(f"{where}: not valid JSON ({err.msg})") from None
            except (ValueError, RecursionError) as err:  # 5000-digit numbers, deep nesting
                raise ManifestError(f"{where}: not valid JSON ({err})") from None
            if not isinstance(obj, dict):
                raise ManifestError(f"{where}: expected a JSON object")
        elif header is None:
            header = line.split("\t")
            continue
        else:  # TSV as write_manifest writes it: no quoting, a tab between values
            obj = dict(zip(header, line.split("\t")))
        rows.append(_row(obj, base, where))
    return rows


def write_manifest(path: str | Path, rows: list[Utterance]) -> Path:
    """Write rows with audio paths relative to the manifest's folder."""
    path = Path(path)
    fmt = _fmt(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = path.parent.resolve()
    names = [f.name for f in fields(Utterance)]
    with atomic_write(path, "w", encoding="utf-8", newline="") as f:  # whole or not at all
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
    return path


def manifest_stats(rows: list[Utterance], bins: int = 10) -> dict:
    """Utterances, hours, speakers, duration spread and a duration histogram."""

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

"""Corpora described by tables: generic TSV/CSV/JSONL, speechocean762, Common Voice.

Column names are matched loosely (``path``/``audio``/``file``, ``text``/``sentence``/
``transcript``, ``speaker``/``client_id``, ...). A ``split`` column, or one table per split
(``train.tsv``, ``dev.tsv``, ``test.tsv``), keeps the corpus's own split; otherwise rows
are split by speaker. Tables may be UTF-8 (with or without a BOM) or UTF-16/32, with any
line ends (:func:`speechrnn.manifest.read_text`); a record that cannot be read is a rejected
row. Audio paths keep to the table's folder unless absolute (generic tables only); see
:mod:`speechrnn.corpora.importer`.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

from ..errors import InputError, NotFoundError
from ..manifest import Utterance, number, read_text, text_lines, undecodable
from .importer import (
    ImportOptions,
    ImportResult,
    Rejected,
    Rejection,
    clip,
    corpus_file,
    finish,
    inside,
    split_by_speaker,
)

ALIASES = {
    "audio": ("audio", "path", "audio_path", "audio_filepath", "file", "filename", "wav"),
    "text": ("text", "transcript", "transcription", "sentence", "normalized_text"),
    "speaker": ("speaker", "speaker_id", "spk", "client_id"),
    "duration": ("duration", "duration_s", "seconds"),
    "id": ("id", "utt_id", "utterance_id", "key"),
    "split": ("split", "subset"),
    "offset": ("offset", "start"),
    "end": ("end", "stop"),
}
SPLIT_NAMES = {"train": "train", "dev": "dev", "valid": "dev", "validation": "dev",
               "test": "test"}
# a split names a manifest file in the output folder: a plain name, not a path, and not
# the name of the import's own report files
SPLIT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
RESERVED = {"rejected", "import", "prepared"}


def read_records(path: Path) -> list[tuple[int, dict | str]]:
    """(row number, record) for each record of a TSV, CSV or JSONL file, with the reason
    in place of the record where one cannot be read. Raises ``OSError`` as ``open`` does."""
    text = read_text(path)
    suffix = path.suffix.lower()
    out: list[tuple[int, dict | str]] = []
    if suffix == ".jsonl":
        for n, line in enumerate(text_lines(text), 1):
            if not line.strip():
                continue
            bad = undecodable(line)
            if bad:
                out.append((n, f"line {n}: {bad}"))
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                out.append((n, f"line {n}: not valid JSON ({err.msg})"))
                continue
            except (ValueError, RecursionError) as err:  # 5000-digit numbers, deep nesting
                out.append((n, f"line {n}: not valid JSON ({clip(err, 100)})"))
                continue
            out.append((n, obj) if isinstance(obj, dict) else (n, f"line {n}: not a JSON object"))
        return out
    if suffix == ".csv":
        reader = csv.reader(io.StringIO(text, newline=""))
    else:  # TSV: no quoting, a tab between values
        reader = (line.split("\t") for line in text_lines(text))
    header = None
    n = 0
    while True:
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error as err:  # a field over csv's size limit, a stray quote
            n += 1
            out.append((n, f"row {n}: {err}"))
            continue
        if not any(v.strip() for v in values):
            continue
        bad = undecodable("".join(values))
        if header is None:
            if bad:
                return [(0, f"header: {bad}")]
            header = [v.strip() for v in values]
            continue
        n += 1
        out.append((n, f"row {n}: {bad}") if bad else (n, dict(zip(header, values))))
    return out


def read_table(path: Path) -> list[dict]:
    """The records of a TSV, CSV or JSONL file that can be read, as dicts."""
    return [rec for _, rec in read_records(path) if isinstance(rec, dict)]


def _pick(record: dict, field: str):
    for name in ALIASES[field]:
        if record.get(name) not in (None, ""):
            return record[name]
    return None


def _split(value) -> str | None:
    name = str(value).strip()
    name = SPLIT_NAMES.get(name.lower(), name)
    if not SPLIT_NAME.fullmatch(name) or name.lower() in RESERVED:
        raise Rejection(f"split {clip(repr(value), 80)} is not a plain name (letters, digits, "
                        "'.', '_', '-'; not rejected, import or prepared)")
    return name


def rows_from_table(path: Path, audio_root: Path, table: str, rejected: list[Rejected],
                    root: Path | None = None, absolute: bool = False
                    ) -> list[tuple[str | None, Utterance]]:
    """(split or None, candidate) for each usable record; malformed ones go to ``rejected``.
    Audio paths are relative to ``audio_root`` and must stay inside ``root`` (default
    ``audio_root``); absolute ones are followed where ``absolute``."""
    out = []
    try:
        records = read_records(path)
    except OSError as err:
        rejected.append(Rejected(table, "", str(path), f"cannot read {path.name}: "
                                                       f"{err.strerror or err}"))
        return out
    for n, rec in records:
        uid = f"{path.stem}-{n}"
        if isinstance(rec, str):
            rejected.append(Rejected(table, uid, "", f"{path.name} {rec}"))
            continue
        audio, text = _pick(rec, "audio"), _pick(rec, "text")
        uid = str(_pick(rec, "id") or uid)
        if audio is None:
            rejected.append(Rejected(table, uid, "", f"{path.name} row {n}: no audio column"))
            continue
        numbers, bad = {}, None
        for key in ("duration", "offset", "end"):
            value = _pick(rec, key)
            numbers[key] = None if value is None else number(value)
            if value is not None and numbers[key] is None:
                bad = f"bad number: {key} {clip(repr(value), 80)}"
        if bad:
            rejected.append(Rejected(table, uid, str(audio), bad))
            continue
        try:
            split = _pick(rec, "split")
            split = _split(split) if split is not None else None
            file = corpus_file(root or audio_root, audio, audio_root, absolute)
        except Rejection as err:
            rejected.append(Rejected(table, uid, str(audio), str(err)))
            continue
        row = Utterance(audio=str(file), text=str(text or ""),
                        duration=numbers["duration"] or 0.0,
                        speaker=str(_pick(rec, "speaker") or ""), id=uid,
                        offset=numbers["offset"], end=numbers["end"])
        out.append((split, row))
    return out


def import_tables(tables: list[Path], audio_root: Path | None, options: ImportOptions,
                  root: Path | None = None) -> ImportResult:
    """Tables into manifests. Audio paths are relative to ``audio_root`` and kept inside it;
    with ``audio_root`` None (generic tables) to each table's folder, and absolute paths
    are followed. A table that is a symbolic link out of ``root`` is not read."""
    rejected: list[Rejected] = []
    groups: dict[str, list[Utterance]] = {}
    unsplit: list[Utterance] = []
    for path in tables:
        if root is not None and not inside(root, path):
            rejected.append(Rejected(path.stem, "", str(path), f"{path.name} is a symbolic "
                                     f"link out of the corpus folder {root}: not read"))
            continue
        base = audio_root or path.parent
        name = SPLIT_NAMES.get(path.stem.lower())
        pairs = rows_from_table(path, base, path.stem, rejected, absolute=audio_root is None)
        named = any(split for split, _ in pairs)
        for split, row in pairs:
            if split or name:
                groups.setdefault(split or name, []).append(row)
            elif named:  # one empty cell does not turn the whole table into a mixed one
                rejected.append(Rejected(path.stem, row.id, row.audio, "no split, where the "
                                         "table's other rows name theirs"))
            else:
                unsplit.append(row)
    if unsplit:
        if groups:
            raise InputError("some tables name their split and others do not; import them "
                             "separately")
        groups = split_by_speaker(unsplit, options)
    elif options.dev_speakers or options.dev_fraction or options.test_speakers:
        # The corpus has its own split; carve dev (and test) speakers out of train if asked.
        carved = split_by_speaker(groups.pop("train", []), options, has_test="test" in groups)
        for split, rows in carved.items():
            groups.setdefault(split, []).extend(rows)
    return finish(groups, options, rejected)


def _tables_in(source: Path) -> list[Path]:
    if source.is_file():
        return [source]
    found = sorted(p for p in source.iterdir()
                   if p.suffix.lower() in (".tsv", ".csv", ".jsonl") and p.is_file())
    if not found:
        raise NotFoundError(f"{source}: no .tsv, .csv or .jsonl table found")
    return found


def import_generic(source: Path, options: ImportOptions) -> ImportResult:
    """A table file, or a folder of them; audio paths relative to each table's folder (and
    inside it), or absolute."""
    return import_tables(_tables_in(source), None, options,
                         root=None if source.is_file() else source)


def import_speechocean762(source: Path, options: ImportOptions) -> ImportResult:
    """speechocean762 as laid out in the shared corpora: ``manifest.tsv`` with a split column."""
    table = source / "manifest.tsv"
    if not table.is_file():
        raise NotFoundError(f"{source}: no manifest.tsv (expected the speechocean762 "
                                "layout: manifest.tsv and audio/SPEAKERxxxx/*.flac)")
    return import_tables([table], source, options, root=source)


def import_commonvoice(source: Path, options: ImportOptions) -> ImportResult:
    """A Common Voice language folder: ``train.tsv``, ``dev.tsv``, ``test.tsv`` and ``clips/``."""
    tables = [source / f"{s}.tsv" for s in ("train", "dev", "test")
              if (source / f"{s}.tsv").is_file()]
    if not tables:
        raise NotFoundError(f"{source}: no train.tsv, dev.tsv or test.tsv (Common Voice "
                                "layout)")
    clips = source / "clips"
    if not clips.is_dir():
        raise NotFoundError(f"{source}: no clips/ folder (Common Voice layout)")
    return import_tables(tables, clips, options, root=source)

"""Corpora described by tables: generic TSV/CSV/JSONL, speechocean762, Common Voice.

Column names are matched loosely (``path``/``audio``/``file``, ``text``/``sentence``/
``transcript``, ``speaker``/``client_id``, ...). A ``split`` column, or one table per split
(``train.tsv``, ``dev.tsv``, ``test.tsv``), keeps the corpus's own split; otherwise rows
are split by speaker.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from ..errors import InputError, NotFoundError
from ..manifest import Utterance
from .importer import ImportOptions, ImportResult, Rejected, finish, split_by_speaker

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


def read_table(path: Path) -> list[dict]:
    """Rows of a TSV, CSV or JSONL file as dicts."""
    if path.suffix.lower() == ".jsonl":
        with path.open(encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    delimiter = "," if path.suffix.lower() == ".csv" else "\t"
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter=delimiter, quoting=csv.QUOTE_MINIMAL
                                   if delimiter == "," else csv.QUOTE_NONE))


def _pick(record: dict, field: str):
    for name in ALIASES[field]:
        if record.get(name) not in (None, ""):
            return record[name]
    return None


def rows_from_table(path: Path, audio_root: Path, table: str,
                    rejected: list[Rejected]) -> list[tuple[str | None, Utterance]]:
    """(split or None, candidate) for each usable record; malformed ones go to ``rejected``."""
    out = []
    for n, rec in enumerate(read_table(path), 1):
        audio, text = _pick(rec, "audio"), _pick(rec, "text")
        uid = str(_pick(rec, "id") or f"{path.stem}-{n}")
        if audio is None:
            rejected.append(Rejected(table, uid, "", f"{path.name} row {n}: no audio column"))
            continue
        try:
            duration = float(_pick(rec, "duration") or 0.0)
            offset = _pick(rec, "offset")
            end = _pick(rec, "end")
            offset = float(offset) if offset is not None else None
            end = float(end) if end is not None else None
        except ValueError as err:
            rejected.append(Rejected(table, uid, str(audio), f"bad number: {err}"))
            continue
        split = _pick(rec, "split")
        row = Utterance(audio=str(audio_root / str(audio)), text=str(text or ""),
                        duration=duration, speaker=str(_pick(rec, "speaker") or ""), id=uid,
                        offset=offset, end=end)
        out.append((SPLIT_NAMES.get(str(split).lower(), str(split)) if split else None, row))
    return out


def import_tables(tables: list[Path], audio_root: Path | None, options: ImportOptions
                  ) -> ImportResult:
    rejected: list[Rejected] = []
    groups: dict[str, list[Utterance]] = {}
    unsplit: list[Utterance] = []
    for path in tables:
        root = audio_root or path.parent
        name = SPLIT_NAMES.get(path.stem.lower())
        for split, row in rows_from_table(path, root, path.stem, rejected):
            if split:
                groups.setdefault(split, []).append(row)
            elif name:
                groups.setdefault(name, []).append(row)
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
    """A table file, or a folder of them; audio paths relative to each table's folder."""
    return import_tables(_tables_in(source), None, options)


def import_speechocean762(source: Path, options: ImportOptions) -> ImportResult:
    """speechocean762 as laid out in the shared corpora: ``manifest.tsv`` with a split column."""
    table = source / "manifest.tsv"
    if not table.is_file():
        raise NotFoundError(f"{source}: no manifest.tsv (expected the speechocean762 "
                                "layout: manifest.tsv and audio/SPEAKERxxxx/*.flac)")
    return import_tables([table], source, options)


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
    return import_tables(tables, clips, options)

"""LJSpeech: one speaker reading non-fiction.

``--source`` is either the published layout, ``metadata.csv`` (``id|raw text|normalised
text``, no header, no quoting) beside ``wavs/<id>.wav``, or a folder with a
``manifest.tsv`` table (``utt_id``, ``path``, ``text``, ...; the shared corpora's
``ljspeech-part1``), whose audio may be any format :mod:`speechrnn.audio` reads. The
normalised text is used where there is one (numbers spelled out), else the raw text.

LJSpeech has no split of its own and one speaker, so every clip goes to ``train``; with
``dev_fraction`` / ``test_fraction`` those fractions of the clips (chosen by ``seed``) go
to ``dev`` / ``test`` instead.
"""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

from ..errors import NotFoundError
from ..manifest import Utterance, read_text, text_lines, undecodable
from .importer import ImportOptions, ImportResult, Rejected, Rejection, corpus_file, finish
from .tables import rows_from_table

SPEAKER = "LJ"


def read_metadata(source: Path, rejected: list[Rejected]) -> list[Utterance]:
    """The rows of ``metadata.csv``; malformed lines go to ``rejected``."""
    table = source / "metadata.csv"
    rows = []
    try:
        lines = text_lines(read_text(table))
    except OSError as err:
        raise NotFoundError(f"{table}: cannot read ({err.strerror or err})") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        fields = line.split("|")
        uid = fields[0].strip()
        try:
            bad = undecodable(line)
            if bad or len(fields) < 2 or not uid:
                raise Rejection(f"metadata.csv line {n}: " + (
                    bad or "expected id|text|normalised text"))
            text = fields[2] if len(fields) > 2 and fields[2].strip() else fields[1]
            audio = corpus_file(source, f"wavs/{uid}.wav", source)
        except Rejection as err:
            rejected.append(Rejected("train", uid, "", str(err)))
            continue
        rows.append(Utterance(audio=str(audio), text=text.strip(), duration=0.0,
                              speaker=SPEAKER, id=uid))
    return rows


def import_ljspeech(source: Path, options: ImportOptions) -> ImportResult:
    rejected: list[Rejected] = []
    if (source / "metadata.csv").is_file():
        rows = read_metadata(source, rejected)
    elif (source / "manifest.tsv").is_file():
        rows = [row for _, row in rows_from_table(source / "manifest.tsv", source, "train",
                                                  rejected)]
    else:
        raise NotFoundError(f"{source}: neither metadata.csv (with wavs/) nor manifest.tsv: "
                            "not an LJSpeech folder")
    rows = [row if row.speaker else replace(row, speaker=SPEAKER) for row in rows]
    order = list(range(len(rows)))
    random.Random(options.seed).shuffle(order)
    n_test = round(len(rows) * (options.test_fraction or 0.0))
    n_dev = round(len(rows) * (options.dev_fraction or 0.0))
    groups: dict[str, list[Utterance]] = {}
    for rank, i in enumerate(order):
        split = "test" if rank < n_test else "dev" if rank < n_test + n_dev else "train"
        groups.setdefault(split, []).append(rows[i])
    for split in groups:  # keep the corpus's order within each split
        groups[split].sort(key=lambda r: r.id)
    return finish(groups, options, rejected)

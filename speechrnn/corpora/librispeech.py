"""LibriSpeech: ``<subset>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt`` + ``*.flac``.

``--source`` is the ``LibriSpeech`` folder (one manifest per subset found in it, named after
the subset: ``train-clean-100``, ``dev-clean``, ...) or a single subset folder.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import NotFoundError
from ..manifest import Utterance
from .importer import ImportOptions, ImportResult, Rejected, finish


def read_subset(subset: Path, rejected: list[Rejected]) -> list[Utterance]:
    rows = []
    for trans in sorted(subset.glob("*/*/*.trans.txt")):
        for line in trans.read_text(encoding="utf-8").splitlines():
            utt, _, text = line.strip().partition(" ")
            if not utt:
                continue
            audio = trans.parent / f"{utt}.flac"
            rows.append(Utterance(audio=str(audio), text=text, duration=0.0,
                                  speaker=utt.split("-")[0], id=utt))
    if not rows:
        rejected.append(Rejected(subset.name, "", str(subset), "no *.trans.txt transcripts"))
    return rows


def import_librispeech(source: Path, options: ImportOptions) -> ImportResult:
    if any(source.glob("*/*/*.trans.txt")):
        subsets = [source]
    else:
        subsets = sorted(p for p in source.iterdir()
                         if p.is_dir() and any(p.glob("*/*/*.trans.txt")))
    if not subsets:
        raise NotFoundError(f"{source}: no LibriSpeech subset (<speaker>/<chapter>/"
                                "*.trans.txt) found")
    rejected: list[Rejected] = []
    groups = {s.name: read_subset(s, rejected) for s in subsets}
    return finish(groups, options, rejected)

"""LibriSpeech: ``<subset>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt`` + ``*.flac``.

``--source`` is the ``LibriSpeech`` folder (one manifest per subset found in it, named after
the subset: ``train-clean-100``, ``dev-clean``, ...) or a single subset folder. Files are
read only inside ``--source`` (a transcript or recording that is a symbolic link out of it,
or an utterance id that climbs out with ``..``, is a rejected row; see
:mod:`speechrnn.corpora.importer`).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import NotFoundError
from ..manifest import Utterance, read_text, text_lines, undecodable
from .importer import ImportOptions, ImportResult, Rejected, Rejection, corpus_file, finish, inside


def read_subset(subset: Path, rejected: list[Rejected], root: Path | None = None
                ) -> list[Utterance]:
    root = root or subset
    rows = []
    for trans in sorted(subset.glob("*/*/*.trans.txt")):
        if not inside(root, trans):
            rejected.append(Rejected(subset.name, "", str(trans), "transcript file is a "
                                     f"symbolic link out of the corpus folder {root}: not read"))
            continue
        try:
            lines = text_lines(read_text(trans))
        except OSError as err:
            rejected.append(Rejected(subset.name, "", str(trans),
                                     f"cannot read {trans.name}: {err.strerror or err}"))
            continue
        for n, line in enumerate(lines, 1):
            utt, _, text = line.strip().partition(" ")
            if not utt:
                continue
            bad = undecodable(line)
            try:
                if bad:
                    raise Rejection(f"{trans.name} line {n}: {bad}")
                audio = corpus_file(root, f"{utt}.flac", trans.parent)
            except Rejection as err:
                rejected.append(Rejected(subset.name, utt, "", str(err)))
                continue
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
    groups = {s.name: read_subset(s, rejected, source) for s in subsets}
    return finish(groups, options, rejected)

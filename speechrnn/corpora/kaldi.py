"""Kaldi data directories: ``wav.scp``, ``text``, ``utt2spk`` and optional ``segments``.

``--source`` is one data directory (it holds ``wav.scp``) or a folder of them (``train/``,
``test/``, ...), each becoming a manifest of the same name. Relative audio paths are looked
up from the data directory, then from its parent. Piped entries (``sox ... |``) are
rejected: run the pipe once and point ``wav.scp`` at the output.

``wav.scp`` is a list the recipe (the user) wrote, so its absolute paths are followed; a
relative path must stay inside the recipe folder (the one that holds ``data/``: the data
directory's grandparent), and so must the data directory's files (see
:mod:`speechrnn.corpora.importer`). The files may be in any encoding
:func:`speechrnn.manifest.read_text` reads; a line that is not text is a rejected row.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import NotFoundError
from ..manifest import Utterance, number, read_text, text_lines, undecodable
from .importer import (
    ImportOptions,
    ImportResult,
    Rejected,
    Rejection,
    corpus_file,
    finish,
    inside,
)


def _table(path: Path, root: Path, rejected: list[Rejected]) -> dict[str, str]:
    """``key value`` lines of a data directory's file; problems go to ``rejected``."""
    name = path.parent.name
    out: dict[str, str] = {}
    if not path.is_file():
        return out
    if not inside(root, path):
        rejected.append(Rejected(name, "", str(path), f"{path.name} is a symbolic link out "
                                                      f"of the recipe folder {root}: not read"))
        return out
    try:
        lines = text_lines(read_text(path))
    except OSError as err:
        rejected.append(Rejected(name, "", str(path), f"cannot read {path.name}: "
                                                      f"{err.strerror or err}"))
        return out
    for n, line in enumerate(lines, 1):
        parts = line.strip().split(maxsplit=1)
        if not parts:
            continue
        bad = undecodable(line)
        if bad:
            rejected.append(Rejected(name, "", str(path), f"{path.name} line {n}: {bad}"))
            continue
        out[parts[0]] = parts[1].strip() if len(parts) > 1 else ""
    return out


def _resolve(path: str, data_dir: Path, root: Path) -> Path:
    p = Path(path)
    base = data_dir
    if not p.is_absolute():
        for where in (data_dir, data_dir.parent):
            try:
                if (where / p).exists():
                    base = where
                    break
            except (OSError, ValueError):  # a name too long, a NUL byte: corpus_file says
                break
    return corpus_file(root, path, base, absolute=True)


def read_data_dir(data_dir: Path, rejected: list[Rejected]) -> list[Utterance]:
    name = data_dir.name
    root = data_dir.parent.parent
    wavs = _table(data_dir / "wav.scp", root, rejected)
    texts = _table(data_dir / "text", root, rejected)
    spk = _table(data_dir / "utt2spk", root, rejected)
    segments = {k: v.split() for k, v in _table(data_dir / "segments", root, rejected).items()}
    rows = []
    if segments:
        items = []
        for utt, parts in segments.items():
            start, end = (number(parts[1]), number(parts[2])) if len(parts) >= 3 else (None,) * 2
            if start is None or end is None:
                rejected.append(Rejected(name, utt, "", f"malformed segments line: {parts}"))
            else:
                items.append((utt, parts[0], start, end))
    else:
        items = [(utt, utt, None, None) for utt in wavs]
    for utt, rec, start, end in items:
        entry = wavs.get(rec)
        if entry is None:
            rejected.append(Rejected(name, utt, "", f"recording {rec!r} not in wav.scp"))
            continue
        if entry.endswith("|"):
            rejected.append(Rejected(name, utt, entry, "piped wav.scp entries are not supported"))
            continue
        if utt not in texts:
            rejected.append(Rejected(name, utt, entry, "no transcript in text"))
            continue
        try:
            audio = _resolve(entry, data_dir, root)
        except Rejection as err:
            rejected.append(Rejected(name, utt, entry, str(err)))
            continue
        rows.append(Utterance(audio=str(audio), text=texts[utt],
                              duration=0.0, speaker=spk.get(utt, utt.split("-")[0]), id=utt,
                              offset=start, end=end))
    return rows


def import_kaldi(source: Path, options: ImportOptions) -> ImportResult:
    dirs = [source] if (source / "wav.scp").is_file() else sorted(
        p for p in source.iterdir() if (p / "wav.scp").is_file())
    if not dirs:
        raise NotFoundError(f"{source}: no Kaldi data directory (a folder with wav.scp)")
    rejected: list[Rejected] = []
    groups = {d.name: read_data_dir(d, rejected) for d in dirs}
    return finish(groups, options, rejected)

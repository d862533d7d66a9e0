"""Kaldi data directories: ``wav.scp``, ``text``, ``utt2spk`` and optional ``segments``.

``--source`` is one data directory (it holds ``wav.scp``) or a folder of them (``train/``,
``test/``, ...), each becoming a manifest of the same name. Relative audio paths are looked
up from the data directory, then from its parent (the usual recipe root). Piped entries
(``sox ... |``) are rejected: run the pipe once and point ``wav.scp`` at the output.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import NotFoundError
from ..manifest import Utterance
from .importer import ImportOptions, ImportResult, Rejected, finish


def _table(path: Path) -> dict[str, str]:
    out = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            key, _, value = line.strip().partition(" ")
            if key:
                out[key] = value.strip()
    return out


def _resolve(path: str, data_dir: Path) -> Path:
    p = Path(path)
    if p.is_absolute():
        return p
    for base in (data_dir, data_dir.parent):
        if (base / p).exists():
            return base / p
    return data_dir / p


def read_data_dir(data_dir: Path, rejected: list[Rejected]) -> list[Utterance]:
    name = data_dir.name
    wavs = _table(data_dir / "wav.scp")
    texts = _table(data_dir / "text")
    spk = _table(data_dir / "utt2spk")
    segments = {k: v.split() for k, v in _table(data_dir / "segments").items()}
    rows = []
    if segments:
        items = []
        for utt, parts in segments.items():
            try:
                items.append((utt, parts[0], float(parts[1]), float(parts[2])))
            except (IndexError, ValueError):
                rejected.append(Rejected(name, utt, "", f"malformed segments line: {parts}"))
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
        rows.append(Utterance(audio=str(_resolve(entry, data_dir)), text=texts[utt],
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

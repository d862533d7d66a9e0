"""What every importer shares: validate candidate rows, split by speaker, write the result.

An importer turns a corpus on disk into *candidates* (``Utterance`` rows with the raw
transcript, grouped by manifest name) and hands them to :func:`finish`, which keeps the
good rows and writes one manifest per group plus ``rejected.tsv``: one line per dropped
row with its reason. One bad row never stops an import: a row whose metadata cannot be
read (text in an unknown encoding, a malformed line, a bad number), whose transcript does
not normalise or whose audio cannot be decoded is rejected with the reason.

Which files an import reads. A corpus's own metadata (a table's audio column, Kaldi's
``wav.scp``, LibriSpeech's utterance ids, the files an importer finds by listing a folder)
is followed only inside the corpus root: a relative path that climbs out with ``..``, or a
symbolic link in the corpus that points out of it, gives a rejected row ("leaves the corpus
folder"), and so does a metadata file that is such a link. The root is the folder the
importer was pointed at (resolved, so the corpus folder itself may be a link), or where
its layout keeps the audio: Common Voice's ``clips/``, FSDD's ``recordings/``, a generic
table's folder, a Kaldi data directory's recipe folder (the one that holds ``data/``).
Files outside it are read only when named *explicitly*: by an absolute path in a list the
user writes (a generic table, a Kaldi ``wav.scp``), or by a manifest
(:func:`speechrnn.manifest.read_manifest` follows its paths as written). The layouts of
published corpora (Common Voice, LibriSpeech, speechocean762, FSDD) never hold absolute
paths, so there an absolute path is rejected too.
"""

from __future__ import annotations

import csv
import json
import os
import random
import unicodedata
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..audio import SAMPLE_RATE, AudioError, load_audio
from ..config import Config, manifest_path
from ..errors import InputError
from ..manifest import Utterance, write_manifest
from ..progress import parallel_map
from ..text import DEFAULT_CHARACTERS, Alphabet, TextError, ctc_min_frames, normalize_text


@dataclass(frozen=True)
class ImportOptions:
    out: Path
    format: str = "jsonl"  # manifest format: jsonl | tsv
    seed: int = 0
    characters: str = DEFAULT_CHARACTERS
    digits: str = "spell"  # how digits in transcripts are handled: spell | reject
    # output frames per second of the model that will train on it: which transcripts fit
    # their audio under CTC (Config.ctc_frames_per_second; the default model's here)
    ctc_frames_per_second: float = Config().ctc_frames_per_second
    workers: int = 2
    test_speakers: tuple[str, ...] = ()
    dev_speakers: tuple[str, ...] = ()
    test_fraction: float | None = None  # of speakers, when the corpus has no split of its own
    dev_fraction: float | None = None
    progress: bool | None = None


@dataclass
class Rejected:
    manifest: str
    id: str
    audio: str
    reason: str

    def __post_init__(self):  # a 100 kB transcript in a reason makes no report readable
        self.id, self.audio, self.reason = (clip(self.id), clip(self.audio),
                                            clip(self.reason, 1000))


def clip(text: str, limit: int = 300) -> str:
    text = str(text)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


@dataclass
class ImportResult:
    out: Path
    manifests: dict[str, list[Utterance]]
    rejected: list[Rejected] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)

    def summary(self) -> dict:
        return {
            "out": str(self.out),
            "manifests": {
                name: {"utterances": len(rows),
                       "hours": round(sum(r.duration for r in rows) / 3600, 4),
                       "speakers": len({r.speaker for r in rows}),
                       "file": str(self.files.get(name, ""))}
                for name, rows in self.manifests.items()
            },
            "rejected": len(self.rejected),
            "rejected_report": str(self.files.get("rejected", "")),
        }


class Rejection(Exception):
    """Raised inside validation with the reason a row is dropped."""


def _real(path: str | os.PathLike) -> str:
    try:
        return os.path.realpath(path)
    except (OSError, ValueError) as err:  # a NUL byte, a name the file system cannot encode
        raise Rejection(f"bad file name ({err})") from None


def inside(root: Path, path: Path) -> bool:
    """Does ``path``, once ``..`` and symbolic links are resolved, lie in ``root``?"""
    try:
        top, real = _real(root), _real(path)
    except Rejection:
        return False
    return real == top or real.startswith(top.rstrip(os.sep) + os.sep)


def corpus_file(root: Path, written, base: Path | None = None,
                absolute: bool = False) -> Path:
    """The file a corpus's metadata names with ``written``: relative to ``base`` (default
    ``root``) and inside ``root`` (the module docstring says why), or absolute where
    ``absolute`` (a list the user wrote). Raises :class:`Rejection` with the reason."""
    if not isinstance(written, str) or not written.strip():
        raise Rejection(f"no audio path: {clip(repr(written), 80)}")
    bad = control_character(written)
    if bad:
        raise Rejection(f"audio path holds {bad}")
    path = Path(written)
    if path.is_absolute():
        if absolute:
            return path
        raise Rejection(f"absolute audio path {clip(written, 200)!r}: this corpus's metadata "
                        f"may only name files inside {root}")
    full = (base or root) / path
    real = _real(full)
    if not inside(root, Path(real)):
        hint = "; name a file outside by its absolute path" if absolute else ""
        raise Rejection(f"audio path {clip(written, 200)!r} leaves the corpus folder {root} "
                        f"(by '..' or a symbolic link){hint}")
    return Path(real)


def control_character(text: str) -> str | None:
    """"a control character U+0009" for the first control character or lone surrogate in
    ``text`` (they break a manifest line or its encoding), else None."""
    for ch in text:
        if unicodedata.category(ch) in ("Cc", "Cs"):
            return f"a control character U+{ord(ch):04X}"
    return None


def check_transcript(text: str, alphabet: Alphabet, digits: str) -> str:
    try:
        norm = normalize_text(text, digits=digits)
    except TextError as err:
        raise Rejection(str(err)) from None
    if not norm:
        raise Rejection("empty transcript")
    bad = alphabet.unknown(norm)
    if bad:
        raise Rejection(f"characters outside the alphabet: {''.join(sorted(bad))!r}")
    return norm


def check_fits_ctc(text: str, duration: float, alphabet: Alphabet,
                   frames_per_second: float) -> None:
    need = ctc_min_frames(alphabet.encode(text))
    have = int(duration * frames_per_second)
    if need > have:
        raise Rejection(f"transcript too long for the audio under CTC: {need} frames needed, "
                        f"{duration:.2f} s gives {have} at {frames_per_second:.1f} frames/s")


def validate(rows: Sequence[Utterance], options: ImportOptions, desc: str = "validating",
             decode: bool = True) -> tuple[list[Utterance], list[tuple[Utterance, str]]]:
    """Normalise transcripts, decode audio (which catches corrupt files) and check CTC fit.

    Kept rows carry the normalised text and the decoded duration.
    """
    alphabet = Alphabet(options.characters)

    def check(row: Utterance) -> Utterance:
        for what, value in (("audio path", row.audio), ("speaker", row.speaker),
                            ("id", row.id)):
            bad = control_character(value)
            if bad:
                raise Rejection(f"{what} holds {bad}")
        text = check_transcript(row.text, alphabet, options.digits)
        duration = row.duration
        if decode:
            try:
                audio = load_audio(row.audio, SAMPLE_RATE, *row.segment)
            except AudioError as err:
                reason = err.reason
                raise Rejection(("missing audio: " if reason == "file not found"
                                 else "unreadable audio: ") + reason) from None
            duration = len(audio) / SAMPLE_RATE
        check_fits_ctc(text, duration, alphabet, options.ctc_frames_per_second)
        return replace(row, text=text, duration=round(duration, 4))

    results, errors = parallel_map(check, list(rows), options.workers, desc, (Rejection,),
                                   options.progress)
    kept = [r for r in results if r is not None]
    rejected = [(rows[i], str(err)) for i, err in errors]
    return kept, rejected


def _choose(speakers: list[str], fraction: float, rng: random.Random) -> list[str]:
    if not fraction or not speakers:
        return []
    n = max(1, round(len(speakers) * fraction))
    return rng.sample(speakers, min(n, len(speakers) - 1))


def split_by_speaker(rows: list[Utterance], options: ImportOptions, has_test: bool = False
                     ) -> dict[str, list[Utterance]]:
    """Speaker-disjoint train/dev/test split of ``rows`` (named speakers or fractions)."""
    speakers = sorted({r.speaker for r in rows})
    rng = random.Random(options.seed)
    unknown = set(options.test_speakers + options.dev_speakers) - set(speakers)
    if unknown:
        raise InputError(f"unknown speaker(s): {', '.join(sorted(unknown))}; "
                         f"this corpus has {', '.join(speakers[:20])}")
    test = list(options.test_speakers)
    if not test and not has_test:
        fraction = 0.1 if options.test_fraction is None else options.test_fraction
        test = _choose(speakers, fraction, rng)
    rest = [s for s in speakers if s not in test]
    dev = list(options.dev_speakers)
    if not dev:
        fraction = (0.0 if has_test else 0.1) if options.dev_fraction is None \
            else options.dev_fraction
        dev = _choose(rest, fraction, rng)
    out: dict[str, list[Utterance]] = defaultdict(list)
    for r in rows:
        split = "test" if r.speaker in test else "dev" if r.speaker in dev else "train"
        out[split].append(r)
    return {k: out[k] for k in ("train", "dev", "test") if out[k]}


def finish(candidates: dict[str, list[Utterance]], options: ImportOptions,
           pre_rejected: Sequence[Rejected] = (), decode: bool = True) -> ImportResult:
    """Validate every group, write manifests and the rejection report."""
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    result = ImportResult(out, {}, list(pre_rejected))
    for name, rows in candidates.items():
        kept, rejected = validate(rows, options, desc=f"checking {name}", decode=decode)
        result.manifests[name] = kept
        result.rejected += [Rejected(name, r.id, r.audio, reason) for r, reason in rejected]
    return write_result(result, options)


def write_result(result: ImportResult, options: ImportOptions) -> ImportResult:
    for name, rows in result.manifests.items():
        result.files[name] = write_manifest(manifest_path(result.out, name, options.format), rows)
    report = result.out / "rejected.tsv"
    with report.open("w", newline="", encoding="utf-8", errors="backslashreplace") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(["manifest", "id", "audio", "reason"])
        for r in result.rejected:
            w.writerow([r.manifest, r.id, r.audio, r.reason])
    result.files["rejected"] = report
    (result.out / "import.json").write_text(json.dumps(result.summary(), indent=2) + "\n")
    return result

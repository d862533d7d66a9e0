"""Free Spoken Digit Dataset: isolated digits, and connected digit strings built from them.

Recordings are named ``{digit}_{speaker}_{take}.wav``; the transcript is the digit's word.
The importer writes ``isolated.jsonl`` (every good recording), ``isolated-test.jsonl``
(the test speakers' recordings that build the test strings, one by one) and
speaker-disjoint ``train``/``dev``/``test`` manifests of connected strings ("four one five
nine"): real recordings of one speaker joined by short random pauses, written as 16 kHz
WAV under ``audio/``; dev and test strings hold 2 to 7 digits with 0.1-0.3 s of quiet at
each end, training strings 1 to 7 digits with 0-0.3 s, none at 30 % of the ends. Test
speakers (``--test-speakers``, else one chosen by the seed) never appear in training. Dev
is made of ``--dev-speakers`` if given, else of the takes ending in 9 (10 %) of the
training speakers, which train never uses. A speaker named both dev and test is held out
whole, its even takes building dev strings and its odd takes test strings: model
selection on an unseen speaker, tested on recordings it never saw.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..audio import SAMPLE_RATE, load_audio, save_audio
from ..errors import InputError, NotFoundError
from ..manifest import Utterance
from ..progress import parallel_map
from .importer import ImportOptions, ImportResult, Rejected, inside, validate, write_result

DIGITS = "zero one two three four five six seven eight nine".split()
NAME = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)$", re.ASCII)


def scan(source: Path, rejected: list[Rejected]) -> list[Utterance]:
    folder = source / "recordings" if (source / "recordings").is_dir() else source
    rows = []
    for path in sorted(folder.glob("*.wav")):
        m = NAME.match(path.stem)
        if not inside(folder, path):  # the folder itself may be a link; its files may not
            rejected.append(Rejected("isolated", path.stem, str(path), "a symbolic link out "
                                     f"of the corpus folder {folder}: not read"))
            continue
        if not m:
            rejected.append(Rejected("isolated", path.stem, str(path),
                                     "file name is not {digit}_{speaker}_{take}.wav"))
            continue
        rows.append(Utterance(audio=str(path), text=DIGITS[int(m.group(1))], duration=0.0,
                              speaker=m.group(2), id=path.stem))
    if not rows:
        raise NotFoundError(f"{source}: no FSDD recordings "
                                "({digit}_{speaker}_{take}.wav)")
    return rows


def _take(row: Utterance) -> int:
    return int(NAME.match(row.id).group(3))


def speed_perturb(audio: np.ndarray, factor: float) -> np.ndarray:
    """Play ``audio`` ``factor`` times faster (tempo and pitch together, as Kaldi's speed
    perturbation): a cheap way to hear more vocal tracts than the corpus has speakers."""
    import librosa

    return librosa.resample(audio, orig_sr=SAMPLE_RATE, target_sr=int(SAMPLE_RATE / factor),
                            res_type="soxr_hq")


@dataclass(frozen=True)
class Strings:
    """How connected strings are made: ``words`` recordings each (inclusive range), pauses
    between them, and the quiet before the first and after the last: ``edge`` seconds, or
    none at all for a ``bare`` share of the edges (speech from the first sample)."""

    words: tuple[int, int] = (2, 7)
    edge: tuple[float, float] = (0.1, 0.3)
    bare: float = 0.0


# training strings: one-word items and edges from none to 0.3 s, so that the model hears
# speech that starts at the first sample and single digits (dev and test keep (2, 7))
TRAINING = Strings(words=(1, 7), edge=(0.0, 0.3), bare=0.3)


def connected(pool: list[Utterance], count: int, rng: np.random.Generator, folder: Path,
              prefix: str, workers: int, progress, perturb: float = 0.0,
              strings: Strings = Strings()) -> list[Utterance]:
    """``count`` strings of recordings from ``pool`` joined by random pauses (``strings``);
    with ``perturb`` > 0 each recording is sped up or slowed down by up to that fraction
    and its gain changed by up to 6 dB."""
    plans = []
    low, high = strings.words
    for i in range(count):
        picks = rng.choice(len(pool), size=int(rng.integers(low, high + 1)), replace=True)
        gaps = rng.uniform(0.05, 0.35, size=len(picks) + 1)
        gaps[0], gaps[-1] = rng.uniform(*strings.edge, size=2)
        if strings.bare:
            gaps[[0, -1]] *= rng.uniform(size=2) >= strings.bare
        speeds = 1 + rng.uniform(-perturb, perturb, size=len(picks))
        gains = 10 ** (rng.uniform(-6, 6, size=len(picks)) / 20) if perturb else \
            np.ones(len(picks))
        plans.append((i, [pool[j] for j in picks], gaps, speeds, gains,
                      int(rng.integers(2**31))))

    def build(plan) -> Utterance:
        i, parts, gaps, speeds, gains, seed = plan
        noise = np.random.default_rng(seed)
        pieces = []
        for k, (gap, part) in enumerate(zip(gaps, parts + [None])):
            n = int(gap * SAMPLE_RATE)
            pieces.append((noise.standard_normal(n) * 1e-4).astype(np.float32))
            if part is not None:
                audio = load_audio(part.audio)
                if speeds[k] != 1.0:
                    audio = speed_perturb(audio, speeds[k])
                pieces.append(np.clip(audio * gains[k], -1, 1))
        audio = np.concatenate(pieces)
        path = folder / f"{prefix}-{i:05d}.wav"
        save_audio(path, audio)
        return Utterance(audio=str(path), text=" ".join(p.text for p in parts),
                         duration=round(len(audio) / SAMPLE_RATE, 4), speaker=parts[0].speaker,
                         id=path.stem)

    rows, _ = parallel_map(build, plans, workers, f"building {prefix}", (), progress)
    return rows


def long_recording(rows: list[Utterance], seconds: float, seed: int = 0,
                   pause: tuple[float, float] = (0.2, 0.8), top_db: float = 30.0
                   ) -> tuple[np.ndarray, list[tuple[str, float, float]]]:
    """One long recording made of isolated ``rows`` (in a random order, repeated as needed)
    with random pauses between them, and its truth: (word, start, end) of each digit, where
    the spoken digit lies within its recording by energy (``librosa.effects.trim``).
    For testing transcription of long files and word timings."""
    import librosa

    rng = np.random.default_rng(seed)
    cache: dict[str, tuple[np.ndarray, int, int]] = {}
    pieces, truth, at = [], [], 0
    while at < seconds * SAMPLE_RATE:
        row = rows[int(rng.integers(len(rows)))]
        if row.audio not in cache:
            audio = load_audio(row.audio)
            _, (a, b) = librosa.effects.trim(audio, top_db=top_db)
            cache[row.audio] = (audio, int(a), int(b))
        audio, a, b = cache[row.audio]
        gap = (rng.standard_normal(int(rng.uniform(*pause) * SAMPLE_RATE)) * 1e-4)
        pieces += [gap.astype(np.float32), audio]
        at += len(gap)
        truth.append((row.text, round((at + a) / SAMPLE_RATE, 3),
                      round((at + b) / SAMPLE_RATE, 3)))
        at += len(audio)
    return np.concatenate(pieces), truth


def import_fsdd(source: Path, options: ImportOptions, per_speaker: int = 300,
                perturb: float = 0.15) -> ImportResult:
    """Isolated manifest plus connected train/dev/test (``per_speaker`` train strings for each
    training speaker; a third of that for each dev and test speaker). Training strings are
    speed-perturbed by up to ``perturb`` (dev and test strings never)."""
    rejected: list[Rejected] = []
    candidates = scan(source, rejected)
    isolated, bad = validate(candidates, options, desc="checking recordings")
    rejected += [Rejected("isolated", r.id, r.audio, reason) for r, reason in bad]
    by_speaker: dict[str, list[Utterance]] = defaultdict(list)
    for row in isolated:
        by_speaker[row.speaker].append(row)
    speakers = sorted(by_speaker)
    unknown = set(options.test_speakers + options.dev_speakers) - set(speakers)
    if unknown:
        raise InputError(f"unknown FSDD speaker(s) {sorted(unknown)}; found {speakers}")
    rng = np.random.default_rng(options.seed)
    test = list(options.test_speakers) or [speakers[int(rng.integers(len(speakers)))]]
    dev = list(options.dev_speakers)
    train = [s for s in speakers if s not in test and s not in dev]
    if not train:
        raise InputError("no FSDD speaker is left for training")
    pools: dict[tuple[str, str], list[Utterance]] = {}
    for s in train:
        pools["train", s] = [r for r in by_speaker[s] if dev or _take(r) % 10 != 9]
        if not dev:
            pools["dev", s] = [r for r in by_speaker[s] if _take(r) % 10 == 9]
    for s in dev:
        # a speaker both dev and test: even takes for dev, odd takes for test
        pools["dev", s] = [r for r in by_speaker[s] if s not in test or _take(r) % 2 == 0]
    for s in test:
        pools["test", s] = [r for r in by_speaker[s] if s not in dev or _take(r) % 2 == 1]
    manifests: dict[str, list[Utterance]] = {"isolated": isolated}
    for (split, speaker), pool in sorted(pools.items()):
        if not pool:
            continue
        count = per_speaker if split == "train" else max(1, per_speaker // 3)
        if split == "dev" and not options.dev_speakers:
            count = max(1, per_speaker // 10)
        folder = Path(options.out) / "audio" / split
        train = split == "train"
        rows = connected(pool, count, rng, folder, f"{speaker}", options.workers,
                         options.progress, perturb if train else 0.0,
                         TRAINING if train else Strings())
        manifests.setdefault(split, []).extend(replace(r, id=f"{split}-{r.id}") for r in rows)
        if split == "test":  # the same recordings one by one, as they are
            manifests.setdefault("isolated-test", []).extend(pool)
    result = ImportResult(Path(options.out), manifests, rejected)
    return write_result(result, options)

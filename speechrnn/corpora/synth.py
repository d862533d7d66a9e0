"""The offline default corpus: speech synthesised with Debian's espeak-ng and flite.

Connected digit strings and short everyday sentences (``sentences.txt``) in many voices:
espeak-ng accents x voice variants, and flite's kal, awb, rms and slt. Dev and test use
voices that training never hears (``DEV_VOICES``, ``TEST_VOICES``), so their WER measures
generalisation to new voices over a closed vocabulary. Each utterance gets a random
speaking rate and pitch, a random gain and light white noise (20-40 dB SNR). The same seed
gives the same corpus.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from ..audio import SAMPLE_RATE, AudioError, load_audio, save_audio
from ..config import DataConfig
from ..errors import SpeechRNNError
from ..manifest import Utterance
from ..progress import parallel_map
from .fsdd import DIGITS, connected
from .importer import ImportOptions, ImportResult, Rejected, finish


class SynthError(SpeechRNNError, RuntimeError):
    """Synthesis cannot run (no engine installed) or an engine failed."""


@dataclass(frozen=True)
class Voice:
    engine: str  # "espeak-ng" | "flite"
    name: str  # espeak-ng "<language>+<variant>", flite voice name

    @property
    def id(self) -> str:
        return f"{self.engine}-{self.name}"


ESPEAK_LANGUAGES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc",
                    "en-gb-x-gbclan", "en-gb-x-gbcwmd")
ESPEAK_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5",
                   "klatt", "klatt3")
FLITE_VOICES = ("kal", "awb", "rms", "slt")
TEST_VOICES = (Voice("flite", "rms"), Voice("espeak-ng", "en-gb-scotland+f2"),
               Voice("espeak-ng", "en-us+m7"), Voice("espeak-ng", "en-029+f4"),
               Voice("espeak-ng", "en-gb-x-rp+klatt3"))
DEV_VOICES = (Voice("flite", "awb"), Voice("espeak-ng", "en-gb+m4"),
              Voice("espeak-ng", "en-us-nyc+f1"), Voice("espeak-ng", "en-gb-x-gbcwmd+m2"))


def all_voices() -> list[Voice]:
    voices = [Voice("espeak-ng", f"{lang}+{v}") for lang in ESPEAK_LANGUAGES
              for v in ESPEAK_VARIANTS]
    return voices + [Voice("flite", v) for v in FLITE_VOICES]


def split_voices(engines: set[str]) -> dict[str, list[Voice]]:
    held = set(TEST_VOICES) | set(DEV_VOICES)
    usable = [v for v in all_voices() if v.engine in engines]
    return {"train": [v for v in usable if v not in held],
            "dev": [v for v in DEV_VOICES if v.engine in engines],
            "test": [v for v in TEST_VOICES if v.engine in engines]}


def sentences() -> list[str]:
    text = resources.files(__package__).joinpath("sentences.txt").read_text(encoding="utf-8")
    return [s.strip() for s in text.splitlines() if s.strip() and not s.startswith("#")]


def available_engines() -> set[str]:
    return {e for e in ("espeak-ng", "flite") if shutil.which(e)}


def required_engines() -> set[str]:
    """The installed engines; SynthError when there is none."""
    engines = available_engines()
    if not engines:
        raise SynthError("neither espeak-ng nor flite is installed "
                         "(Debian: apt-get install espeak-ng flite)")
    return engines


def level_and_noise(audio: np.ndarray, gain: float, snr_db: float, seed: int) -> np.ndarray:
    """``audio`` scaled to peak ``gain``, plus white noise ``snr_db`` below its power."""
    audio = audio / (float(np.max(np.abs(audio))) or 1.0) * gain
    power = float(np.mean(audio**2)) or 1e-8
    noise = np.random.default_rng(seed).standard_normal(len(audio)) \
        * np.sqrt(power / 10 ** (snr_db / 10))
    return audio + noise.astype(np.float32)


def synthesize(voice: Voice, text: str, rate: float, pitch: float) -> np.ndarray:
    """Speak ``text``; ``rate`` scales speed (1 = normal), ``pitch`` is 0-1."""
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "out.wav"
        if voice.engine == "espeak-ng":
            cmd = ["espeak-ng", "-v", voice.name, "-s", str(int(165 * rate)),
                   "-p", str(int(25 + 50 * pitch)), "-w", str(wav), text]
        else:
            cmd = ["flite", "-voice", voice.name, "--setf", f"duration_stretch={1 / rate:.3f}",
                   "-t", text, "-o", str(wav)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise SynthError(f"{voice.id}: {' '.join(cmd[:3])} failed: {proc.stderr.strip()}")
        try:
            return load_audio(wav)
        except AudioError as err:
            raise SynthError(f"{voice.id}: engine wrote no usable audio ({err.reason})") from None


def _plan(split: str, count: int, voices: list[Voice], texts: list[str],
          rng: np.random.Generator, digit_share: float) -> list[dict]:
    plans = []
    for i in range(count):
        if rng.random() < digit_share:
            text = " ".join(DIGITS[d] for d in rng.integers(0, 10, size=int(rng.integers(2, 8))))
        else:
            text = texts[int(rng.integers(len(texts)))]
        plans.append({"id": f"{split}-{i:05d}", "split": split,
                      "voice": voices[int(rng.integers(len(voices)))], "text": text,
                      "rate": float(rng.uniform(0.8, 1.2)), "pitch": float(rng.uniform(0, 1)),
                      "snr_db": float(rng.uniform(20, 40)), "gain": float(rng.uniform(0.3, 0.9)),
                      "seed": int(rng.integers(2**31))})
    return plans


def make_synth_corpus(options: ImportOptions, train: int = DataConfig.synth_train,
                      dev: int = DataConfig.synth_dev, test: int = DataConfig.synth_test,
                      digit_share: float = DataConfig.synth_digit_share) -> ImportResult:
    """Synthesise train/dev/test manifests and audio under ``options.out``."""
    engines = required_engines()
    voices = split_voices(engines)
    rng = np.random.default_rng(options.seed)
    texts = sentences()
    out = Path(options.out)
    plans = []
    for split, count in (("train", train), ("dev", dev), ("test", test)):
        if count and not voices[split]:
            raise SynthError(f"no {split} voice available with {sorted(engines)}")
        if count:
            plans += _plan(split, count, voices[split], texts, rng, digit_share)

    def render(plan: dict) -> Utterance:
        audio = synthesize(plan["voice"], plan["text"], plan["rate"], plan["pitch"])
        path = out / "audio" / plan["split"] / f"{plan['id']}.wav"
        save_audio(path, level_and_noise(audio, plan["gain"], plan["snr_db"], plan["seed"]))
        return Utterance(audio=str(path), text=plan["text"], duration=len(audio) / SAMPLE_RATE,
                         speaker=plan["voice"].id, id=plan["id"])

    rows, errors = parallel_map(render, plans, options.workers, "synthesising", (SynthError,),
                                options.progress)
    rejected = [Rejected(plans[i]["split"], plans[i]["id"], "", str(err)) for i, err in errors]
    groups: dict[str, list[Utterance]] = {}
    for plan, row in zip(plans, rows, strict=True):
        if row is not None:
            groups.setdefault(plan["split"], []).append(row)
    return finish(groups, options, rejected, decode=False)


def make_joined_digits(options: ImportOptions, count: int, takes: int = 3,
                       bandwidth_rate: int = 0, perturb: float = 0.15) -> ImportResult:
    """``count`` training strings of synthetic digits made the way FSDD strings are made.

    Each training voice says each digit ``takes`` times on its own (random rate, pitch, gain
    and 20-40 dB noise), band-limited to ``bandwidth_rate`` (FSDD: 8000; 0 keeps it) and
    trimmed of silence as FSDD's recordings are; strings of 2-7 of one voice's recordings
    are then joined with :func:`speechrnn.corpora.fsdd.connected`. Such strings differ from
    a real corpus's in their voices only, not in how they were put together. Dev and test
    voices are never used. Writes ``train`` under ``options.out``.
    """
    import librosa

    engines = required_engines()
    voices = split_voices(engines)["train"]
    rng = np.random.default_rng(options.seed)
    out = Path(options.out)
    plans = [{"voice": v, "digit": d, "take": k, "rate": float(rng.uniform(0.8, 1.2)),
              "pitch": float(rng.uniform(0, 1)), "snr_db": float(rng.uniform(20, 40)),
              "gain": float(rng.uniform(0.3, 0.9)), "seed": int(rng.integers(2**31))}
             for v in voices for d in range(10) for k in range(takes)]

    def render(plan: dict) -> Utterance:
        audio = synthesize(plan["voice"], DIGITS[plan["digit"]], plan["rate"], plan["pitch"])
        audio = level_and_noise(audio, plan["gain"], plan["snr_db"], plan["seed"])
        if bandwidth_rate and bandwidth_rate < SAMPLE_RATE:
            audio = librosa.resample(librosa.resample(audio, orig_sr=SAMPLE_RATE,
                                                      target_sr=bandwidth_rate),
                                     orig_sr=bandwidth_rate, target_sr=SAMPLE_RATE)
        audio, _ = librosa.effects.trim(audio, top_db=30)
        path = out / "audio" / "digits" / f"{plan['voice'].id}-{plan['digit']}-{plan['take']}.wav"
        save_audio(path, audio)
        return Utterance(audio=str(path), text=DIGITS[plan["digit"]],
                         duration=len(audio) / SAMPLE_RATE, speaker=plan["voice"].id,
                         id=path.stem)

    rows, errors = parallel_map(render, plans, max(options.workers, 4), "synthesising digits",
                                (SynthError,), options.progress)
    rejected = [Rejected("digits", f"{plans[i]['voice'].id}-{plans[i]['digit']}", "", str(err))
                for i, err in errors]
    pools: dict[str, list[Utterance]] = {}
    for row in rows:
        if row is not None:
            pools.setdefault(row.speaker, []).append(row)
    if not pools:
        raise SynthError("no synthetic digit could be made")
    per_voice = -(-count // len(pools))
    strings: list[Utterance] = []
    for voice, pool in sorted(pools.items()):
        strings += connected(pool, min(per_voice, count - len(strings)), rng,
                             out / "audio" / "train", voice, options.workers, False, perturb)
    return finish({"train": strings}, options, rejected, decode=False)

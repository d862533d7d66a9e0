"""Audio in: any file libsndfile reads, as float32 mono at 16 kHz.

Every failure raises :class:`AudioError`, which names the file and the reason, so callers
can report a bad file on one line and carry on with the rest.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf

from .config import FeatureConfig
from .errors import SpeechRNNError

SAMPLE_RATE = FeatureConfig.sample_rate  # what the library resamples audio to by default
# what a folder search for audio files picks up: the formats libsndfile reads
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif",
                  ".au", ".snd", ".caf", ".w64", ".rf64", ".sph", ".nist", ".voc"}

Source = str | os.PathLike | BinaryIO


class AudioError(SpeechRNNError):
    """An audio input that cannot be used; ``str(err)`` is ``"<file>: <reason>"``."""

    def __init__(self, path: object, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass(frozen=True)
class AudioInfo:
    sample_rate: int
    channels: int
    frames: int
    format: str
    subtype: str

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def _name(source: Source, name: str | None) -> str:
    if name:
        return name
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return getattr(source, "name", "<audio bytes>")


def _check_path(source: Source, name: str) -> None:
    if not isinstance(source, (str, os.PathLike)):
        return
    path = Path(source)
    if not path.exists():
        raise AudioError(name, "file not found")
    if path.is_dir():
        raise AudioError(name, "is a directory, not an audio file")
    if path.stat().st_size == 0:
        raise AudioError(name, "empty file (0 bytes)")


def _open(source: Source, name: str) -> sf.SoundFile:
    _check_path(source, name)
    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(source)
    try:
        return sf.SoundFile(source)
    except sf.LibsndfileError as err:
        detail = str(err).split(": ", 1)[-1] if err.args else "unknown error"
        raise AudioError(name, f"not a readable audio file ({detail})") from None
    except (RuntimeError, TypeError, ValueError) as err:
        raise AudioError(name, f"not a readable audio file ({err})") from None


def audio_info(source: Source, name: str | None = None) -> AudioInfo:
    """Read the header only: rate, channels, length. Fast; does not decode samples."""
    name = _name(source, name)
    with _open(source, name) as f:
        return AudioInfo(f.samplerate, f.channels, f.frames, f.format, f.subtype)


def audio_duration(source: Source, name: str | None = None) -> float:
    """Duration in seconds from the header, without decoding the whole file."""
    return audio_info(source, name).duration


def load_audio(
    source: Source,
    sample_rate: int = SAMPLE_RATE,
    offset: float = 0.0,
    end: float | None = None,
    name: str | None = None,
) -> np.ndarray:
    """Decode ``source`` (a path, raw bytes or a binary file object) to float32 mono.

    Channels are averaged; the rate is converted with soxr (librosa's ``soxr_hq``).
    ``offset`` and ``end`` (seconds) select a segment. Raises :class:`AudioError`.
    """
    name = _name(source, name)
    with _open(source, name) as f:
        native_rate = f.samplerate
        start = int(round(offset * native_rate))
        stop = f.frames if end is None else min(f.frames, int(round(end * native_rate)))
        if start < 0 or (end is not None and end <= offset):
            raise AudioError(name, f"bad segment: offset={offset} end={end}")
        try:
            if start:
                f.seek(start)
            data = f.read(max(stop - start, 0), dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as err:
            raise AudioError(name, f"corrupt or truncated audio data ({err})") from None
    return prepare_audio(data, native_rate, sample_rate, name)


def stream_audio(source: Source, sample_rate: int = SAMPLE_RATE, block_seconds: float = 30.0,
                 name: str | None = None):
    """Decode ``source`` block by block: float32 mono blocks of about ``block_seconds`` at
    ``sample_rate``, resampled by one continuous soxr stream (no seams between blocks).
    Memory stays bounded whatever the file's length. Raises :class:`AudioError`."""
    import soxr

    name = _name(source, name)
    with _open(source, name) as f:
        native_rate = f.samplerate
        if native_rate <= 0:
            raise AudioError(name, f"bad sample rate {native_rate}")
        stream = None if native_rate == sample_rate else \
            soxr.ResampleStream(native_rate, sample_rate, 1, dtype="float32")
        size = max(int(block_seconds * native_rate), 1)
        any_samples = False
        while True:
            try:
                data = f.read(size, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError) as err:
                raise AudioError(name, f"corrupt or truncated audio data ({err})") from None
            last = len(data) < size
            if len(data) == 0 and not any_samples:
                raise AudioError(name, "no audio samples (zero-length audio)")
            audio = data.mean(axis=1)
            if not np.isfinite(audio).all():
                raise AudioError(name, "audio contains non-finite samples (NaN or Inf)")
            any_samples = any_samples or len(audio) > 0
            if stream is not None:
                audio = stream.resample_chunk(audio, last=last)
            if len(audio):
                yield np.ascontiguousarray(audio, dtype=np.float32)
            if last:
                return


def prepare_audio(data: np.ndarray, sample_rate: int, target_rate: int = SAMPLE_RATE,
                  name: str = "<audio array>") -> np.ndarray:
    """Samples in memory -> float32 mono at ``target_rate``.

    ``data`` is (samples,) or (samples, channels); channels are averaged.
    """
    import librosa  # deferred: importing librosa costs ~1 s and header reads do not need it

    data = np.asarray(data)
    if data.ndim not in (1, 2):
        raise AudioError(name, f"expected 1-D or 2-D samples, got shape {data.shape}")
    if data.size == 0:
        raise AudioError(name, "no audio samples (zero-length audio)")
    if np.issubdtype(data.dtype, np.integer):
        data = data.astype(np.float32) / float(np.iinfo(data.dtype).max)
    audio = data.mean(axis=1) if data.ndim == 2 else data
    audio = audio.astype(np.float32, copy=False)
    if not np.isfinite(audio).all():
        raise AudioError(name, "audio contains non-finite samples (NaN or Inf)")
    if sample_rate <= 0:
        raise AudioError(name, f"bad sample rate {sample_rate}")
    if sample_rate != target_rate:
        audio = librosa.resample(audio, orig_sr=sample_rate, target_sr=target_rate,
                                 res_type="soxr_hq")
    return np.ascontiguousarray(audio, dtype=np.float32)


def save_audio(path: str | os.PathLike, audio: np.ndarray,
               sample_rate: int = SAMPLE_RATE) -> None:
    """Write float audio as 16-bit PCM (WAV or FLAC by the file's suffix)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sf.write(os.fspath(path), np.clip(audio, -1.0, 1.0), sample_rate, subtype="PCM_16")

"""Audio in: any file libsndfile reads, as float32 mono at 16 kHz.

Every failure raises :class:`AudioError`, which names the file and the reason, so callers
can report a bad file on one line and carry on with the rest: a missing, unreadable or
oddly named path, a file that is not audio, a truncated or corrupt one, a header that
claims an implausible rate or length. Decoding reads in blocks, so a header that lies
about the length cannot make it allocate more than the data holds.

What the C decoders print on the process's stderr while they work ("Note: Illegal
Audio-MPEG-Header ...", "Note: Trying to resync...") is kept from the user: see
:class:`_QuietStderr`.
"""

from __future__ import annotations

import errno
import io
import math
import os
import re
import stat
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf

from .config import FeatureConfig
from .errors import SpeechRNNError
from .files import atomic_write

SAMPLE_RATE = FeatureConfig.sample_rate  # what the library resamples audio to by default
# what a folder search for audio files picks up: the formats libsndfile reads
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif",
                  ".au", ".snd", ".caf", ".w64", ".rf64", ".sph", ".nist", ".voc"}

Source = str | os.PathLike | BinaryIO
# sample rates outside this range are a corrupt header, not audio (and resampling 1 Hz
# audio to 16 kHz, or reading 30 s blocks at 10^9 Hz, would exhaust the memory)
MIN_RATE, MAX_RATE = 1_000, 1_000_000
BLOCK_VALUES = 1 << 22  # samples x channels per read: 16 MB of float32 at most


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


class _QuietStderr:
    """Keeps what C decoders print on file descriptor 2 from the user.

    libsndfile's MPEG decoder (mpg123) writes notes such as "Note: Illegal Audio-MPEG-Header
    0x... at offset ..." and "Note: Trying to resync..." straight to fd 2, past Python. While
    any thread is inside ``with QUIET_STDERR:`` (an open, seek or read of a sound file),
    fd 2 points at a temporary file; on each exit what was written there is passed on to
    the real stderr, less the lines that look like decoder chatter (:attr:`CHATTER`). So
    the other threads' output (a progress bar, a log line, Python's own error messages)
    still comes out, in order, a little later. The real fd 2 is always put back by the
    last thread out. Where fd 2 is closed or ``os.pread`` is missing, it does nothing.
    """

    CHATTER = re.compile(rb"^(?:Note: |Warning: |\[[^\]\n]*\.c:[^\]\n]*\] )")
    LINE = re.compile(rb"[^\r\n]*(?:\r\n?|\n)")

    def __init__(self):
        self._lock = threading.Lock()
        self._users = 0
        self._real = -1  # the real stderr, while fd 2 points at the sink
        self._sink = None
        self._done = 0  # bytes of the sink already passed on
        self._partial = b""

    def __enter__(self):
        with self._lock:
            if self._users == 0:
                self._redirect()
            self._users += 1
        return self

    def __exit__(self, *exc) -> bool:
        with self._lock:
            self._users -= 1
            if self._real < 0:
                return False
            last = self._users == 0
            if last:
                _flush_python_stderr()
            try:
                self._pass_on(last)
            finally:
                if last:
                    os.dup2(self._real, 2)
                    os.close(self._real)
                    self._real = -1
                    self._sink.close()
                    self._sink = None
        return False

    def _redirect(self) -> None:
        if not hasattr(os, "pread"):
            return
        _flush_python_stderr()
        try:
            real = os.dup(2)
        except OSError:
            return  # no stderr to protect
        try:
            sink = tempfile.TemporaryFile()
            os.dup2(sink.fileno(), 2)
        except OSError:
            os.close(real)
            return
        self._real, self._sink, self._done, self._partial = real, sink, 0, b""

    def _pass_on(self, last: bool) -> None:
        data = [self._partial]
        while chunk := os.pread(self._sink.fileno(), 1 << 16, self._done):
            data.append(chunk)
            self._done += len(chunk)
        data = b"".join(data)
        lines = self.LINE.findall(data)
        rest = data[sum(map(len, lines)):]
        if last and rest:
            lines.append(rest)
            rest = b""
        self._partial = rest
        kept = b"".join(line for line in lines if not self.CHATTER.match(line))
        while kept:
            try:
                kept = kept[os.write(self._real, kept):]
            except OSError:
                return


    def _after_fork_in_child(self) -> None:
        """A process forked inside a window gets the real fd 2 back, and a fresh lock (the
        parent's may be held by a thread the child does not have)."""
        self._lock = threading.Lock()
        if self._real >= 0:
            try:
                os.dup2(self._real, 2)
                os.close(self._real)
            except OSError:
                pass
        self._real, self._users, self._sink, self._done, self._partial = -1, 0, None, 0, b""


def _flush_python_stderr() -> None:
    try:
        sys.stderr.flush()
    except (AttributeError, OSError, ValueError):
        pass


QUIET_STDERR = _QuietStderr()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=QUIET_STDERR._after_fork_in_child)


_STAT_REASONS = {errno.ENOENT: "file not found", errno.ENOTDIR: "file not found",
                 errno.EACCES: "permission denied", errno.EPERM: "permission denied",
                 errno.ENAMETOOLONG: "file name too long", errno.ELOOP: "symbolic link loop"}


def _check_path(source: Source, name: str) -> None:
    if not isinstance(source, (str, os.PathLike)):
        return
    try:
        info = os.stat(source)
    except OSError as err:
        reason = _STAT_REASONS.get(err.errno, f"cannot read the file ({err.strerror})")
        raise AudioError(name, reason) from None
    except ValueError as err:  # a NUL byte, or a lone surrogate the file system cannot encode
        raise AudioError(name, f"bad file name ({err})") from None
    if stat.S_ISDIR(info.st_mode):
        raise AudioError(name, "is a directory, not an audio file")
    if not stat.S_ISREG(info.st_mode):
        raise AudioError(name, "not a regular file (a pipe, socket or device)")
    if info.st_size == 0:
        raise AudioError(name, "empty file (0 bytes)")


# libsndfile's words that are wrong about a path known to exist and to be a regular file:
# it says them of a file whose contents no decoder accepts (random bytes named .mp3 give
# "File does not exist or is not a regular file"; some broken headers "System error")
_MISLEADING = ("does not exist", "system error", "internal error", "psf_fseek",
               "sf_info struct")


def _detail(err: Exception, instead: str) -> str:
    """libsndfile's message for ``err``, or ``instead`` where its words would mislead."""
    detail = (getattr(err, "error_string", None) or str(err) or "unknown error").strip()
    return instead if any(m in detail.lower() for m in _MISLEADING) else detail.rstrip(".")


def _open_failure(source: Source, name: str, err: Exception) -> AudioError:
    if isinstance(source, (str, os.PathLike)):
        try:  # the file exists (checked before): can this process read it at all?
            with open(source, "rb") as f:
                f.read(1)
        except OSError as os_err:
            return AudioError(name, f"cannot read the file ({os_err.strerror})")
    detail = _detail(err, "unrecognised format or corrupt data")
    return AudioError(name, f"not a readable audio file ({detail})")


def _open(source: Source, name: str) -> sf.SoundFile:
    _check_path(source, name)
    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(source)
    try:
        with QUIET_STDERR:
            f = sf.SoundFile(source)
    except (RuntimeError, TypeError, ValueError, OSError) as err:  # LibsndfileError included
        raise _open_failure(source, name, err) from None
    if not MIN_RATE <= f.samplerate <= MAX_RATE:
        f.close()
        raise AudioError(name, f"implausible sample rate {f.samplerate} Hz in the header "
                               f"(expected {MIN_RATE}-{MAX_RATE})")
    return f


def _read(f: sf.SoundFile, frames: int, name: str) -> np.ndarray:
    """Up to ``frames`` frames, mixed down to mono float32."""
    try:
        with QUIET_STDERR:
            data = f.read(frames, dtype="float32", always_2d=True)
    except (RuntimeError, ValueError) as err:  # LibsndfileError included
        detail = _detail(err, "the decoder failed")
        raise AudioError(name, f"corrupt or truncated audio data ({detail})") from None
    return data[:, 0] if data.shape[1] == 1 else data.mean(axis=1, dtype=np.float32)


def _blocks(f: sf.SoundFile, name: str, frames: int | None = None, size: int | None = None):
    """Mono blocks of ``size`` frames (at most ``BLOCK_VALUES`` samples) until ``frames`` or
    the end: memory follows the data actually there, whatever length the header claims."""
    size = max(min(size or BLOCK_VALUES, BLOCK_VALUES // max(f.channels, 1)), 1)
    while frames is None or frames > 0:
        want = size if frames is None else min(size, frames)
        block = _read(f, want, name)
        if len(block):
            yield block
        if len(block) < want:
            return
        if frames is not None:
            frames -= len(block)


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
    if not (_finite(offset) and offset >= 0) or \
            (end is not None and not (_finite(end) and end > offset)):
        raise AudioError(name, f"bad segment: offset={offset} end={end}")
    with _open(source, name) as f:
        native_rate = f.samplerate
        start = int(round(min(offset * native_rate, f.frames)))  # min: 1e300 s is finite
        stop = f.frames if end is None else int(round(min(end * native_rate, f.frames)))
        try:
            if 0 < start < f.frames:
                with QUIET_STDERR:
                    f.seek(start)
            blocks = list(_blocks(f, name, max(stop - start, 0)))
            data = np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
        except (RuntimeError, ValueError) as err:  # LibsndfileError included
            detail = _detail(err, "cannot seek to the segment")
            raise AudioError(name, f"corrupt or truncated audio data ({detail})") from None
        except MemoryError:
            raise AudioError(name, f"too long to decode in memory ({f.frames} frames of "
                                   f"{f.channels} channels)") from None
    return prepare_audio(data, native_rate, sample_rate, name)


def _finite(x) -> bool:
    try:
        return math.isfinite(x)
    except TypeError:
        return False


def stream_audio(source: Source, sample_rate: int = SAMPLE_RATE, block_seconds: float = 30.0,
                 name: str | None = None):
    """Decode ``source`` block by block: float32 mono blocks of about ``block_seconds`` at
    ``sample_rate``, resampled by one continuous soxr stream (no seams between blocks).
    Memory stays bounded whatever the file's length. Raises :class:`AudioError`."""
    import soxr

    name = _name(source, name)
    with _open(source, name) as f:
        native_rate = f.samplerate
        stream = None if native_rate == sample_rate else \
            soxr.ResampleStream(native_rate, sample_rate, 1, dtype="float32")
        size = max(int(block_seconds * native_rate), 1)
        pending: list[np.ndarray] = []
        have = 0
        any_samples = False

        def out(last: bool):
            audio = np.concatenate(pending) if len(pending) > 1 else \
                pending[0] if pending else np.zeros(0, np.float32)
            pending.clear()
            if not np.isfinite(audio).all():
                raise AudioError(name, "audio contains non-finite samples (NaN or Inf)")
            if stream is not None:
                audio = stream.resample_chunk(audio, last=last)
            return np.ascontiguousarray(audio, dtype=np.float32)

        for block in _blocks(f, name, size=size):
            any_samples = True
            pending.append(block)
            have += len(block)
            if have >= size:
                have = 0
                audio = out(last=False)
                if len(audio):
                    yield audio
        if not any_samples:
            raise AudioError(name, "no audio samples (zero-length audio)")
        audio = out(last=True)
        if len(audio):
            yield audio


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
               sample_rate: int = SAMPLE_RATE) -> Path:
    """Write float audio as mono 16-bit PCM (WAV or FLAC by the file's suffix), whole or
    not at all."""

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as f:
        sf.write(f, np.clip(audio, -1.0, 1.0), sample_rate, subtype="PCM_16",
                 format=path.suffix[1:].upper() or "WAV")
    return path

"""Features: librosa MFCC (+ deltas), CMVN, and an on-disk cache.

Output contract: float32 ``(frames, n_features)`` at ``hop_ms`` (10 ms) per frame;
1 s of audio gives 101 frames with the default centred 25 ms window.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import threading
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import librosa
import numpy as np
from threadpoolctl import ThreadpoolController

from .audio import AudioError, load_audio
from .config import FeatureConfig
from .errors import InputError
from .files import atomic_write_bytes, atomic_write_text

CACHE_VERSION = 2  # bump when the computation changes in a way the config does not show


class _OneBlasThread:
    """A context in which BLAS (numpy's OpenBLAS) runs on one thread, entered by any number
    of threads at once: the first in sets the limit, the last out restores it.

    OpenBLAS's multi-threaded kernels sum in another order on some processors (seen with
    its Haswell kernels on a 2-core AMD EPYC), so the mel filterbank product would differ
    in the last bit between a process that extracts with two BLAS threads and one that
    extracts with one (a shard worker, the transcriber): features are the same wherever
    they are computed only if they are always computed on one."""

    def __init__(self):
        self._lock, self._users, self._limiter = threading.Lock(), 0, None
        self._controller = None

    def __enter__(self):
        with self._lock:
            if not self._users:
                if self._controller is None:
                    self._controller = ThreadpoolController()
                self._limiter = self._controller.limit(limits=1, user_api="blas")
            self._users += 1

    def __exit__(self, *exc):
        with self._lock:
            self._users -= 1
            if not self._users:
                self._limiter.restore_original_limits()


_one_blas_thread = _OneBlasThread()


def _n_fft(win_length: int) -> int:
    return 1 << max(win_length - 1, 1).bit_length()


@lru_cache(maxsize=8)
def _mel_basis(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float):
    return librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin,
                               fmax=fmax).astype(np.float32)


def mfcc(audio: np.ndarray, config: FeatureConfig = FeatureConfig()) -> np.ndarray:
    """MFCC (and deltas) of 1-D float audio at ``config.sample_rate``, not normalised."""
    sr = config.sample_rate
    win = int(round(sr * config.win_ms / 1000))
    hop = int(round(sr * config.hop_ms / 1000))
    n_fft = _n_fft(win)
    audio = np.asarray(audio, dtype=np.float32)
    if config.preemphasis:
        audio = np.concatenate([audio[:1], audio[1:] - config.preemphasis * audio[:-1]])
    with warnings.catch_warnings():
        if len(audio) < n_fft:  # librosa warns; a few frames of a tiny clip are still right
            warnings.simplefilter("ignore", UserWarning)
        spec = librosa.stft(audio, n_fft=n_fft, hop_length=hop, win_length=win,
                            window="hann", center=True, pad_mode="constant")
    power = spec.real**2 + spec.imag**2
    with _one_blas_thread:
        mel = _mel_basis(sr, n_fft, config.n_mels, config.fmin, config.fmax) @ power
    log_mel = librosa.power_to_db(mel, amin=1e-10, top_db=80.0)
    coeffs = librosa.feature.mfcc(S=log_mel, n_mfcc=config.n_mfcc)
    parts = [coeffs]
    if config.deltas:
        frames = coeffs.shape[1]
        width = min(9, frames if frames % 2 else frames - 1)
        for order in range(1, config.deltas + 1):
            if width >= 3:
                parts.append(librosa.feature.delta(coeffs, width=width, order=order,
                                                   mode="nearest"))
            else:
                parts.append(np.zeros_like(coeffs))
    return np.ascontiguousarray(np.concatenate(parts, axis=0).T, dtype=np.float32)


def vtlp_matrix(config: FeatureConfig, alpha: float, boundary: float = 0.8) -> np.ndarray:
    """Vocal tract length perturbation (Jaitly & Hinton, 2013) as a linear map on MFCC frames.

    Each band is read at a warped frequency (alpha * f up to ``boundary`` of the band, then
    linearly so that ``fmax`` stays put), which moves formants by 1 / alpha, as a shorter or
    longer vocal tract would. On MFCC this is a matrix: the log-mel bands a frame's cepstrum
    stands for (inverse DCT), read at the warped frequencies (linear interpolation between
    bands), back to cepstra (DCT). Deltas are linear in time, so the same matrix serves each
    delta block.
    Returns ``(n_features, n_features)`` ``M`` for row-vector frames: ``warped = frames @ M``;
    ``alpha`` = 1 gives the identity.
    """
    import scipy.fft

    n_mels, n_mfcc = config.n_mels, config.n_mfcc
    fmin, fmax = config.fmin, config.fmax
    centres = librosa.mel_frequencies(n_mels + 2, fmin=fmin, fmax=fmax)[1:-1]
    edge = boundary * fmax * min(alpha, 1.0) / alpha
    warped = np.where(centres <= edge, alpha * centres,
                      fmax - (fmax - alpha * edge) * (fmax - centres) / (fmax - edge))
    position = np.interp(librosa.hz_to_mel(warped), librosa.hz_to_mel(centres),
                         np.arange(n_mels, dtype=np.float64))
    low = np.clip(np.floor(position).astype(int), 0, n_mels - 2)
    frac = np.clip(position - low, 0.0, 1.0)
    read = np.zeros((n_mels, n_mels))  # warped log-mel = read @ log-mel
    read[np.arange(n_mels), low] = 1.0 - frac
    read[np.arange(n_mels), low + 1] += frac
    dct = scipy.fft.dct(np.eye(n_mels), type=2, norm="ortho", axis=0)[:n_mfcc]  # (n_mfcc, n_mels)
    block = dct @ read @ dct.T  # cepstrum -> warped cepstrum (column vectors)
    return np.kron(np.eye(1 + config.deltas), block.T).astype(np.float32)


@dataclass(frozen=True)
class CMVN:
    """Global mean and variance normalisation statistics, one value per feature."""

    mean: np.ndarray
    std: np.ndarray
    frames: int = 0

    def apply(self, features: np.ndarray) -> np.ndarray:
        return ((features - self.mean) / self.std).astype(np.float32)

    @classmethod
    def compute(cls, arrays: Iterable[np.ndarray], floor: float = 1e-5) -> CMVN:
        total = sq = None
        count = 0
        for x in arrays:
            x = np.asarray(x, dtype=np.float64)
            total = x.sum(0) if total is None else total + x.sum(0)
            sq = (x * x).sum(0) if sq is None else sq + (x * x).sum(0)
            count += len(x)
        return cls.from_sums(total, sq, count, floor)

    @classmethod
    def from_sums(cls, total: np.ndarray | None, sq: np.ndarray | None, count: int,
                  floor: float = 1e-5) -> CMVN:
        """Statistics from per-feature sums and sums of squares (float64) over ``count``
        frames: what a streaming pass accumulates (sums of parts merge by adding)."""
        if not count:
            raise InputError("no frames to compute CMVN statistics from")
        mean = total / count
        std = np.sqrt(np.maximum(sq / count - mean * mean, floor**2))
        return cls(mean.astype(np.float32), std.astype(np.float32), count)

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, json.dumps({"mean": self.mean.tolist(),
                                            "std": self.std.tolist(), "frames": self.frames}))

    @classmethod
    def load(cls, path: str | Path) -> CMVN:
        obj = json.loads(Path(path).read_text())
        return cls(np.asarray(obj["mean"], np.float32), np.asarray(obj["std"], np.float32),
                   int(obj.get("frames", 0)))


def utterance_std(features: np.ndarray, floor: float = 1e-5) -> np.ndarray:
    """Per-channel standard deviation of one utterance: what utterance CMVN divides by."""
    return np.maximum(features.std(axis=0), floor).astype(np.float32)


def utterance_cmvn(features: np.ndarray, floor: float = 1e-5) -> np.ndarray:
    mean = features.mean(axis=0, keepdims=True)
    return ((features - mean) / utterance_std(features, floor)).astype(np.float32)


class FeatureCache:
    """Features on disk, keyed by the audio file's bytes, the segment and the config.

    An entry is written to a temporary file and renamed into place, so a reader sees a whole
    entry or none, whatever other processes are doing; an entry that fails to load (a crash
    mid-write on a filesystem without atomic rename, a truncated disk) counts as a miss and
    is rewritten.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @staticmethod
    def key(path: str | Path, config: FeatureConfig, offset: float = 0.0,
            end: float | None = None) -> str:
        h = hashlib.blake2b(digest_size=20)
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        extraction = {k: v for k, v in dataclasses.asdict(config).items()
                      if k not in ("cmvn", "cmvn_stats")}
        h.update(json.dumps([CACHE_VERSION, extraction, offset, end], sort_keys=True).encode())
        return h.hexdigest()

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npy"

    def get(self, key: str) -> np.ndarray | None:
        path = self._path(key)
        try:
            return np.load(path, allow_pickle=False)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, EOFError):
            return None  # damaged entry: recompute and overwrite

    def put(self, key: str, features: np.ndarray) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = io.BytesIO()  # numpy's own writes to a full disk lose the errno
        np.save(data, features, allow_pickle=False)
        atomic_write_bytes(path, data.getvalue(), fsync=False)  # damaged entries: recomputed


class FeatureExtractor:
    """Audio file -> normalised features, through the cache when one is given."""

    def __init__(self, config: FeatureConfig = FeatureConfig(),
                 cache_dir: str | Path | None = None, cmvn: CMVN | None = None):
        self.config = config
        self.cache = FeatureCache(cache_dir) if cache_dir else None
        if config.cmvn == "global" and cmvn is None:
            if not config.cmvn_stats:
                raise InputError("features.cmvn=global needs features.cmvn_stats "
                                 "(see compute_global_cmvn)")
            cmvn = CMVN.load(config.cmvn_stats)
        self.cmvn = cmvn

    def raw(self, path: str | Path, offset: float = 0.0, end: float | None = None):
        """Un-normalised features of a file (segment), from the cache if there."""
        key = None
        if self.cache is not None:
            try:
                key = FeatureCache.key(path, self.config, offset, end)
            except OSError as err:
                raise AudioError(path, f"cannot read file ({err.strerror})") from None
            hit = self.cache.get(key)
            if hit is not None:
                return hit
        audio = load_audio(path, self.config.sample_rate, offset, end)
        feats = mfcc(audio, self.config)
        if key is not None:
            self.cache.put(key, feats)
        return feats

    def normalize(self, features: np.ndarray) -> np.ndarray:
        if self.config.cmvn == "utterance":
            return utterance_cmvn(features)
        if self.config.cmvn == "global":
            return self.cmvn.apply(features)
        return features

    def __call__(self, path: str | Path, offset: float = 0.0, end: float | None = None):
        return self.normalize(self.raw(path, offset, end))

    def from_audio(self, audio: np.ndarray, cmvn: CMVN | None = None) -> np.ndarray:
        """Features of model-rate samples; ``cmvn``: statistics to normalise with instead of
        the configured ones (a speaker's, pooled over several clips: :meth:`pooled_stats`)."""
        feats = mfcc(audio, self.config)
        return cmvn.apply(feats) if cmvn is not None else self.normalize(feats)

    def pooled_stats(self, audios: Iterable[np.ndarray]) -> CMVN:
        """CMVN statistics of the raw features of several clips together (one speaker's)."""
        return CMVN.compute(mfcc(a, self.config) for a in audios)

"""Voice activity: where in an audio signal someone speaks, so that noise, hum, tones, music
and silence give no words.

A 10 ms frame is *voiced* when it is loud enough (``floor_db`` dBFS), its 200-4,000 Hz
spectrum is neither flat like noise nor a few lines like a tone or hum (spectral flatness
between ``min_flatness`` and ``max_flatness``), and it repeats at a voice's pitch period
(a local autocorrelation peak of at least ``min_periodicity`` at 60-400 Hz), without the
rumble of brown noise (``max_rumble``: power under 150 Hz over the band's). Speech holds
such frames in a good share of every syllable; white, pink or brown noise, hum, steady or
played tones and silence hold almost none. A stretch is speech where at least
``min_voiced`` of the frames around it (``window_s``, or the whole clip if shorter) are
voiced and it holds ``min_voiced_s`` of them, widened by ``pad_s`` on each side to take in
the unvoiced sounds (s, f, t) at the edges of words.

:func:`speech_regions` gives the speech stretches of an array; the transcriber runs the
network only on chunks that hold speech and keeps only words that touch it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class VadOptions:
    enabled: bool = True
    floor_db: float = -60.0  # frames quieter than this (dBFS) are not voiced
    min_flatness: float = 0.0005  # below: a tone, hum or a few partials
    max_flatness: float = 0.3  # above: noise
    min_periodicity: float = 0.3  # normalised autocorrelation peak at a pitch period
    max_rumble: float = 3.0  # power under 150 Hz / power at 200-4,000 Hz
    window_s: float = 0.3
    min_voiced: float = 0.3  # share of voiced frames in a window that makes it speech
    min_voiced_s: float = 0.05  # voiced frames a speech stretch holds at least
    pad_s: float = 0.3


_HOP_S, _WIN_S, _N_FFT = 0.010, 0.040, 2048


def voiced_frames(audio: np.ndarray, sample_rate: int,
                  options: VadOptions = VadOptions()) -> np.ndarray:
    """One bool per 10 ms hop: does the frame sound like a voice?"""
    import librosa

    hop, win = int(_HOP_S * sample_rate), int(_WIN_S * sample_rate)
    n_fft = max(_N_FFT, 1 << (2 * win - 1).bit_length())  # no wrap-around in the autocorr
    audio = np.asarray(audio, np.float32)
    if len(audio) < win:  # too short for one frame: nothing voiced
        return np.zeros(1 + len(audio) // hop, bool)
    window = np.hanning(win).astype(np.float32)
    frames = 1 + len(audio) // hop
    padded = np.pad(audio, (0, max(n_fft - len(audio), 0)))  # librosa wants >= n_fft
    power = np.abs(librosa.stft(padded, n_fft=n_fft, hop_length=hop, win_length=win,
                                window=window, center=True))[:, :frames] ** 2
    freqs = librosa.fft_frequencies(sr=sample_rate, n_fft=n_fft)
    band = power[(freqs >= 200) & (freqs <= 4000)] + 1e-12
    flatness = np.exp(np.mean(np.log(band), axis=0)) / np.mean(band, axis=0)
    # mean square of the windowed frame (Parseval), in dB of a full-scale sine's
    energy = (power[0] + power[-1] + 2 * power[1:-1].sum(axis=0)) / n_fft
    db = 10 * np.log10(energy / (0.5 * float(np.sum(window ** 2))) + 1e-12)
    auto = np.fft.irfft(power, n=n_fft, axis=0)
    # divided by the window's own autocorrelation, which falls with the lag: else a low
    # voice (long period) would look less periodic than a high one
    own = np.fft.irfft(np.abs(np.fft.rfft(window, n_fft)) ** 2, n_fft)
    auto = auto / (auto[:1] + 1e-12) / np.maximum(own / own[0], 1e-3)[:, None]
    lo, hi = int(sample_rate / 400), int(sample_rate / 60)
    mid = auto[lo:hi + 1]
    # a true peak, not the slope of a smooth (brown-noise or hum-like) autocorrelation
    peaks = (mid[1:-1] > mid[:-2]) & (mid[1:-1] >= mid[2:])
    periodicity = np.where(peaks, mid[1:-1], 0.0).max(axis=0)
    # rumble: power under 150 Hz over that of the 200-4,000 Hz band (brown noise: ~9)
    rumble = power[freqs < 150].sum(axis=0) / band.sum(axis=0)
    return ((db > options.floor_db) & (rumble < options.max_rumble)
            & (flatness > options.min_flatness) & (flatness < options.max_flatness)
            & (periodicity > options.min_periodicity))


def speech_mask(audio: np.ndarray, sample_rate: int,
                options: VadOptions = VadOptions()) -> np.ndarray:
    """One bool per 10 ms hop: is this part of a speech stretch (padded)?"""
    voiced = voiced_frames(audio, sample_rate, options).astype(np.float32)
    if not len(voiced):
        return np.zeros(0, bool)
    n, half = len(voiced), max(int(round(options.window_s / _HOP_S)), 1) // 2
    counts = np.concatenate([[0], np.cumsum(voiced)])
    lo, hi = np.maximum(np.arange(n) - half, 0), np.minimum(np.arange(n) + half + 1, n)
    # the share of the frames there are: a clip shorter than the window is judged whole
    speech = (counts[hi] - counts[lo]) / (hi - lo) >= options.min_voiced
    # a stretch needs min_voiced_s of voiced frames: a few stray ones in a short piece of
    # a chord or a melody are not a word
    edges = np.flatnonzero(np.diff(np.concatenate([[0], speech.astype(np.int8), [0]])))
    for a, b in zip(edges[::2], edges[1::2]):
        if counts[b] - counts[a] < options.min_voiced_s / _HOP_S:
            speech[a:b] = False
    pad = int(round(options.pad_s / _HOP_S))
    if pad and speech.any():
        ends = np.concatenate([[0], np.cumsum(speech)])
        speech = ends[np.minimum(np.arange(n) + pad + 1, n)] > ends[np.maximum(
            np.arange(n) - pad, 0)]
    return speech


def speech_regions(audio: np.ndarray, sample_rate: int,
                   options: VadOptions = VadOptions()) -> list[tuple[float, float]]:
    """The speech stretches of ``audio`` as (start, end) seconds, in order."""
    mask = speech_mask(audio, sample_rate, options)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    duration = len(audio) / sample_rate
    return [(round(a * _HOP_S, 3), round(min(b * _HOP_S, duration), 3))
            for a, b in zip(edges[::2], edges[1::2])]


def overlaps(regions: list[tuple[float, float]], start: float, end: float) -> bool:
    """Does [start, end] touch any of ``regions``?"""
    return any(a <= end and start <= b for a, b in regions)

"""Segmentation: long audio cut at its quiet points, nothing lost."""

import numpy as np
from conftest import tone

from speechrnn.segment import ChunkOptions, chunks


def bursts(seconds: float, every: float, rate: int = 16000) -> np.ndarray:
    """Tone bursts separated by 0.3 s of near silence, one burst starting every ``every``."""
    audio = np.full(int(seconds * rate), 1e-4, np.float32)
    period, gap = int(every * rate), int(0.3 * rate)
    for start in range(0, len(audio), period):
        n = min(period - gap, len(audio) - start)
        audio[start:start + n] = tone(n / rate, rate)[:n]
    return audio


def test_chunks_cut_in_pauses_and_lose_nothing():
    rate, audio = 16000, bursts(95.0, every=2.7)
    options = ChunkOptions(max_chunk_s=20.0, min_chunk_s=8.0)
    blocks = np.array_split(audio, 13)  # uneven blocks, as a stream delivers them
    pieces = list(chunks(blocks, rate, options))
    assert np.array_equal(np.concatenate([c for _, c in pieces]), audio)
    assert [o for o, _ in pieces] == list(np.cumsum([0] + [len(c) for _, c in pieces[:-1]]))
    for offset, chunk in pieces[:-1]:
        assert 8.0 * rate <= len(chunk) <= 20.0 * rate
        cut = offset + len(chunk)
        assert np.abs(audio[cut - 800:cut + 800]).max() < 1e-3  # in a pause, not a burst
    assert len(list(chunks([audio[:rate]], rate, options))) == 1  # short: one chunk

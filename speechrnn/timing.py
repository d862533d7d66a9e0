"""Word timing: word edges moved from CTC's peaky frames out to the sound itself."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from .config import FeatureConfig
from .decoding import Hypothesis


def snap_to_speech(hyp: Hypothesis, audio: np.ndarray, rate: int,
                   frames_per_second: float = FeatureConfig().frames_per_second,
                   top_db: float = 30.0, max_shift: float = 0.4) -> Hypothesis:
    """Move each word's edges out to where its sound starts and fades.

    CTC emits a character at one peaky frame, often before a word's soft ending has died
    away (the "r" of "four"). Each edge is moved outwards, by at most ``max_shift`` seconds
    and never into a neighbour, while the energy of frames at the feature frame rate
    (``frames_per_second``: 10 ms frames by default) stays within ``top_db`` of the word's
    loudest frame."""
    if not hyp.words:
        return hyp
    fps = frames_per_second
    hop = int(round(rate / fps))
    frames = len(audio) // hop
    if frames == 0:
        return hyp
    power = (audio[:frames * hop].astype(np.float64).reshape(frames, hop) ** 2).mean(axis=1)
    db = 10 * np.log10(power + 1e-12)
    reach = int(max_shift * fps)
    words = list(hyp.words)
    for i, w in enumerate(words):
        a = int(w.start * fps)
        b = min(max(int(math.ceil(w.end * fps)), a + 1), frames)
        if a >= frames:
            continue
        floor = db[a:b].max() - top_db
        lo = max(a - reach, int(math.ceil(words[i - 1].end * fps)) if i else 0)
        hi = min(b + reach, int(words[i + 1].start * fps) if i + 1 < len(words) else frames)
        while a > lo and db[a - 1] >= floor:
            a -= 1
        while b < hi and db[b] >= floor:
            b += 1
        words[i] = replace(w, start=round(a / fps, 3), end=round(b / fps, 3))
    return replace(hyp, words=tuple(words))

"""Word timing: edges snapped to the sound, at any feature frame rate."""

import numpy as np
from conftest import tone

from speechrnn.decoding import Word
from speechrnn.timing import snap_to_speech
from speechrnn.transcribe import Transcript


def test_snap_moves_word_edges_to_the_sound():
    rate = 16000
    audio = np.full(rate * 2, 1e-4, np.float32)
    audio[int(0.50 * rate):int(0.90 * rate)] = tone(0.4, rate)  # the word sounds 0.50-0.90
    hyp = Transcript("x", (Word("x", 0.6, 0.7, 1.0),), 1.0)
    (w,) = snap_to_speech(hyp, audio, rate).words
    assert abs(w.start - 0.5) <= 0.011 and abs(w.end - 0.9) <= 0.011
    # never more than max_shift, never into a neighbour
    two = Transcript("x y", (Word("x", 0.6, 0.65, 1.0), Word("y", 0.8, 0.85, 1.0)), 1.0)
    a, b = snap_to_speech(two, audio, rate, max_shift=0.1).words
    assert a.end <= b.start and a.start >= 0.5 and b.end <= 0.9


def test_snap_follows_the_feature_frame_rate():
    """With 20 ms feature frames the edges land on the 20 ms grid, still on the sound."""
    rate = 16000
    audio = np.full(rate * 2, 1e-4, np.float32)
    audio[int(0.50 * rate):int(0.90 * rate)] = tone(0.4, rate)
    hyp = Transcript("x", (Word("x", 0.6, 0.7, 1.0),), 1.0)
    (w,) = snap_to_speech(hyp, audio, rate, frames_per_second=50.0).words
    assert abs(w.start - 0.5) <= 0.021 and abs(w.end - 0.9) <= 0.021
    assert round(w.start * 50, 6) == int(round(w.start * 50)) and \
        round(w.end * 50, 6) == int(round(w.end * 50))

"""Decoding: per-frame log-probabilities -> text.

Greedy CTC decoding takes the best label of every frame, merges repeats and drops blanks.
"""

from __future__ import annotations

import numpy as np

from .text import Alphabet


def greedy_ids(log_probs: np.ndarray, blank: int = 0) -> list[int]:
    """Best path of one utterance's (T, V) log-probabilities, repeats merged, blanks dropped."""
    best = np.asarray(log_probs).argmax(axis=-1)
    if best.size == 0:
        return []
    keep = np.ones(best.shape, dtype=bool)
    keep[1:] = best[1:] != best[:-1]
    return [int(i) for i in best[keep] if i != blank]


def greedy_decode(log_probs: np.ndarray, alphabet: Alphabet) -> str:
    return " ".join(alphabet.decode(greedy_ids(log_probs, alphabet.blank)).split())


def greedy_batch(log_probs: np.ndarray, lengths, alphabet: Alphabet) -> list[str]:
    """Greedy text of each item of a padded batch (B, T, V), using only its valid frames."""
    return [greedy_decode(log_probs[i, :int(n)], alphabet) for i, n in enumerate(lengths)]

"""Word n-gram language model for decoding, built from transcripts (no external tools).

Interpolated Witten-Bell smoothing over words, with sentence start/end; an unknown word
gets ``oov_log_prob``. ``prefixes`` lists every prefix of a known word, so that a decoder
can tell a partial word that can still become a known word from one that cannot.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path

from .errors import InputError, NotFoundError
from .files import atomic_write_text

BOS, EOS = "<s>", "</s>"


class WordLM:
    def __init__(self, order: int = 3, oov_log_prob: float = -10.0):
        if order < 1:
            raise ValueError("order must be >= 1")
        self.order = order
        self.oov_log_prob = oov_log_prob
        self.counts: list[dict[tuple, Counter]] = [defaultdict(Counter) for _ in range(order)]
        self.vocab: set[str] = set()
        self.prefixes: set[str] = set()
        self._cache: dict[tuple, float] = {}

    @classmethod
    def from_texts(cls, texts: Iterable[str], order: int = 3,
                   oov_log_prob: float = -10.0) -> WordLM:
        lm = cls(order, oov_log_prob)
        for text in texts:
            words = text.split()
            if not words:
                continue
            lm.vocab.update(words)
            seq = [BOS] * (order - 1) + words + [EOS]
            for i in range(order - 1, len(seq)):
                for n in range(order):  # history length n
                    lm.counts[n][tuple(seq[i - n:i])][seq[i]] += 1
        if not lm.vocab:
            raise InputError("no words to build a language model from")
        lm.prefixes = {w[:i] for w in lm.vocab for i in range(len(w) + 1)}
        return lm

    @classmethod
    def from_sources(cls, manifests: Iterable[str | Path] = (),
                     text_files: Iterable[str | Path] = (), order: int = 3) -> WordLM | None:
        """The LM of manifests' transcripts and text files (a sentence a line), every line
        normalised as training transcripts are; None when no source is given."""
        from .manifest import read_manifest
        from .text import normalize_text

        texts = [r.text for m in manifests for r in read_manifest(m)]
        for path in text_files:
            try:
                texts += Path(path).read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as err:
                raise NotFoundError(f"{path}: cannot read LM text ({err})") from None
        if not texts:
            return None
        return cls.from_texts([normalize_text(t) for t in texts if t.strip()], order=order)

    @classmethod
    def from_file(cls, path: str | Path, order: int = 3, normalize=None) -> WordLM:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        if normalize is not None:
            lines = [normalize(line) for line in lines]
        return cls.from_texts(lines, order)

    def _prob(self, history: tuple, word: str) -> float:
        if not history:
            table = self.counts[0][()]
            total, types = sum(table.values()), len(table)
            uniform = 1.0 / (len(self.vocab) + 1)
            return (table[word] + types * uniform) / (total + types)
        table = self.counts[len(history)].get(history)
        lower = self._prob(history[1:], word)
        if not table:
            return lower
        total, types = sum(table.values()), len(table)
        return (table[word] + types * lower) / (total + types)

    def log_prob(self, history: tuple[str, ...], word: str) -> float:
        """Natural-log P(word | the last order-1 words of history); EOS ends a sentence."""
        if word != EOS and word not in self.vocab:
            return self.oov_log_prob
        history = tuple(([BOS] * (self.order - 1) + list(history))[-(self.order - 1):]) \
            if self.order > 1 else ()
        key = (history, word)
        if key not in self._cache:
            self._cache[key] = math.log(self._prob(history, word))
        return self._cache[key]

    def save(self, path: str | Path) -> None:
        """Store the training counts (JSON) so the model directory can rebuild the LM."""
        data = {"order": self.order, "oov_log_prob": self.oov_log_prob,
                "counts": [[[list(h), dict(c)] for h, c in level.items()]
                           for level in self.counts]}
        atomic_write_text(path, json.dumps(data))

    @classmethod
    def load(cls, path: str | Path) -> WordLM:
        data = json.loads(Path(path).read_text())
        lm = cls(data["order"], data["oov_log_prob"])
        for n, level in enumerate(data["counts"]):
            for history, counter in level:
                lm.counts[n][tuple(history)] = Counter(counter)
        lm.vocab = {w for w in lm.counts[0][()] if w != EOS}
        lm.prefixes = {w[:i] for w in lm.vocab for i in range(len(w) + 1)}
        return lm

"""Word n-gram language model for decoding: built from text, stored as ARPA.

Building (:meth:`WordLM.from_texts`, :meth:`WordLM.from_sources`, :func:`build_lm`):

- sentences are read one at a time (a manifest's transcripts, text files of a sentence a
  line) and their words kept as one array of integer ids, ``<s> w1 ... wn </s>`` each;
  n-grams are then counted with numpy (each n-gram is an id pair: its (n-1)-gram prefix's
  number and its last word), so millions of words take seconds and a few hundred MB;
- smoothing: interpolated **modified Kneser-Ney** (Chen & Goodman 1998, as KenLM's
  ``lmplz``: three discounts D1, D2, D3+ per order from the count-of-counts, continuation
  counts for the lower orders except n-grams that begin with ``<s>``, unigrams interpolated
  with the uniform distribution over the vocabulary, ``</s>`` and ``<unk>``), or
  interpolated **Witten-Bell** (``method="witten-bell"``);
- pruning (``prune``, KenLM's ``--prune``): one count threshold per order, the last one
  repeated for the higher orders; an n-gram of order 2 or more seen at most that many times
  is dropped (its probability mass goes to its context's back-off weight, so the model
  still sums to one). Thresholds must start with 0 (all words are kept) and never decrease,
  so every kept n-gram's prefix and suffix are kept too. ``"auto"`` (the default): no
  pruning under a million words of text, else n-grams of order 2 and more seen once are
  dropped ((0, 1, 1)).

The model is the back-off form of that interpolated model, exactly as an ARPA file holds
it: a probability for each kept n-gram and a back-off weight for each context.
:meth:`WordLM.log_prob` answers with standard back-off (natural log), the same value KenLM
gives for the file :meth:`WordLM.write_arpa` writes. :meth:`WordLM.load` reads any ARPA
file (``lmplz``'s, SRILM's; ``.gz`` too), and the JSON counts of older speechrnn versions.

An unknown word gets the ``<unk>`` probability (after the back-off weights of its context)
when the model has ``<unk>`` (a built one always has), else ``oov_log_prob``; for the
beam search (:meth:`WordLM.log_prob`) never more than ``oov_log_prob`` (default -10): a
model of a few sentences gives ``<unk>`` a large share, and a misspelt word the beam
search can always produce must not pay less than the decoder's partial-word penalty.
:meth:`WordLM.arpa_log_prob` is the uncapped value KenLM gives. ``prefixes``
lists every prefix of a known word, so that a decoder can tell a partial word that can
still become a known word from one that cannot.
"""

from __future__ import annotations

import atexit
import contextlib
import gzip
import io
import json
import math
import os
import re
import resource
import tempfile
import time
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from .errors import InputError, NotFoundError
from .files import atomic_write, atomic_write_text
from .manifest import text_file_lines

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
_UNK_ID, _BOS_ID, _EOS_ID = 0, 1, 2
METHODS = ("kneser-ney", "witten-bell")
AUTO_PRUNE_WORDS = 1_000_000  # prune="auto": from this many words on, drop singletons
FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)  # lmplz's --discount_fallback, for tiny texts
BOS_LOG10 = -99.0  # the probability of <s> (never predicted), as SRILM and KenLM write it
_LN10 = math.log(10.0)
_LOG10E = 1.0 / _LN10


class WordLM:
    """A back-off word n-gram model (natural-log probabilities in memory)."""

    def __init__(self, order: int = 3, oov_log_prob: float = -10.0):
        if order < 1:
            raise ValueError("order must be >= 1")
        self.order = order
        self.oov_log_prob = oov_log_prob
        self.vocab: set[str] = set()
        self.prefixes: set[str] = set()
        self.path: Path | None = None  # the ARPA file it was loaded from or last written to
        self.stats: dict = {}  # how it was built (build_lm reports these)
        self._prob: dict[tuple[str, ...], float] = {}  # every n-gram: ln P(last | rest)
        self._bow: dict[tuple[str, ...], float] = {}  # contexts: ln back-off (0 not stored)
        self._unk = False

    # ---------------------------------------------------------------- building

    @classmethod
    def from_texts(cls, texts: Iterable[str], order: int = 3, oov_log_prob: float = -10.0,
                   method: str = "kneser-ney", prune="auto") -> WordLM:
        """The model of sentences already normalised (words split on white space)."""
        counter = _Counter()
        for text in texts:
            counter.add(text.split())
        return counter.model(order, method, prune, oov_log_prob)

    @classmethod
    def from_sources(cls, manifests: Iterable[str | Path] = (),
                     text_files: Iterable[str | Path] = (), order: int = 3,
                     method: str = "kneser-ney", prune="auto",
                     oov_log_prob: float = -10.0) -> WordLM | None:
        """The LM of manifests' transcripts and text files (a sentence a line; ``.gz``
        too), every line normalised as training transcripts are; None when no source is
        given or they hold no line."""
        counter = _read_sources(manifests, text_files)
        if counter.lines == 0:
            return None
        return counter.model(order, method, prune, oov_log_prob)

    @classmethod
    def from_file(cls, path: str | Path, order: int = 3, normalize=None,
                  method: str = "kneser-ney", prune="auto") -> WordLM:
        counter = _Counter()
        for line in text_file_lines(path, "LM text"):
            counter.add((normalize(line) if normalize is not None else line).split())
        return counter.model(order, method, prune, -10.0)

    # ---------------------------------------------------------------- querying

    def log_prob(self, history: Sequence[str], word: str) -> float:
        """Natural-log P(word | the last order-1 words of history), by standard back-off;
        a history shorter than that starts the sentence (``<s>``); EOS ends a sentence.
        An unknown word: the ``<unk>`` probability, at most ``oov_log_prob``."""
        if (word,) not in self._prob:
            if not self._unk:
                return self.oov_log_prob
            return min(self._log_prob(history, UNK), self.oov_log_prob)
        return self._log_prob(history, word)

    def arpa_log_prob(self, history: Sequence[str], word: str) -> float:
        """:meth:`log_prob` as the ARPA file reads (KenLM's score, in natural log): an
        unknown word gets the ``<unk>`` probability, however high."""
        if (word,) not in self._prob:
            if not self._unk:
                return self.oov_log_prob
            word = UNK
        return self._log_prob(history, word)

    def _log_prob(self, history: Sequence[str], word: str) -> float:
        prob = self._prob
        n = self.order - 1
        if n == 0:
            return prob[(word,)]
        history = tuple(history)
        context = history[-n:] if len(history) >= n else ((BOS,) + history)[-n:]
        if self._unk:
            for w in context:
                if (w,) not in prob:
                    context = tuple(w if (w,) in prob else UNK for w in context)
                    break
        bow, total = self._bow, 0.0
        for i in range(len(context)):
            ctx = context[i:]
            p = prob.get(ctx + (word,))
            if p is not None:
                return total + p
            total += bow.get(ctx, 0.0)
        return total + prob[(word,)]

    def sentence_log_prob(self, words: Sequence[str]) -> float:
        """Natural-log probability of a whole sentence, ``</s>`` included."""
        words = list(words)
        return sum(self.arpa_log_prob(words[:i], w) for i, w in enumerate(words + [EOS]))

    def perplexity(self, sentences: Iterable[str]) -> dict:
        """Per-word perplexity of normalised sentences (``</s>`` counted as a word, as
        SRILM and KenLM do): with out-of-vocabulary words scored as ``<unk>`` (as KenLM's
        ``query``), and without them (as SRILM's ``ppl``); and how many words are OOV."""
        total, known, tokens, oov, n = 0.0, 0.0, 0, 0, 0
        for text in sentences:
            words = text.split()
            if not words:
                continue
            n += 1
            for i, w in enumerate(words + [EOS]):
                lp = self.arpa_log_prob(words[:i], w)
                total += lp
                if w == EOS or w in self.vocab:
                    known += lp
                else:
                    oov += 1
            tokens += len(words) + 1
        if not tokens:
            raise InputError("no sentences to measure the perplexity on")
        return {"perplexity": math.exp(-total / tokens),
                "perplexity_without_oov": math.exp(-known / max(tokens - oov, 1)),
                "sentences": n, "tokens": tokens, "oov_words": oov,
                "oov_rate": oov / (tokens - n)}

    def ngram_counts(self) -> dict[int, int]:
        """How many n-grams of each order the model holds."""
        counts = Counter(len(k) for k in self._prob)
        return {n: counts.get(n, 0) for n in range(1, self.order + 1)}

    # ---------------------------------------------------------------- ARPA

    def write_arpa(self, path: str | Path) -> Path:
        """Write the model as a back-off ARPA file (log10), atomically; ``.gz``: gzipped.
        ``path`` becomes the model's :attr:`path`. A unigram model gets an empty 2-gram
        section, which KenLM needs (it reads back as a unigram model)."""
        path = Path(path)
        counts = self.ngram_counts()
        orders = max(self.order, 2)  # KenLM needs a 2-gram section, if empty
        with atomic_write(path, "wb") as raw:
            binary = gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) \
                if path.suffix == ".gz" else raw
            f = io.TextIOWrapper(binary, encoding="utf-8", newline="\n",
                                 write_through=False)
            f.write("\\data\\\n")
            for n in range(1, orders + 1):
                f.write(f"ngram {n}={counts.get(n, 0)}\n")
            bow = self._bow
            for n in range(1, orders + 1):
                f.write(f"\n\\{n}-grams:\n")
                lines = []
                for key, p in self._prob.items():
                    if len(key) != n:
                        continue
                    p10 = BOS_LOG10 if key == (BOS,) else min(0.0, p * _LOG10E)
                    b = bow.get(key)
                    if b is None:
                        lines.append(f"{p10:.6f}\t{' '.join(key)}\n")
                    else:
                        lines.append(f"{p10:.6f}\t{' '.join(key)}\t{b * _LOG10E:.6f}\n")
                    if len(lines) >= 65536:
                        f.write("".join(lines))
                        lines.clear()
                f.write("".join(lines))
            f.write("\n\\end\\\n")
            f.flush()
            f.detach()
            if binary is not raw:
                binary.close()
        self.path = path
        return path

    def arpa_path(self, folder: str | Path | None = None) -> Path:
        """The ARPA file of this model: :attr:`path`, or (when it has none, or that file is
        gone) a new file it is first written to, in ``folder`` or else in the temporary
        folder (removed when the program ends)."""
        if self.path is not None and self.path.is_file():
            return self.path
        where = Path(folder) if folder is not None else None
        if where is not None:
            where.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f"speechrnn-lm-{self.order}gram-", suffix=".arpa",
                                    dir=where)
        os.close(fd)
        try:
            self.write_arpa(name)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(name)
            raise
        if where is None:
            atexit.register(_remove_quietly, name)
        return self.path

    @classmethod
    def from_arpa(cls, path: str | Path, oov_log_prob: float = -10.0) -> WordLM:
        """Read an ARPA file (plain or gzipped). Malformed: :class:`InputError` naming the
        file and line."""
        path = Path(path)
        lm = cls(1, oov_log_prob)
        lm.order = _read_arpa(path, lm._prob, lm._bow)
        lm._finish()
        lm.path = path
        return lm

    def save(self, path: str | Path) -> None:
        """Store the model as an ARPA file (what :meth:`load` and KenLM read)."""
        self.write_arpa(path)

    @classmethod
    def load(cls, path: str | Path) -> WordLM:
        """An ARPA file (plain or gzipped), or the JSON counts older versions saved."""
        path = Path(path)
        try:
            with open(path, "rb") as f:
                head = f.read(4096)
        except FileNotFoundError:
            raise NotFoundError(f"{path}: language model not found") from None
        except OSError as err:
            raise NotFoundError(f"{path}: cannot read the language model ({err})") from None
        if head.lstrip().startswith(b"{"):
            return _from_json(path)
        return cls.from_arpa(path)

    # ---------------------------------------------------------------- internals

    def _finish(self) -> None:
        words = {k[0] for k in self._prob if len(k) == 1}
        if not words:
            raise InputError("no words to build a language model from")
        self._unk = UNK in words
        self.vocab = words - {BOS, EOS, UNK}
        self.prefixes = {w[:i] for w in self.vocab for i in range(len(w) + 1)}


def build_lm(text_files: Iterable[str | Path], manifests: Iterable[str | Path],
             out: str | Path, order: int = 3, method: str = "kneser-ney",
             prune="auto") -> dict:
    """Build the model of text files and manifests' transcripts, write it as ARPA to
    ``out`` (``.gz``: gzipped) and return what it took: words, sentences, vocabulary,
    n-grams per order (kept, and before pruning), discounts, seconds, peak RSS, bytes."""
    start = time.perf_counter()
    counter = _read_sources(manifests, text_files)
    read_s = time.perf_counter() - start
    lm = counter.model(order, method, prune, -10.0)
    path = lm.write_arpa(out)
    return {**lm.stats, "out": str(path), "read_seconds": round(read_s, 2),
            "seconds": round(time.perf_counter() - start, 2), "peak_rss_mb": peak_rss_mb(),
            "arpa_bytes": path.stat().st_size}


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (MB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


# -------------------------------------------------------------------- reading text

def _remove_quietly(name: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(name)


def source_sentences(manifests: Iterable[str | Path] = (),
                     text_files: Iterable[str | Path] = ()) -> Iterator[list[str]]:
    """The normalised words of each manifest row's transcript, then of each line of the
    text files (a sentence a line, ``.gz`` too; a blank line gives no words)."""
    from .manifest import read_manifest
    from .text import normalize_text

    for manifest in manifests:
        for row in read_manifest(manifest):
            yield normalize_text(row.text).split()
    for path in text_files:
        for line in text_file_lines(path):
            yield normalize_text(line).split() if line.strip() else []


def _read_sources(manifests: Iterable[str | Path], text_files: Iterable[str | Path]):
    counter = _Counter()
    for words in source_sentences(manifests, text_files):
        counter.lines += 1
        counter.add(words)
    return counter


class _Counter:
    """Sentences as one array of word ids: ``<s> w1 ... wn </s>`` each."""

    def __init__(self):
        self.ids: dict[str, int] = {UNK: _UNK_ID, BOS: _BOS_ID, EOS: _EOS_ID}
        self.words: list[str] = [UNK, BOS, EOS]
        self.stream = array("i")
        self.sentences = 0
        self.tokens = 0
        self.lines = 0  # lines read (blank ones too), by _read_sources

    def add(self, words: list[str]) -> None:
        if BOS in words or EOS in words:  # sentence marks are not words
            words = [w for w in words if w not in (BOS, EOS)]
        if not words:
            return
        ids, get = self.ids, self.ids.get
        out = [_BOS_ID]
        for w in words:
            i = get(w)
            if i is None:
                i = ids[w] = len(self.words)
                self.words.append(w)
            out.append(i)
        out.append(_EOS_ID)
        self.stream.extend(out)
        self.sentences += 1
        self.tokens += len(words)

    def model(self, order: int, method: str, prune, oov_log_prob: float) -> WordLM:
        if order < 1:
            raise ValueError("order must be >= 1")
        if method not in METHODS:
            raise InputError(f"LM smoothing must be one of {', '.join(METHODS)}, "
                             f"not {method!r}")
        if not self.sentences:
            raise InputError("no words to build a language model from")
        thresholds = _thresholds(prune, order, self.tokens)
        stream = np.frombuffer(self.stream, dtype=np.int32).astype(np.int64)
        self.stream = array("i")
        vocab_size = len(self.words)
        keys, counts = _count_stream(stream, vocab_size, order)
        del stream
        lm = WordLM(order, oov_log_prob)
        discounts = _estimate(lm, self.words, keys, counts, order, method, thresholds)
        lm.stats = {"method": method, "order": order, "prune": list(thresholds),
                    "words": self.tokens, "sentences": self.sentences,
                    "vocabulary": len(lm.vocab),
                    "ngrams": {n: int(c) for n, c in lm.ngram_counts().items()},
                    "ngrams_before_pruning": {n: len(k) for n, k in enumerate(keys, 1)},
                    "discounts": discounts}
        return lm


def _thresholds(prune, order: int, words: int) -> tuple[int, ...]:
    if prune == "auto":
        prune = (0, 1) if words >= AUTO_PRUNE_WORDS else None
    if prune is None or prune is False:
        return (0,) * order
    if isinstance(prune, int):
        prune = (0, prune)
    try:
        values = [int(v) for v in prune]
    except (TypeError, ValueError):
        raise InputError(f"prune must be 'auto', None or counts per order, not {prune!r}") \
            from None
    if not values or len(values) > order:
        raise InputError(f"prune needs 1 to {order} thresholds (one per order), "
                         f"not {len(values)}")
    if values[0] != 0:
        raise InputError("prune: the unigram threshold must be 0 (every word is kept)")
    if any(b < a for a, b in zip(values, values[1:])) or min(values) < 0:
        raise InputError(f"prune thresholds must be >= 0 and never decrease: {values}")
    return tuple(values + [values[-1]] * (order - len(values)))


# -------------------------------------------------------------------- estimation
#
# An n-gram table of order k is a sorted int64 array of keys: the key of w1..wk is
# (number of w1..wk-1 in the table of order k-1) * V + wk; the number of an n-gram is its
# position in its table; the table of order 1 is every word id (0..V-1).

def _count_stream(stream: np.ndarray, vocab_size: int, order: int):
    """Raw counts of every n-gram within a sentence, orders 1..order."""
    size = len(stream)
    keys = [np.arange(vocab_size, dtype=np.int64)]
    counts = [np.bincount(stream, minlength=vocab_size).astype(np.int64)]
    ends = stream == _EOS_ID
    valid = np.ones(size, dtype=bool)  # an n-gram of the current order starts here
    ids = stream
    for k in range(2, order + 1):
        nxt = np.zeros(size, dtype=bool)
        if size >= k:
            nxt[:size - k + 1] = valid[:size - k + 1] & ~ends[k - 2:size - 1]
        pos = np.nonzero(nxt)[0]
        key = ids[pos] * vocab_size + stream[pos + k - 1]
        table, inverse, count = np.unique(key, return_inverse=True, return_counts=True)
        ids = np.full(size, -1, dtype=np.int64)
        ids[pos] = inverse
        keys.append(table)
        counts.append(count.astype(np.int64))
        valid = nxt
        del key, inverse, pos
    return keys, counts


def _lookup(keys: list[np.ndarray], vocab_size: int, rows: np.ndarray) -> np.ndarray:
    """The numbers of n-grams (rows of word ids), which must be in the tables."""
    ids = rows[:, 0].astype(np.int64)
    for m in range(1, rows.shape[1]):
        query = ids * vocab_size + rows[:, m]
        ids = np.searchsorted(keys[m], query)
        found = ids < len(keys[m])
        if not (found.all() and (keys[m][ids] == query).all()):
            raise InputError("inconsistent n-gram counts (an n-gram without its suffix)")
    return ids


def _discounts(adjusted: np.ndarray) -> tuple[float, float, float]:
    """Modified Kneser-Ney discounts D1, D2, D3+ (Chen & Goodman eq. 26); lmplz's fallback
    where the counts-of-counts cannot give them (small or artificial text)."""
    n = [int(np.count_nonzero(adjusted == j)) for j in range(1, 5)]
    if min(n) == 0:
        return FALLBACK_DISCOUNTS
    y = n[0] / (n[0] + 2 * n[1])
    d = tuple(j - (j + 1) * y * n[j] / n[j - 1] for j in (1, 2, 3))
    if any(not 0 < dj < j for j, dj in zip((1, 2, 3), d)):
        return FALLBACK_DISCOUNTS
    return d


def _discount_of(adjusted: np.ndarray, d: tuple[float, float, float]) -> np.ndarray:
    return np.select([adjusted == 0, adjusted == 1, adjusted == 2], [0.0, d[0], d[1]], d[2])


def _estimate(lm: WordLM, words: list[str], keys, counts, order: int, method: str,
              thresholds) -> list:
    """Fill ``lm`` with the smoothed back-off model of the raw counts; the discounts."""
    vocab_size = len(words)
    kn = method == "kneser-ney"
    rows = [np.arange(vocab_size, dtype=np.int32)[:, None]]
    suffix = [None]
    for k in range(2, order + 1):
        prefix = keys[k - 1] // vocab_size
        last = (keys[k - 1] % vocab_size).astype(np.int32)
        rows.append(np.column_stack([rows[k - 2][prefix], last]))
        suffix.append(_lookup(keys, vocab_size, rows[k - 1][:, 1:]))
    if kn:  # adjusted counts: continuation counts below the top order, except after <s>
        adjusted = [None] * order
        adjusted[order - 1] = counts[order - 1]
        for k in range(order - 1, 0, -1):
            cont = np.bincount(suffix[k], minlength=len(keys[k - 1])).astype(np.int64)
            starts = rows[k - 1][:, 0] == _BOS_ID
            adjusted[k - 1] = np.where(starts, counts[k - 1], cont)
    else:
        adjusted = counts
    is_bos = np.arange(vocab_size) == _BOS_ID
    # unigrams: interpolated with the uniform distribution over all words but <s>
    a1 = np.where(is_bos, 0, adjusted[0])
    discounts = []
    if kn:
        d = _discounts(a1[a1 > 0])
        discounts.append(list(d))
        disc = _discount_of(a1, d)
        num = a1 - disc
        total = float(a1.sum())
        gamma = float(disc.sum()) / total
    else:
        types = int(np.count_nonzero(a1))
        num = a1.astype(np.float64)
        total = float(a1.sum()) + types
        gamma = types / total
    probs = num / total + gamma / (vocab_size - 1)
    probs[_BOS_ID] = 1.0
    tables = [(np.arange(vocab_size), np.log(probs), None)]
    keep_prev = np.ones(vocab_size, dtype=bool)
    for k in range(2, order + 1):
        a, raw = adjusted[k - 1], counts[k - 1]
        keep = raw > thresholds[k - 1]
        prefix = keys[k - 1] // vocab_size
        n_prev = len(keys[k - 2])
        if kn:
            d = _discounts(a)
            discounts.append(list(d))
            disc = _discount_of(a, d)
            num = np.where(keep, a - disc, 0.0)
            total = np.bincount(prefix, weights=a, minlength=n_prev)
            mass = np.bincount(prefix, weights=np.where(keep, disc, a), minlength=n_prev)
        else:
            types = np.bincount(prefix, minlength=n_prev)
            num = np.where(keep, a, 0).astype(np.float64)
            total = np.bincount(prefix, weights=a, minlength=n_prev) + types
            mass = types + np.bincount(prefix, weights=np.where(keep, 0, a),
                                       minlength=n_prev)
        with np.errstate(divide="ignore", invalid="ignore"):
            gamma = np.where(total > 0, mass / np.maximum(total, 1e-300), 1.0)
            probs = num / total[prefix] + gamma[prefix] * probs[suffix[k - 1]]
        has_ext = np.bincount(prefix, weights=keep, minlength=n_prev) > 0
        back = np.where(has_ext & keep_prev, np.log(np.maximum(gamma, 1e-300)), 0.0)
        tables[k - 2] = (*tables[k - 2][:2], back)
        tables.append((np.nonzero(keep)[0], np.log(probs), None))
        keep_prev = keep
        del num, total, mass, gamma
    names = np.array(words, dtype=object)
    for k, (kept, logp, back) in enumerate(tables, 1):
        if k > 1:
            logp = logp[kept]
        grams = rows[k - 1][kept]
        cols = [names[grams[:, m]].tolist() for m in range(k)]
        grams_keys = list(zip(*cols))
        values = np.minimum(logp, 0.0)
        if k == 1:
            values[_BOS_ID] = BOS_LOG10 * _LN10
        lm._prob.update(zip(grams_keys, values.tolist()))
        if back is not None:
            back = back[kept]
            nz = np.nonzero(back != 0.0)[0]
            lm._bow.update(zip([grams_keys[i] for i in nz.tolist()], back[nz].tolist()))
    lm._finish()
    return [[round(x, 4) for x in d] for d in discounts]


# -------------------------------------------------------------------- ARPA reading

_NGRAM_HEADER = re.compile(r"ngram\s+(\d+)\s*=\s*(\d+)")
_SECTION = re.compile(r"\\(\d+)-grams:")


def _open_text(path: Path):
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    if gz:
        return gzip.open(path, "rt", encoding="utf-8-sig")
    return open(path, encoding="utf-8-sig")  # noqa: SIM115


def _read_arpa(path: Path, prob: dict, bow: dict) -> int:
    """Fill ``prob`` and ``bow`` (natural log) from an ARPA file; its order."""
    def bad(line_no: int, message: str):
        return InputError(f"{path}:{line_no}: {message}")

    try:
        f = _open_text(path)
    except FileNotFoundError:
        raise NotFoundError(f"{path}: language model not found") from None
    except OSError as err:
        raise NotFoundError(f"{path}: cannot read the language model ({err})") from None
    expected: dict[int, int] = {}
    state = "start"  # start, header, n (in the n-grams of order n), end
    section, seen, line_no = 0, 0, 0
    canon: dict[str, str] = {}
    try:
        with f:
            for line_no, line in enumerate(f, 1):
                s = line.strip()
                if state == "start":
                    if s == "\\data\\":
                        state = "header"
                    continue
                if not s:
                    continue
                if state == "end":
                    break
                if s.startswith("\\"):
                    if state == "header" and not expected:
                        raise bad(line_no, "no 'ngram N=count' line after \\data\\")
                    if section and seen != expected[section]:
                        raise bad(line_no, f"the \\data\\ header announces "
                                  f"{expected[section]} {section}-grams, the section holds "
                                  f"{seen}")
                    if s == "\\end\\":
                        missing = [n for n in expected if n > section and expected[n]]
                        if missing:
                            raise bad(line_no, f"no \\{missing[0]}-grams: section")
                        state = "end"
                        continue
                    m = _SECTION.fullmatch(s)
                    if not m:
                        raise bad(line_no, f"unexpected line {s[:60]!r}")
                    n = int(m.group(1))
                    if n != section + 1 or n not in expected:
                        raise bad(line_no, f"section \\{n}-grams: out of order or not in "
                                  "the \\data\\ header")
                    state, section, seen = "grams", n, 0
                    continue
                if state == "header":
                    m = _NGRAM_HEADER.fullmatch(s)
                    if not m:
                        raise bad(line_no, f"expected 'ngram N=count', not {s[:60]!r}")
                    expected[int(m.group(1))] = int(m.group(2))
                    continue
                fields = s.split()
                if len(fields) not in (section + 1, section + 2):
                    raise bad(line_no, f"a {section}-gram line needs a log10 probability, "
                              f"{section} word(s) and optionally a back-off weight: "
                              f"{s[:80]!r}")
                try:
                    p = float(fields[0])
                    b = float(fields[section + 1]) if len(fields) == section + 2 else 0.0
                except ValueError:
                    raise bad(line_no, f"not a number in {s[:80]!r}") from None
                if not p <= 0.0 or math.isnan(b) or math.isinf(b):
                    raise bad(line_no, f"a log10 probability must be <= 0 and a back-off "
                              f"weight finite: {s[:80]!r}")
                if section == 1:
                    w = fields[1]
                    canon[w] = w
                    key = (w,)
                else:
                    try:
                        key = tuple([canon[w] for w in fields[1:section + 1]])
                    except KeyError as err:
                        raise bad(line_no, f"word {err.args[0]!r} is not among the "
                                  "1-grams") from None
                if key in prob:
                    raise bad(line_no, f"n-gram {' '.join(key)!r} listed twice")
                prob[key] = p * _LN10
                if b != 0.0:
                    bow[key] = b * _LN10
                seen += 1
    except UnicodeDecodeError as err:
        raise bad(line_no + 1, f"not UTF-8 text ({err.reason})") from None
    except (OSError, EOFError) as err:
        raise bad(line_no + 1, f"cannot read ({err})") from None
    if state == "start":
        raise InputError(f"{path}: not an ARPA language model (no \\data\\ line)")
    if state != "end":
        raise bad(line_no, "the file ends before \\end\\ (cut short?)")
    if not canon:
        raise bad(line_no, "no 1-grams")
    return max([n for n, c in expected.items() if c] or [1])


# -------------------------------------------------------------------- older JSON models

def _from_json(path: Path) -> WordLM:
    """The JSON counts of older versions (histories padded with order-1 ``<s>``),
    re-estimated with modified Kneser-Ney and no pruning."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        order = int(data["order"])
        top = data["counts"][order - 1]
        oov = float(data.get("oov_log_prob", -10.0))
    except (ValueError, KeyError, IndexError, TypeError) as err:
        raise InputError(f"{path}: not a language model (JSON counts): {err}") from None
    raw = [Counter() for _ in range(order)]
    words = {}
    for history, table in top:
        for word, count in table.items():
            gram = [*history, word]
            i = 0
            while i < len(gram) and gram[i] == BOS:
                i += 1
            gram = ([BOS] if i else []) + gram[i:]
            for w in gram:
                words.setdefault(w, None)
            for k in range(1, min(order, len(gram)) + 1):
                raw[k - 1][tuple(gram[-k:])] += count
    names = [UNK, BOS, EOS] + [w for w in words if w not in (UNK, BOS, EOS)]
    ids = {w: i for i, w in enumerate(names)}
    vocab_size = len(names)
    unigram = np.zeros(vocab_size, dtype=np.int64)
    for (w,), c in raw[0].items():
        unigram[ids[w]] = c
    keys, counts = [np.arange(vocab_size, dtype=np.int64)], [unigram]
    for k in range(2, order + 1):
        if not raw[k - 1]:
            order = k - 1
            break
        rows = np.array([[ids[w] for w in g] for g in raw[k - 1]], dtype=np.int64)
        c = np.array(list(raw[k - 1].values()), dtype=np.int64)
        key = _lookup(keys, vocab_size, rows[:, :-1]) * vocab_size + rows[:, -1]
        sort = np.argsort(key)
        keys.append(key[sort])
        counts.append(c[sort])
    lm = WordLM(order, oov)
    _estimate(lm, names, keys, counts, order, "kneser-ney", (0,) * order)
    return lm


def source_stamps(paths: Iterable[str | Path]) -> list[list]:
    """Each source file's path, size and modification time: what a model built from them
    (the LM, the lexicon) is kept with, to be built again when one changes."""
    stamps = []
    for path in paths:
        try:
            st = Path(path).stat()
        except OSError as err:
            raise NotFoundError(f"{path}: cannot read source ({err.strerror})") from None
        stamps.append([str(path), st.st_size, st.st_mtime_ns])
    return stamps


def recipe_lm(cfg, corpora: str | Path | None = None) -> WordLM | None:
    """The word LM a recipe (a :class:`speechrnn.config.Config`) decodes with: its
    ``eval.lm_arpa`` as it is, or one built from its training transcripts and
    ``eval.lm_text`` (``eval.lm_order``, ``lm_method``, ``lm_prune``). A model with text
    files is kept in ``<workdir>/lm/lm.arpa`` and built again only when a source or a
    setting changes.
    Relative paths that do not exist are looked up under ``corpora`` (or
    ``$SPEECHRNN_CORPORA``)."""
    from .corpora import resolve_source

    ev = cfg.eval
    if ev.lm_arpa:
        return WordLM.load(resolve_source(ev.lm_arpa, corpora))
    manifests = cfg.data.training_manifests()
    prune = tuple(ev.lm_prune) or "auto"
    if not ev.lm_text:  # the transcripts alone: a small model, built in a moment
        return WordLM.from_sources(manifests, order=ev.lm_order, method=ev.lm_method,
                                   prune=prune)
    texts = [resolve_source(t, corpora) for t in ev.lm_text]
    settings = {"order": ev.lm_order, "method": ev.lm_method, "prune": list(ev.lm_prune),
                "sources": source_stamps([*manifests, *texts])}
    folder = cfg.workdir / "lm"
    arpa, meta = folder / "lm.arpa", folder / "lm.json"
    try:
        if json.loads(meta.read_text())["settings"] == settings and arpa.is_file():
            return WordLM.load(arpa)
    except (OSError, ValueError, KeyError):
        pass
    lm = WordLM.from_sources(manifests, texts, order=ev.lm_order, method=ev.lm_method,
                             prune=prune)
    if lm is None:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    lm.write_arpa(arpa)
    atomic_write_text(meta, json.dumps({"settings": settings, "stats": lm.stats},
                                       default=str, indent=1))
    return lm

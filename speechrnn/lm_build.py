"""Building a word n-gram LM from text: counting, smoothing, pruning (a :class:`WordLM`).

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

The result is the back-off form of that interpolated model, exactly as an ARPA file holds
it. :func:`lm_from_texts` and :func:`lm_from_sources` build one in memory, :func:`build_lm`
writes one (``speechrnn lm``), :func:`recipe_lm` is the one a recipe decodes with.
"""

from __future__ import annotations

import json
import math
import resource
import time
from array import array
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from .config import resolve_source
from .errors import InputError
from .files import atomic_write_text, source_stamps
from .lm import BOS, BOS_LOG10, EOS, OOV_LOG_PROB, UNK, WordLM
from .manifest import read_manifest, text_file_lines
from .text import normalize_text

_UNK_ID, _BOS_ID, _EOS_ID = 0, 1, 2
METHODS = ("kneser-ney", "witten-bell")
AUTO_PRUNE_WORDS = 1_000_000  # prune="auto": from this many words on, drop singletons
FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)  # lmplz's --discount_fallback, for tiny texts
_LN10 = math.log(10.0)

__all__ = ["METHODS", "build_lm", "lm_from_sources", "lm_from_texts", "recipe_lm",
           "source_sentences"]


def lm_from_texts(texts: Iterable[str], order: int = 3, oov_log_prob: float = OOV_LOG_PROB,
                  method: str = "kneser-ney", prune="auto") -> WordLM:
    """The model of sentences already normalised (words split on white space)."""
    counter = _Counter()
    for text in texts:
        counter.add(text.split())
    return counter.model(order, method, prune, oov_log_prob)


def lm_from_sources(manifests: Iterable[str | Path] = (),
                    text_files: Iterable[str | Path] = (), order: int = 3,
                    method: str = "kneser-ney", prune="auto",
                    oov_log_prob: float = OOV_LOG_PROB) -> WordLM | None:
    """The LM of manifests' transcripts and text files (a sentence a line; ``.gz``
    too), every line normalised as training transcripts are; None when no source is
    given or they hold no line."""
    counter = _read_sources(manifests, text_files)
    if counter.lines == 0:
        return None
    return counter.model(order, method, prune, oov_log_prob)


def build_lm(text_files: Iterable[str | Path], manifests: Iterable[str | Path],
             out: str | Path, order: int = 3, method: str = "kneser-ney",
             prune="auto") -> dict:
    """Build the model of text files and manifests' transcripts, write it as ARPA to
    ``out`` (``.gz``: gzipped) and return what it took: words, sentences, vocabulary,
    n-grams per order (kept, and before pruning), discounts, seconds, peak RSS, bytes."""
    start = time.perf_counter()
    counter = _read_sources(manifests, text_files)
    read_s = time.perf_counter() - start
    lm = counter.model(order, method, prune, OOV_LOG_PROB)
    path = lm.write_arpa(out)
    return {**lm.stats, "out": str(path), "read_seconds": round(read_s, 2),
            "seconds": round(time.perf_counter() - start, 2), "peak_rss_mb": peak_rss_mb(),
            "arpa_bytes": path.stat().st_size}


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (MB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def source_sentences(manifests: Iterable[str | Path] = (),
                     text_files: Iterable[str | Path] = ()) -> Iterator[list[str]]:
    """The normalised words of each manifest row's transcript, then of each line of the
    text files (a sentence a line, ``.gz`` too; a blank line gives no words)."""
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
        prob, bow, discounts = _estimate(self.words, keys, counts, order, method, thresholds)
        lm = WordLM.from_tables(order, prob, bow, oov_log_prob)
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


def _estimate(words: list[str], keys, counts, order: int, method: str,
              thresholds) -> tuple[dict, dict, list]:
    """The smoothed back-off model of the raw counts: its n-gram log-probabilities,
    its contexts' back-off weights (natural log) and the discounts."""
    vocab_size = len(words)
    kn = method == "kneser-ney"
    rows, suffix = _ngram_rows(keys, vocab_size, order)
    adjusted = _adjusted_counts(keys, counts, rows, suffix, order) if kn else counts
    probs, discounts = _unigram_probs(adjusted[0], vocab_size, kn)
    tables = [(np.arange(vocab_size), np.log(probs), None)]
    keep_prev = np.ones(vocab_size, dtype=bool)
    for k in range(2, order + 1):
        keep = counts[k - 1] > thresholds[k - 1]
        prefix = keys[k - 1] // vocab_size
        probs, gamma, d = _order_probs(adjusted[k - 1], keep, prefix, len(keys[k - 2]),
                                       probs[suffix[k - 1]], kn)
        if d is not None:
            discounts.append(d)
        has_ext = np.bincount(prefix, weights=keep, minlength=len(keys[k - 2])) > 0
        back = np.where(has_ext & keep_prev, np.log(np.maximum(gamma, 1e-300)), 0.0)
        tables[k - 2] = (*tables[k - 2][:2], back)
        tables.append((np.nonzero(keep)[0], np.log(probs), None))
        keep_prev = keep
    prob, bow = _back_off_tables(words, rows, tables)
    return prob, bow, [[round(x, 4) for x in d] for d in discounts]


def _ngram_rows(keys, vocab_size: int, order: int):
    """Each table's n-grams as rows of word ids, and (order 2 and up) the number of each
    n-gram's suffix (its last n-1 words) in the table below."""
    rows = [np.arange(vocab_size, dtype=np.int32)[:, None]]
    suffix = [None]
    for k in range(2, order + 1):
        prefix = keys[k - 1] // vocab_size
        last = (keys[k - 1] % vocab_size).astype(np.int32)
        rows.append(np.column_stack([rows[k - 2][prefix], last]))
        suffix.append(_lookup(keys, vocab_size, rows[k - 1][:, 1:]))
    return rows, suffix


def _adjusted_counts(keys, counts, rows, suffix, order: int) -> list:
    """Kneser-Ney's counts: the raw ones at the top order, below it continuation counts
    (how many words precede the n-gram), except for n-grams that begin with ``<s>``."""
    adjusted = [None] * order
    adjusted[order - 1] = counts[order - 1]
    for k in range(order - 1, 0, -1):
        cont = np.bincount(suffix[k], minlength=len(keys[k - 1])).astype(np.int64)
        starts = rows[k - 1][:, 0] == _BOS_ID
        adjusted[k - 1] = np.where(starts, counts[k - 1], cont)
    return adjusted


def _unigram_probs(adjusted: np.ndarray, vocab_size: int, kn: bool):
    """Unigram probabilities, interpolated with the uniform distribution over all words
    but ``<s>`` (whose entry is 1, never used); the discounts ([] for Witten-Bell)."""
    a1 = np.where(np.arange(vocab_size) == _BOS_ID, 0, adjusted)
    discounts = []
    if kn:
        d = _discounts(a1[a1 > 0])
        discounts.append(list(d))
        disc = _discount_of(a1, d)
        num, total = a1 - disc, float(a1.sum())
        gamma = float(disc.sum()) / total
    else:
        types = int(np.count_nonzero(a1))
        num, total = a1.astype(np.float64), float(a1.sum()) + types
        gamma = types / total
    probs = num / total + gamma / (vocab_size - 1)
    probs[_BOS_ID] = 1.0
    return probs, discounts


def _order_probs(a: np.ndarray, keep: np.ndarray, prefix: np.ndarray, n_prev: int,
                 lower: np.ndarray, kn: bool):
    """One order's interpolated probabilities (``lower``: each n-gram's suffix's), each
    context's back-off mass ``gamma`` and the discounts (None for Witten-Bell). Pruned
    n-grams (``keep`` false) give their mass to their context."""
    d = None
    if kn:
        d = _discounts(a)
        disc = _discount_of(a, d)
        num = np.where(keep, a - disc, 0.0)
        total = np.bincount(prefix, weights=a, minlength=n_prev)
        mass = np.bincount(prefix, weights=np.where(keep, disc, a), minlength=n_prev)
    else:
        types = np.bincount(prefix, minlength=n_prev)
        num = np.where(keep, a, 0).astype(np.float64)
        total = np.bincount(prefix, weights=a, minlength=n_prev) + types
        mass = types + np.bincount(prefix, weights=np.where(keep, 0, a), minlength=n_prev)
    with np.errstate(divide="ignore", invalid="ignore"):
        gamma = np.where(total > 0, mass / np.maximum(total, 1e-300), 1.0)
        probs = num / total[prefix] + gamma[prefix] * lower
    return probs, gamma, (list(d) if d is not None else None)


def _back_off_tables(words: list[str], rows, tables) -> tuple[dict, dict]:
    """The kept n-grams as word tuples: their log-probabilities and their contexts'
    back-off weights (0 left out), as :meth:`WordLM.from_tables` takes them."""
    names = np.array(words, dtype=object)
    prob: dict[tuple[str, ...], float] = {}
    bow: dict[tuple[str, ...], float] = {}
    for k, (kept, logp, back) in enumerate(tables, 1):
        if k > 1:
            logp = logp[kept]
        grams = rows[k - 1][kept]
        cols = [names[grams[:, m]].tolist() for m in range(k)]
        grams_keys = list(zip(*cols))
        values = np.minimum(logp, 0.0)
        if k == 1:
            values[_BOS_ID] = BOS_LOG10 * _LN10
        prob.update(zip(grams_keys, values.tolist()))
        if back is not None:
            back = back[kept]
            nz = np.nonzero(back != 0.0)[0]
            bow.update(zip([grams_keys[i] for i in nz.tolist()], back[nz].tolist()))
    return prob, bow


def recipe_lm(cfg, corpora: str | Path | None = None) -> WordLM | None:
    """The word LM a recipe (a :class:`speechrnn.config.Config`) decodes with: its
    ``eval.lm_arpa`` as it is, or one built from its training transcripts and
    ``eval.lm_text`` (``eval.lm_order``, ``lm_method``, ``lm_prune``). A model with text
    files is kept in ``<workdir>/lm/lm.arpa`` and built again only when a source or a
    setting changes.
    Relative paths that do not exist are looked up under ``corpora`` (or
    ``$SPEECHRNN_CORPORA``)."""
    ev = cfg.eval
    if ev.lm_arpa:
        return WordLM.load(resolve_source(ev.lm_arpa, corpora))
    manifests = cfg.data.training_manifests()
    prune = tuple(ev.lm_prune) or "auto"
    if not ev.lm_text:  # the transcripts alone: a small model, built in a moment
        return lm_from_sources(manifests, order=ev.lm_order, method=ev.lm_method,
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
    lm = lm_from_sources(manifests, texts, order=ev.lm_order, method=ev.lm_method,
                         prune=prune)
    if lm is None:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    lm.write_arpa(arpa)
    atomic_write_text(meta, json.dumps({"settings": settings, "stats": lm.stats},
                                       default=str, indent=1))
    return lm

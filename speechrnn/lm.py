"""Word n-gram language model for decoding: a back-off model, as an ARPA file holds it.

:class:`WordLM` holds a probability for each n-gram and a back-off weight for each context.
:meth:`WordLM.log_prob` answers with standard back-off (natural log), the same value KenLM
gives for the file :meth:`WordLM.write_arpa` writes. :meth:`WordLM.load` reads any ARPA
file (``lmplz``'s, SRILM's, :mod:`speechrnn.lm_build`'s; ``.gz`` too). Building a model
from text (modified Kneser-Ney, Witten-Bell, pruning) is :mod:`speechrnn.lm_build`'s job.

An unknown word gets the ``<unk>`` probability (after the back-off weights of its context)
when the model has ``<unk>`` (a built one always has), else ``oov_log_prob``; for the
beam search (:meth:`WordLM.log_prob`) never more than ``oov_log_prob``
(:data:`OOV_LOG_PROB` unless given): a model of a few sentences gives ``<unk>`` a large
share, and a misspelt word the beam search can always produce must not pay less than the
decoder's partial-word penalty. :meth:`WordLM.arpa_log_prob` is the uncapped value KenLM
gives. ``prefixes`` lists every prefix of a known word, so that a decoder can tell a partial
word that can still become a known word from one that cannot.
"""

from __future__ import annotations

import atexit
import contextlib
import gzip
import io
import math
import os
import re
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from .errors import InputError, NotFoundError
from .files import atomic_write

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
BOS_LOG10 = -99.0  # the probability of <s> (never predicted), as SRILM and KenLM write it
OOV_LOG_PROB = -10.0  # ln P of a word the model does not know, at most (see above)
_LN10 = math.log(10.0)
_LOG10E = 1.0 / _LN10

__all__ = ["BOS", "BOS_LOG10", "EOS", "OOV_LOG_PROB", "UNK", "WordLM"]


class WordLM:
    """A back-off word n-gram model (natural-log probabilities in memory)."""

    def __init__(self, order: int = 3, oov_log_prob: float = OOV_LOG_PROB):
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

    @classmethod
    def from_tables(cls, order: int, prob: dict, bow: dict,
                    oov_log_prob: float = OOV_LOG_PROB) -> WordLM:
        """The model of its tables: ``prob`` (every n-gram: ln P(last word | the others))
        and ``bow`` (contexts: ln back-off weight, 0 left out)."""
        lm = cls(order, oov_log_prob)
        lm._prob, lm._bow = prob, bow
        lm._finish()
        return lm

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
    def from_arpa(cls, path: str | Path, oov_log_prob: float = OOV_LOG_PROB) -> WordLM:
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
        """An ARPA file (plain or gzipped): :meth:`from_arpa`."""
        return cls.from_arpa(path)

    # ---------------------------------------------------------------- internals

    def _finish(self) -> None:
        words = {k[0] for k in self._prob if len(k) == 1}
        if not words:
            raise InputError("no words to build a language model from")
        self._unk = UNK in words
        self.vocab = words - {BOS, EOS, UNK}
        self.prefixes = {w[:i] for w in self.vocab for i in range(len(w) + 1)}


def _remove_quietly(name: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(name)


# -------------------------------------------------------------------- ARPA reading

_NGRAM_HEADER = re.compile(r"ngram\s+(\d+)\s*=\s*(\d+)")
_SECTION = re.compile(r"\\(\d+)-grams:")


def _open_text(path: Path):
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    if gz:
        return gzip.open(path, "rt", encoding="utf-8-sig")
    return open(path, encoding="utf-8-sig")  # noqa: SIM115


class _BadLine(Exception):
    """What is wrong with the line being read (the reader adds the file and line)."""


class _ArpaReader:
    """An ARPA file's lines, one at a time, into ``prob`` and ``bow`` (natural log):
    ``start`` (before ``\\data\\``), ``header`` (its ``ngram N=count`` lines), ``grams``
    (in the section of the n-grams of order :attr:`section`), ``end``."""

    def __init__(self, prob: dict, bow: dict):
        self.prob, self.bow = prob, bow
        self.expected: dict[int, int] = {}  # n-grams per order, as the header says
        self.state, self.section, self.seen = "start", 0, 0
        self.canon: dict[str, str] = {}  # each 1-gram's word, one string object per word
        self.line_no = 0  # lines read

    def read(self, text: str) -> None:
        self.line_no += 1
        s = text.strip()
        if self.state == "start":
            if s == "\\data\\":
                self.state = "header"
        elif not s or self.state == "end":
            return
        elif s.startswith("\\"):
            self._mark(s)
        elif self.state == "header":
            m = _NGRAM_HEADER.fullmatch(s)
            if not m:
                raise _BadLine(f"expected 'ngram N=count', not {s[:60]!r}")
            self.expected[int(m.group(1))] = int(m.group(2))
        else:
            self._gram(s)

    def _mark(self, s: str) -> None:
        """A section mark: ``\\n-grams:`` or ``\\end\\``."""
        expected, section = self.expected, self.section
        if self.state == "header" and not expected:
            raise _BadLine("no 'ngram N=count' line after \\data\\")
        if section and self.seen != expected[section]:
            raise _BadLine(f"the \\data\\ header announces {expected[section]} "
                           f"{section}-grams, the section holds {self.seen}")
        if s == "\\end\\":
            missing = [n for n in expected if n > section and expected[n]]
            if missing:
                raise _BadLine(f"no \\{missing[0]}-grams: section")
            self.state = "end"
            return
        m = _SECTION.fullmatch(s)
        if not m:
            raise _BadLine(f"unexpected line {s[:60]!r}")
        n = int(m.group(1))
        if n != section + 1 or n not in expected:
            raise _BadLine(f"section \\{n}-grams: out of order or not in the \\data\\ "
                           "header")
        self.state, self.section, self.seen = "grams", n, 0

    def _gram(self, s: str) -> None:
        """An n-gram line: log10 probability, the words, optionally a back-off weight."""
        n, fields = self.section, s.split()
        if len(fields) not in (n + 1, n + 2):
            raise _BadLine(f"a {n}-gram line needs a log10 probability, {n} word(s) and "
                           f"optionally a back-off weight: {s[:80]!r}")
        try:
            p = float(fields[0])
            b = float(fields[n + 1]) if len(fields) == n + 2 else 0.0
        except ValueError:
            raise _BadLine(f"not a number in {s[:80]!r}") from None
        if not p <= 0.0 or math.isnan(b) or math.isinf(b):
            raise _BadLine(f"a log10 probability must be <= 0 and a back-off weight "
                           f"finite: {s[:80]!r}")
        if n == 1:
            self.canon[fields[1]] = fields[1]
            key = (fields[1],)
        else:
            try:
                key = tuple([self.canon[w] for w in fields[1:n + 1]])
            except KeyError as err:
                raise _BadLine(f"word {err.args[0]!r} is not among the 1-grams") from None
        if key in self.prob:
            raise _BadLine(f"n-gram {' '.join(key)!r} listed twice")
        self.prob[key] = p * _LN10
        if b != 0.0:
            self.bow[key] = b * _LN10
        self.seen += 1

    def finish(self) -> int:
        """The model's order, once the whole file is read."""
        if self.state != "end":
            raise _BadLine("the file ends before \\end\\ (cut short?)")
        if not self.canon:
            raise _BadLine("no 1-grams")
        return max([n for n, c in self.expected.items() if c] or [1])


def _read_arpa(path: Path, prob: dict, bow: dict) -> int:
    """Fill ``prob`` and ``bow`` (natural log) from an ARPA file; its order. Malformed:
    :class:`InputError` naming the file and line."""
    try:
        f = _open_text(path)
    except FileNotFoundError:
        raise NotFoundError(f"{path}: language model not found") from None
    except OSError as err:
        raise NotFoundError(f"{path}: cannot read the language model ({err})") from None
    reader = _ArpaReader(prob, bow)
    try:
        with f:
            for line in f:
                reader.read(line)
                if reader.state == "end":
                    break
        if reader.state == "start":
            raise InputError(f"{path}: not an ARPA language model (no \\data\\ line)")
        return reader.finish()
    except _BadLine as err:
        raise InputError(f"{path}:{reader.line_no}: {err}") from None
    except UnicodeDecodeError as err:
        raise InputError(f"{path}:{reader.line_no + 1}: not UTF-8 text ({err.reason})") \
            from None
    except (OSError, EOFError) as err:
        raise InputError(f"{path}:{reader.line_no + 1}: cannot read ({err})") from None

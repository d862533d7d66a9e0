"""Decoding: per-frame log-probabilities -> text.

Greedy CTC decoding takes the best label of every frame, merges repeats and drops blanks.
Beam search (CTC prefix beam search, Hannun et al. 2014) keeps the ``beam_width`` best
prefixes and, given a word language model (:class:`speechrnn.lm.WordLM`), adds
``lm_weight`` x its log-probability at every word end and ``word_bonus`` per word; a partial
word that can no longer become a known word pays the LM's out-of-vocabulary penalty once.

:func:`decode` returns a :class:`Hypothesis`: the text, and for every word its start and
end time and a confidence. Times come from the CTC alignment of the chosen text (Viterbi
over the frames): a word starts at the first frame of its first character and ends after
the last frame of its last character. A character's confidence is its best posterior
among its aligned frames; a word's is the geometric mean over its characters, and the
utterance's the geometric mean over all of them.

Beam search with a word LM runs in C++ (:mod:`speechrnn.fastbeam`, flashlight-text) when
``DecodingOptions.engine`` is ``auto`` or ``flashlight``, flashlight-text is installed and
the LM has an ARPA file (``lm.arpa_path()``); with ``auto`` it falls back to the Python
search otherwise, and ``python`` always runs the Python search. The C++ search (its trie and
loaded LM) is built once per (LM, alphabet) and reused, whatever the options.

How a model decodes unless told otherwise is saved with it (:mod:`speechrnn.inference`).
"""

from __future__ import annotations

import math
import threading
import weakref
from dataclasses import dataclass, field, replace

import numpy as np

from . import fastbeam
from .config import Config, EvalConfig
from .errors import InputError, MissingDependencyError
from .lm import EOS, WordLM
from .lm_build import recipe_lm
from .text import Alphabet


@dataclass(frozen=True)
class Word:
    word: str
    start: float  # seconds
    end: float
    confidence: float  # 0..1


@dataclass(frozen=True)
class Hypothesis:
    text: str
    words: tuple[Word, ...] = ()
    confidence: float = 0.0
    # a phone model's best path ("HH AH L OW | W ER L D"); else "" (keyword only: a
    # Transcript's further fields stay positional)
    units: str = field(default="", kw_only=True)

    def shifted(self, seconds: float) -> Hypothesis:
        """The same hypothesis with every time moved by ``seconds`` (a chunk's offset)."""
        return replace(self, words=tuple(replace(w, start=round(w.start + seconds, 3),
                                                 end=round(w.end + seconds, 3))
                                         for w in self.words))

    def as_dict(self) -> dict:
        out = {"text": self.text, "confidence": round(self.confidence, 4),
               "words": [{"word": w.word, "start": w.start, "end": w.end,
                          "confidence": round(w.confidence, 4)} for w in self.words]}
        return {**out, "phones": self.units} if self.units else out


@dataclass(frozen=True)
class DecodingOptions:
    method: str = "greedy"  # greedy | beam
    beam_width: int = EvalConfig.beam_width
    lm_weight: float = EvalConfig.lm_weight  # with a language model
    word_bonus: float = EvalConfig.word_bonus
    prune: float = -10.0  # characters below this log-probability at a frame are not tried
    engine: str = "auto"  # beam search with an LM: auto | flashlight (C++) | python

    def __post_init__(self):
        if self.method not in ("greedy", "beam"):
            raise InputError(f"decoding method must be greedy or beam, not {self.method!r}")
        if self.engine not in ("auto", "flashlight", "python"):
            raise InputError(f"decoding engine must be auto, flashlight or python, "
                             f"not {self.engine!r}")
        if self.beam_width < 1:
            raise InputError("beam_width must be >= 1")

    @classmethod
    def from_eval(cls, cfg: EvalConfig, method: str = "beam") -> DecodingOptions:
        """A recipe's decoding options: its ``eval`` section."""
        return cls(method, cfg.beam_width, cfg.lm_weight, cfg.word_bonus)


@dataclass(frozen=True)
class Decoding:
    """How to decode: the options and, for beam search, an optional word LM."""

    options: DecodingOptions = DecodingOptions()
    lm: WordLM | None = None

    def __post_init__(self):
        if self.lm is not None and self.options.method != "beam":
            raise InputError("a language model needs --decoder beam (beam search)")

    @property
    def name(self) -> str:
        """``greedy``, ``beam`` or ``beam_lm``: names reports and metrics."""
        return self.options.method + ("_lm" if self.lm is not None else "")

    def describe(self) -> str:
        """For people: ``greedy``, ``beam 16``, or ``beam 64 + word LM (weight 0.8, word
        bonus 2)``."""
        o = self.options
        if o.method == "greedy":
            return "greedy"
        if self.lm is None:
            return f"beam {o.beam_width}"
        return (f"beam {o.beam_width} + word LM (weight {o.lm_weight:g}, "
                f"word bonus {o.word_bonus:g})")

    @classmethod
    def for_recipe(cls, cfg: Config, method: str = "beam", corpora=None) -> Decoding:
        """How a recipe decodes: greedy, or beam search as its ``eval`` section says with
        its word LM (:func:`speechrnn.lm_build.recipe_lm`: the training transcripts and
        ``eval.lm_text``, or ``eval.lm_arpa``; text files looked up under ``corpora``)."""
        if method == "greedy":
            return cls()
        return cls(DecodingOptions.from_eval(cfg.eval, method), recipe_lm(cfg, corpora))


def greedy_ids(log_probs: np.ndarray, blank: int = 0) -> list[int]:
    """Best path of one utterance's (T, V) log-probabilities, repeats merged, blanks dropped."""
    best = np.asarray(log_probs).argmax(axis=-1)
    if best.size == 0:
        return []
    keep = np.ones(best.shape, dtype=bool)
    keep[1:] = best[1:] != best[:-1]
    return [int(i) for i in best[keep] if i != blank]


def greedy_decode(log_probs: np.ndarray, alphabet: Alphabet) -> str:
    """The best path's labels as text: a character model's words, a phone model's phones
    (``HH AH L OW | W ER L D``: :func:`decode_text` finds its words)."""
    return " ".join(alphabet.decode(greedy_ids(log_probs, alphabet.blank)).split())


def greedy_batch(log_probs: np.ndarray, lengths, alphabet: Alphabet) -> list[str]:
    """Greedy text of each item of a padded batch (B, T, V), using only its valid frames."""
    return [greedy_decode(log_probs[i, :int(n)], alphabet) for i, n in enumerate(lengths)]


def _logadd(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    return max(a, b) + math.log1p(math.exp(-abs(a - b)))


class _LMScorer:
    """LM score of a text prefix: completed words, plus the OOV penalty for a partial word
    that is no known word's prefix. Cached per prefix."""

    def __init__(self, lm: WordLM | None, weight: float, bonus: float):
        self.lm, self.weight, self.bonus = lm, weight, bonus
        self.cache: dict[str, float] = {"": 0.0}

    def __call__(self, prefix: str) -> float:
        if prefix in self.cache:
            return self.cache[prefix]
        if prefix.endswith(" "):  # a word was just completed
            head, _, word = prefix[:-1].rpartition(" ")
            score = self(head + " " if head else "") + self._word(head.split(), word)
        else:
            head, space, partial = prefix.rpartition(" ")
            score = self(head + space)
            if self.lm is not None and partial not in self.lm.prefixes:
                score += self.weight * self.lm.oov_log_prob
        self.cache[prefix] = score
        return score

    def _word(self, history: list[str], word: str) -> float:
        if self.lm is None:
            return self.bonus
        # an unknown word pays the LM's OOV log-probability (log_prob returns it)
        return self.weight * self.lm.log_prob(tuple(history), word) + self.bonus

    def final(self, prefix: str) -> float:
        """Score of a whole hypothesis: its last word completed, then end of sentence."""
        text = prefix.strip()
        if not text:
            return 0.0
        score = self(text + " ")
        if self.lm is not None:
            score += self.weight * self.lm.log_prob(tuple(text.split()), EOS)
        return score


def beam_search(log_probs: np.ndarray, alphabet: Alphabet,
                options: DecodingOptions = DecodingOptions(method="beam"),
                lm: WordLM | None = None) -> str:
    """CTC prefix beam search over one utterance's (T, V) log-probabilities (characters;
    a phone model searches its lexicon: :func:`lexicon_search`)."""
    if alphabet.units != "chars":
        raise InputError("the Python beam search spells characters: a phone model decodes "
                         "with its lexicon (decoding engine auto or flashlight)")
    chars = alphabet.characters
    scorer = _LMScorer(lm, options.lm_weight, options.word_bonus)
    beams: dict[str, tuple[float, float]] = {"": (0.0, -math.inf)}  # prefix -> (blank, non)
    neg = -math.inf
    for frame in np.asarray(log_probs, dtype=np.float64):
        candidates = [int(i) for i in np.nonzero(frame >= options.prune)[0]]
        if alphabet.blank not in candidates:
            candidates.append(alphabet.blank)
        nxt: dict[str, list[float]] = {}

        def add(prefix, blank=neg, non=neg, nxt=nxt):
            entry = nxt.setdefault(prefix, [neg, neg])
            entry[0] = _logadd(entry[0], blank)
            entry[1] = _logadd(entry[1], non)

        for prefix, (p_b, p_nb) in beams.items():
            total = _logadd(p_b, p_nb)
            last = prefix[-1] if prefix else None
            for k in candidates:
                p = frame[k]
                if k == alphabet.blank:
                    add(prefix, blank=total + p)
                    continue
                c = chars[k - 1]
                if c == " " and (not prefix or last == " "):
                    add(prefix, non=total + p)  # no leading or double spaces: stay put
                    continue
                if c == last:
                    add(prefix, non=p_nb + p)  # a repeat merges ...
                    add(prefix + c, non=p_b + p)  # ... unless a blank separated it
                else:
                    add(prefix + c, non=total + p)
        ranked = sorted(nxt.items(), key=lambda kv: _logadd(*kv[1]) + scorer(kv[0]),
                        reverse=True)
        beams = {k: (v[0], v[1]) for k, v in ranked[:options.beam_width]}
    best = max(beams.items(), key=lambda kv: _logadd(*kv[1]) + scorer.final(kv[0]))
    return " ".join(best[0].split())


def align(log_probs: np.ndarray, labels: list[int], blank: int = 0) -> list[tuple[int, int]]:
    """CTC forced alignment (Viterbi): the (first, last) frame of each label of ``labels``
    on its best path through ``log_probs`` (T, V). Raises ValueError if no path exists."""
    lp = np.asarray(log_probs, dtype=np.float64)
    if not labels:
        return []
    states = np.full(2 * len(labels) + 1, blank, dtype=np.int64)
    states[1::2] = labels
    n = len(states)
    skip = np.zeros(n, dtype=bool)  # s-2 -> s allowed: a label unlike the one before it
    skip[3::2] = states[3::2] != states[1:-2:2]
    no_skip = ~skip
    score = np.full(n, -np.inf)
    score[:2] = lp[0, states[:2]]
    emit = lp[:, states]  # (T, n): each state's label log-probability per frame
    back = np.zeros((len(lp), n), dtype=np.int8)  # 0 stay, 1 from s-1, 2 from s-2
    one, two = np.full(n, -np.inf), np.full(n, -np.inf)
    for t in range(1, len(lp)):
        one[1:] = score[:-1]
        two[2:] = score[:-2]
        two[no_skip] = -np.inf
        best, choice = score.copy(), back[t]
        for k, came in ((1, one), (2, two)):
            mask = came > best
            best[mask], choice[mask] = came[mask], k
        score = best + emit[t]
    s = n - 1 if n == 1 or score[-1] >= score[-2] else n - 2
    if not np.isfinite(score[s]):
        raise ValueError("the text cannot be aligned to these frames")
    spans: dict[int, list[int]] = {}
    for t in range(len(lp) - 1, -1, -1):
        if s % 2:
            spans.setdefault(s // 2, [t, t])[0] = t
        s -= int(back[t, s])
    return [tuple(spans[i]) for i in range(len(labels))]


def hypothesis(text: str, log_probs: np.ndarray, alphabet: Alphabet,
               frame_seconds: float) -> Hypothesis:
    """Word timings and confidences of ``text`` decoded from ``log_probs``: each word
    spelled in the model's units (its first spelling: a phone model's first
    pronunciation), separators between words, aligned to the frames."""
    text = " ".join(text.split())
    if not text:
        return Hypothesis("")
    labels: list[int] = []
    bounds = []  # each word's first and last label + 1
    for word in text.split(" "):
        if labels:
            labels.append(alphabet.separator)
        spelling = alphabet.spellings(word)[0]
        bounds.append((len(labels), len(labels) + len(spelling)))
        labels += spelling
    lp = np.asarray(log_probs)
    spans = align(lp, labels, alphabet.blank)
    label_logp = [float(lp[a:b + 1, k].max()) for (a, b), k in zip(spans, labels)]
    words = []
    for token, (a, b) in zip(text.split(" "), bounds):
        conf = math.exp(sum(label_logp[a:b]) / (b - a))
        words.append(Word(token, round(spans[a][0] * frame_seconds, 3),
                          round((spans[b - 1][1] + 1) * frame_seconds, 3), conf))
    units = [c for c, k in zip(label_logp, labels) if k != alphabet.separator]
    return Hypothesis(text, tuple(words), math.exp(sum(units) / len(units)))


_searches: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # lm -> {key: search}
_searches_lock = threading.Lock()


_lexicon_only: dict[str, object] = {}  # alphabet key -> a phone model's search without LM


def lexicon_search(alphabet: Alphabet, options: DecodingOptions, lm: WordLM | None):
    """The C++ beam search (:class:`speechrnn.fastbeam.LexiconBeamSearch`) for ``lm`` when
    ``options`` choose it, built once per (LM, alphabet) and cached (call it with the
    options); None where the Python search runs instead. A phone model always searches
    its lexicon (with ``lm``, or without one: the words alone), whatever the method."""
    phones = alphabet.units != "chars"
    if not phones and (options.method != "beam" or lm is None or options.engine == "python"):
        return None
    if phones and options.engine == "python":
        raise InputError("a phone model decodes with its lexicon in flashlight-text's "
                         "search: decoding engine auto or flashlight, not python")

    if not fastbeam.available():
        if options.engine == "flashlight" or phones:
            raise MissingDependencyError(
                ("a phone model decodes with" if phones else "decoding engine flashlight "
                 "needs") + " flashlight-text: pip install flashlight-text")
        return None
    arpa_path = getattr(lm, "arpa_path", None)
    if lm is not None and arpa_path is None:
        if options.engine == "flashlight" or phones:
            raise InputError(("a phone model's" if phones else "decoding engine flashlight "
                              "needs a") + " language model with an ARPA file")
        return None
    with _searches_lock:  # one trie and one loaded LM per (LM, alphabet), whatever the options
        if lm is None:
            if alphabet.key not in _lexicon_only:
                _lexicon_only[alphabet.key] = fastbeam.LexiconBeamSearch(
                    alphabet, None, alphabet.lexicon.pronunciations, options)
            return _lexicon_only[alphabet.key]
        per_lm = _searches.setdefault(lm, {})
        if alphabet.key not in per_lm:
            per_lm[alphabet.key] = fastbeam.LexiconBeamSearch(alphabet, arpa_path(),
                                                              lm.vocab, options)
        return per_lm[alphabet.key]


def decode_text(log_probs: np.ndarray, alphabet: Alphabet, options: DecodingOptions,
                lm: WordLM | None = None) -> str:
    """The words of one utterance. A phone model's always come from its lexicon search
    (greedy: without the LM, at ``options.beam_width``)."""
    if alphabet.units != "chars":
        return lexicon_search(alphabet, options, lm if options.method == "beam" else None)(
            log_probs, options)
    if options.method == "greedy":
        return greedy_decode(log_probs, alphabet)
    search = lexicon_search(alphabet, options, lm)
    if search is not None:
        return search(log_probs, options)
    return beam_search(log_probs, alphabet, options, lm)


def decode(log_probs: np.ndarray, alphabet: Alphabet, options: DecodingOptions = DecodingOptions(),
           lm: WordLM | None = None,
           frame_seconds: float = 1.0 / Config().ctc_frames_per_second) -> Hypothesis:
    """Text, word timings and confidences of one utterance's (T, V) log-probabilities;
    ``frame_seconds`` is the duration of one output frame (hop x subsampling)."""
    hyp = hypothesis(decode_text(log_probs, alphabet, options, lm), log_probs, alphabet,
                     frame_seconds)
    if alphabet.units != "chars":
        hyp = replace(hyp, units=greedy_decode(log_probs, alphabet))
    return hyp

"""CTC beam search with a word LM in C++: flashlight-text's lexicon decoder over KenLM.

:class:`LexiconBeamSearch` searches the same hypotheses as the Python prefix beam search of
:mod:`speechrnn.decoding`, several times faster: every word ending adds
``lm_weight x ln P(word | history) + word_bonus``, the sentence end adds
``lm_weight x ln P(</s> | history)``. Differences:

- Words come from a lexicon (the LM's vocabulary spelled in the alphabet's units: letters,
  or each pronunciation in phones): a word outside it is never emitted, where the Python
  search lets it pay the LM's unknown-word cost.
- Hypotheses that merge keep the better score (Viterbi) instead of summing, and a partial
  word is scored ahead by the best unigram it can still become (smearing): this changes
  what the beam keeps, not how a finished hypothesis is scored.
- Characters below ``prune`` at a frame are not tried (as in Python); hypotheses more than
  ``BEAM_THRESHOLD`` nats behind the best are dropped.

The trie and the LM are built once (a 60 k-word vocabulary: about a second) and shared;
each thread decodes with its own decoder object (the decoder keeps per-utterance state), so
one :class:`LexiconBeamSearch` may be called from several threads at once.

The LM is an ARPA file (KenLM needs at least a bigram section); the same file read by
:meth:`speechrnn.lm.WordLM.from_arpa` gives the Python search the same probabilities.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import InputError, MissingDependencyError
from .text import Alphabet

log = logging.getLogger(__name__)

# flashlight's Trie keeps at most this many words under one spelling (kTrieMaxLabel); more
# are dropped with a message on stderr
TRIE_MAX_WORDS = 6

if TYPE_CHECKING:
    from .decoding import DecodingOptions

LN10 = math.log(10.0)  # KenLM scores are log10 probabilities; ours are natural logs
BEAM_THRESHOLD = 50.0  # nats behind the best hypothesis of a frame
UNK = "<unk>"
_IMPOSSIBLE = -1e30  # the log-probability of a pruned character


def available() -> bool:
    """Whether flashlight-text (with its KenLM) can be imported."""
    try:
        import flashlight.lib.text.decoder  # noqa: F401
        import flashlight.lib.text.decoder.kenlm  # noqa: F401
        import flashlight.lib.text.dictionary  # noqa: F401
    except ImportError:
        return False
    return True


@contextlib.contextmanager
def _quiet_stderr():
    """KenLM prints its loading progress bar on file descriptor 2: not for our users."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class LexiconBeamSearch:
    """A beam search over one utterance's (T, V) natural-log posteriors -> text, with the
    word LM of ``arpa`` restricted to ``vocabulary`` (words that the alphabet cannot spell
    are left out); ``options``: beam width, LM weight, word bonus and prune. ``arpa`` None:
    no LM, the words of ``vocabulary`` alone (how a phone model finds words without one)."""

    def __init__(self, alphabet: Alphabet, arpa: str | Path | None, vocabulary: Iterable[str],
                 options: DecodingOptions):
        if not available():
            raise MissingDependencyError("the fast beam search needs flashlight-text: "
                                         "pip install flashlight-text")
        from flashlight.lib.text.decoder import SmearingMode, Trie, ZeroLM
        from flashlight.lib.text.decoder.kenlm import KenLM
        from flashlight.lib.text.dictionary import Dictionary

        if arpa is not None and not Path(arpa).is_file():
            raise InputError(f"{arpa}: no such language model file")
        self.alphabet = alphabet
        self.separator = alphabet.separator
        words = sorted({w for w in vocabulary if alphabet.can_spell(w)})
        if not words:
            raise InputError(f"no word of the {'language model' if arpa else 'lexicon'} "
                             f"can be spelled in the model's {alphabet.units}")
        self.words = [UNK, *words]  # index 0: the unknown word (never emitted)
        if arpa is None:
            self.lm = ZeroLM()
        else:
            try:
                with _quiet_stderr():
                    self.lm = KenLM(str(arpa), Dictionary(self.words))
            except RuntimeError as err:
                raise InputError(f"{arpa}: cannot load the language model ({err})") from None
        # the lexicon: each spelling of a word then the separator, so a word ends at a
        # separator (__call__ adds one after the last frame); partial words smeared with the
        # best unigram log10 probability they can still become
        self.trie = Trie(alphabet.size, self.separator)
        self.left_out = self._fill_trie(words)
        self.trie.smear(SmearingMode.MAX)
        self.options = options
        self._local = threading.local()

    def _fill_trie(self, words: list[str]) -> list[str]:
        """Insert each word's spellings, likeliest word first (unigram score): a spelling
        holds at most :data:`TRIE_MAX_WORDS` words (homophones: a phone model's "i", "eye",
        "aye", ...), so the unlikeliest of a larger set are the ones left out. Returns
        those words (logged once)."""
        unigram = self.lm.start(True)
        scored = sorted(((self.lm.score(unigram, index)[1], index, word)
                         for index, word in enumerate(words, start=1)),
                        key=lambda item: -item[0])  # stable: alphabetical among equals
        taken: Counter[tuple[int, ...]] = Counter()
        left_out = []
        for score, index, word in scored:
            for spelling in self.alphabet.spellings(word):
                key = tuple(spelling)
                if taken[key] >= TRIE_MAX_WORDS:
                    left_out.append(word)
                    continue
                taken[key] += 1
                self.trie.insert(spelling + [self.separator], index, score)
        if left_out:
            log.info("%d words share a spelling with %d likelier ones and cannot be "
                     "output: %s", len(left_out), TRIE_MAX_WORDS,
                     ", ".join(sorted(set(left_out))[:20]))
        return left_out

    def _decoder(self, options: DecodingOptions):
        """This thread's decoder for ``options`` (beam width, LM weight, word bonus): cheap
        to make, sharing the trie and the LM."""
        from flashlight.lib.text.decoder import (
            CriterionType,
            LexiconDecoder,
            LexiconDecoderOptions,
        )

        decoders = self._local.__dict__.setdefault("decoders", {})
        key = (options.beam_width, options.lm_weight, options.word_bonus)
        if key not in decoders:
            settings = LexiconDecoderOptions(
                beam_size=options.beam_width, beam_size_token=self.alphabet.size,
                beam_threshold=BEAM_THRESHOLD, lm_weight=options.lm_weight * LN10,
                word_score=options.word_bonus, unk_score=-math.inf, sil_score=0.0,
                log_add=False, criterion_type=CriterionType.CTC)
            decoders[key] = LexiconDecoder(settings, self.trie, self.lm, self.separator,
                                           self.alphabet.blank, 0, [], False)
        return decoders[key]

    def __call__(self, log_probs: np.ndarray, options: DecodingOptions | None = None) -> str:
        """The text of one utterance; ``options`` (default: those it was built with) may
        change the beam width, LM weight, word bonus and prune from call to call."""
        options = options or self.options
        lp = np.asarray(log_probs, dtype=np.float32)
        if lp.ndim != 2 or lp.shape[1] != self.alphabet.size:
            raise InputError(f"log-probabilities of shape {lp.shape}: expected "
                             f"(frames, {self.alphabet.size})")
        if not len(lp):
            return ""
        frames, size = lp.shape
        emissions = np.full((frames + 1, size), _IMPOSSIBLE, dtype=np.float32)
        keep = lp >= options.prune
        keep[:, self.alphabet.blank] = True
        emissions[:frames][keep] = lp[keep]
        emissions[frames, self.separator] = 0.0  # a final space ends the last word
        results = self._decoder(options).decode(emissions.ctypes.data, frames + 1, size)
        if not results:
            return ""
        return " ".join(self.words[i] for i in results[0].words if i > 0)


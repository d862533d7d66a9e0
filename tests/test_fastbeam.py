"""The C++ beam search (flashlight-text) against the Python one, on synthetic frames."""

import math
import threading
from pathlib import Path

import numpy as np
import pytest

from speechrnn import decoding, fastbeam
from speechrnn.decoding import DecodingOptions, decode, decode_text, lexicon_search
from speechrnn.errors import MissingDependencyError
from speechrnn.lm import WordLM
from speechrnn.lm_build import lm_from_texts
from speechrnn.text import Alphabet

needs_flashlight = pytest.mark.skipif(not fastbeam.available(),
                                      reason="flashlight-text is not installed")
A = Alphabet()
WORDS = "i want to too go me you home".split()
PY = DecodingOptions("beam", 16, engine="python")
FL = DecodingOptions("beam", 16, engine="flashlight")


def write_arpa(path: Path, ngrams: dict[tuple[str, ...], tuple[float, float | None]]) -> Path:
    """An ARPA file of {n-gram: (log10 probability, log10 back-off or None)}."""
    ngrams = {("<unk>",): (-4.0, None), ("<s>",): (-99.0, 0.0), **ngrams}
    order = max(len(k) for k in ngrams)
    lines = ["\\data\\"] + [f"ngram {n}={sum(len(k) == n for k in ngrams)}"
                            for n in range(1, order + 1)]
    for n in range(1, order + 1):
        lines += ["", f"\\{n}-grams:"]
        for k, (p, bo) in ngrams.items():
            if len(k) == n:
                lines.append(f"{p:.6f}\t{' '.join(k)}" + ("" if bo is None else f"\t{bo:.6f}"))
    path.write_text("\n".join([*lines, "", "\\end\\", ""]))
    return path


@pytest.fixture
def bigram(tmp_path) -> WordLM:
    """Every word as likely alone; "want to" and "me too" far likelier than "want too" and
    "me to"."""
    ngrams = {(w,): (-1.0, 0.0) for w in [*WORDS, "</s>"]}
    ngrams.update({("want", "to"): (-0.05, None), ("want", "too"): (-2.0, None),
                   ("me", "too"): (-0.1, None), ("me", "to"): (-2.0, None)})
    return WordLM.from_arpa(write_arpa(tmp_path / "lm.arpa", ngrams))


def soft(text_frames: str, sharp: float = 5.0) -> np.ndarray:
    """Frames that each favour one symbol ('_' = blank) by ``sharp`` nats."""
    lp = np.zeros((len(text_frames), A.size))
    for t, ch in enumerate(text_frames):
        lp[t, 0 if ch == "_" else A.encode(ch)[0]] = sharp
    return lp - np.log(np.exp(lp).sum(axis=1, keepdims=True))


def to_or_too(before: str, after: str = "") -> np.ndarray:
    """Frames of ``before`` "to" or "too" ``after``: one frame is 'o' or blank, half each."""
    lp = soft(before + "tt_o_o" + after)
    lp[len(before) + 4] = np.log(1e-6)
    lp[len(before) + 4, [0, A.encode("o")[0]]] = np.log(0.5)
    return lp


@needs_flashlight
def test_the_bigram_chooses_to_or_too_where_the_frames_cannot(bigram):
    for before, after, text in [("ii_ _ww_aa_nn_tt_ _", "_ _gg_oo", "i want to go"),
                                ("mm_ee_ _", "", "me too")]:
        lp = to_or_too(before, after)
        assert decode_text(lp, A, PY, bigram) == decode_text(lp, A, FL, bigram) == text


@needs_flashlight
def test_flashlight_and_python_find_the_same_text(bigram):
    rng = np.random.default_rng(0)
    for _ in range(40):
        sentence = " ".join(rng.choice(WORDS, size=rng.integers(1, 5)))
        lp = soft("_".join(c + c for c in sentence), sharp=3.0)
        lp += rng.normal(0.0, 0.8, lp.shape)  # noisy frames
        lp -= np.log(np.exp(lp).sum(axis=1, keepdims=True))
        assert decode_text(lp, A, FL, bigram) == decode_text(lp, A, PY, bigram)


@needs_flashlight
def test_a_word_outside_the_lexicon_is_never_emitted(bigram):
    lp = soft("mm_ee_ _cc_aa_tt")  # "me cat": "cat" is not in the vocabulary
    assert decode_text(lp, A, PY, bigram) == "me cat"  # the Python search pays the OOV cost
    text = decode_text(lp, A, FL, bigram)
    assert text.startswith("me") and set(text.split()) <= set(WORDS)
    assert decode_text(soft("___"), A, FL, bigram) == ""
    assert decode_text(np.zeros((0, A.size)), A, FL, bigram) == ""


@needs_flashlight
def test_decode_with_flashlight_keeps_word_timings(bigram):
    hyp = decode(to_or_too("mm_ee_ _"), A, FL, bigram, frame_seconds=0.03)
    assert hyp.text == "me too"
    assert [(w.word, w.start, w.end) for w in hyp.words] == [("me", 0.0, 0.15),
                                                             ("too", 0.24, 0.42)]
    assert 0.0 < hyp.confidence <= 1.0


@needs_flashlight
def test_the_lm_weight_means_what_it_means_in_python(bigram):
    """Natural-log weights: a weight too small to beat a clear 'o' in either search."""
    lp = soft("ww_aa_nn_tt_ _tt_oo_oo")  # clearly "want too"
    for weight, text in [(0.1, "want too"), (2.0, "want to")]:
        for engine in ("python", "flashlight"):
            options = DecodingOptions("beam", 16, lm_weight=weight, engine=engine)
            assert decode_text(lp, A, options, bigram) == text, (weight, engine)


@needs_flashlight
def test_the_search_is_built_once_and_shared_by_threads(bigram, monkeypatch):
    built = []
    real = fastbeam.LexiconBeamSearch
    monkeypatch.setattr(fastbeam, "LexiconBeamSearch",
                        lambda *a, **k: built.append(1) or real(*a, **k))
    search = lexicon_search(A, FL, bigram)
    assert lexicon_search(A, DecodingOptions("beam", 16), bigram) is search  # auto: same
    # other options share the trie and the loaded LM: tuning the weights builds nothing
    assert lexicon_search(A, DecodingOptions("beam", 8, lm_weight=2.0), bigram) is search
    assert len(built) == 1
    inputs = [to_or_too("ii_ _ww_aa_nn_tt_ _", "_ _gg_oo"), to_or_too("mm_ee_ _")] * 8
    expected = [search(lp) for lp in inputs]
    results = [None] * len(inputs)

    def work(i):
        for _ in range(5):
            results[i] = search(inputs[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == expected


@needs_flashlight
def test_a_large_vocabulary_builds_in_seconds(tmp_path):
    rng = np.random.default_rng(0)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    vocab = {"".join(rng.choice(letters, size=rng.integers(3, 11))) for _ in range(60_000)}
    ngrams = {(w,): (-5.0, 0.0) for w in vocab}
    ngrams[("</s>",)] = (-1.0, 0.0)
    ngrams[("<s>", min(vocab))] = (-1.0, None)  # KenLM needs a bigram section
    arpa = write_arpa(tmp_path / "big.arpa", ngrams)
    search = fastbeam.LexiconBeamSearch(A, arpa, [*vocab, "café", "two words"],
                                        DecodingOptions("beam", 16))
    assert len(search.words) == len(vocab) + 1  # <unk>, and no unspellable word
    word = min(vocab)
    assert search(soft("_".join(c + c for c in word))) == word


@needs_flashlight
def test_kenlm_scores_as_the_python_lm_does_in_log10():
    """Why lm_weight is multiplied by ln 10: the same model, the same sentence."""
    from flashlight.lib.text.decoder.kenlm import KenLM
    from flashlight.lib.text.dictionary import Dictionary

    lm = lm_from_texts(["i want to go home", "me too", "you want to go", "i go home"])
    words = ["<unk>", *sorted(lm.vocab)]
    kenlm = KenLM(str(lm.arpa_path()), Dictionary(words))
    for sentence in ["i want to go home", "me too", "home want i", "too too"]:
        state, total = kenlm.start(False), 0.0
        for word in sentence.split():
            state, score = kenlm.score(state, words.index(word))
            total += score
        total += kenlm.finish(state)[1]
        assert total * math.log(10) == pytest.approx(lm.sentence_log_prob(sentence.split()),
                                                     abs=1e-4)


def test_engine_python_runs_the_python_search(bigram, monkeypatch):
    monkeypatch.setattr(decoding, "beam_search", lambda *a, **k: "from python")
    assert decode_text(to_or_too("mm_ee_ _"), A, PY, bigram) == "from python"
    assert lexicon_search(A, PY, bigram) is None
    if fastbeam.available():
        assert decode_text(to_or_too("mm_ee_ _"), A, FL, bigram) == "me too"


def test_without_flashlight_auto_falls_back_and_flashlight_says_why(bigram, monkeypatch):
    monkeypatch.setattr(fastbeam, "available", lambda: False)
    lp = to_or_too("mm_ee_ _")
    assert decode_text(lp, A, DecodingOptions("beam", 16), bigram) == "me too"
    with pytest.raises(MissingDependencyError, match="pip install flashlight-text"):
        decode_text(lp, A, FL, bigram)


def test_an_lm_without_an_arpa_file_uses_the_python_search(monkeypatch):
    lm = lm_from_texts(["me too", "want to"], order=2)
    monkeypatch.delattr(WordLM, "arpa_path", raising=False)
    assert lexicon_search(A, DecodingOptions("beam", 16), lm) is None
    assert lexicon_search(A, DecodingOptions("beam", 16), None) is None  # no LM: Python
    if fastbeam.available():
        with pytest.raises(ValueError, match="ARPA"):
            decode_text(to_or_too("mm_ee_ _"), A, FL, lm)


def test_bad_engine():
    with pytest.raises(ValueError, match="engine"):
        DecodingOptions("beam", engine="gpu")

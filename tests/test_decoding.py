import numpy as np
import pytest

from speechrnn.decoding import (
    DecodingOptions,
    beam_search,
    decode,
    greedy_batch,
    greedy_decode,
    greedy_ids,
)
from speechrnn.lm import WordLM
from speechrnn.text import Alphabet

BEAM = DecodingOptions(method="beam", beam_width=8)


def one_hot(ids, vocab=29):
    lp = np.full((len(ids), vocab), -10.0, np.float32)
    lp[np.arange(len(ids)), ids] = 0.0
    return lp


def test_greedy_merges_repeats_and_drops_blanks():
    a = Alphabet()
    h, e, l, o = (a.encode(c)[0] for c in "helo")  # noqa: E741
    frames = [0, h, h, 0, e, l, l, 0, l, o, o, 0]
    assert greedy_ids(one_hot(frames)) == [h, e, l, l, o]
    assert greedy_decode(one_hot(frames), a) == "hello"
    assert greedy_decode(one_hot([0, 0, 0]), a) == ""
    assert greedy_decode(np.zeros((0, 29), np.float32), a) == ""


def test_greedy_batch_reads_only_valid_frames():
    a = Alphabet()
    x = a.encode("x")[0]
    batch = np.stack([one_hot([x, 0, 0, x]), one_hot([x, 0, x, x])])
    assert greedy_batch(batch, [4, 2], a) == ["xx", "x"]
    space = a.encode(" ")[0]
    assert greedy_decode(one_hot([space, x, space, space, x, space]), a) == "x x"


def soft(text_frames, sharp=3.0):
    """Frames that each favour one symbol ('_' = blank) by ``sharp`` nats, the rest uniform."""
    lp = np.zeros((len(text_frames), 29))
    for t, ch in enumerate(text_frames):
        lp[t, 0 if ch == "_" else Alphabet().encode(ch)[0]] = sharp
    return lp - np.log(np.exp(lp).sum(axis=1, keepdims=True))


def test_beam_without_lm_agrees_with_greedy_on_clear_input():
    a = Alphabet()
    lp = soft("hh_ee_ll_ll_oo_ _ww_oo_rr_ll_dd", sharp=6.0)
    assert beam_search(lp, a, BEAM) == greedy_decode(lp, a) == "hello world"
    assert decode(lp, a, DecodingOptions()) == "hello world"


def test_beam_sums_paths_that_greedy_cannot():
    # frames: a 0.4 / blank 0.6 each; greedy picks "" but "a" has more total mass
    lp = np.full((3, 29), np.log(1e-9))
    a_id = Alphabet().encode("a")[0]
    lp[:, 0], lp[:, a_id] = np.log(0.6), np.log(0.4)
    assert greedy_decode(lp, Alphabet()) == ""
    assert beam_search(lp, Alphabet(), BEAM) == "a"


def test_language_model_fixes_a_misspelled_word():
    a = Alphabet()
    lm = WordLM.from_texts(["seven six", "six seven", "seven one"])
    # acoustically "sevn six": the 'e' of "seven" is weak but present
    lp = soft("ss_ee_vv_e_nn_ _ss_ii_xx", sharp=4.0)
    lp[9] = soft("_", sharp=1.0)[0]
    assert greedy_decode(lp, a) != "seven six"
    assert beam_search(lp, a, BEAM, lm) == "seven six"


def test_unknown_whole_words_pay_the_oov_penalty():
    a = Alphabet()
    lm = WordLM.from_texts(["one two", "two one"])
    lp = soft("oo_nn_ee_ _tt_ww_oo_oo", sharp=4.0)  # "one twoo": a stray extra 'o'
    lp[-2] = soft("_", sharp=1.0)[0]
    assert greedy_decode(lp, a) == "one twoo"
    assert beam_search(lp, a, BEAM, lm) == "one two"


def test_bad_options():
    with pytest.raises(ValueError):
        DecodingOptions(method="viterbi")
    with pytest.raises(ValueError):
        DecodingOptions(beam_width=0)

import numpy as np
import pytest

from speechrnn.decoding import (
    Decoding,
    DecodingOptions,
    align,
    beam_search,
    decode,
    greedy_batch,
    greedy_decode,
    greedy_ids,
)
from speechrnn.lm_build import lm_from_texts
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
    assert decode(lp, a, DecodingOptions()).text == "hello world"


def test_beam_sums_paths_that_greedy_cannot():
    # frames: a 0.4 / blank 0.6 each; greedy picks "" but "a" has more total mass
    lp = np.full((3, 29), np.log(1e-9))
    a_id = Alphabet().encode("a")[0]
    lp[:, 0], lp[:, a_id] = np.log(0.6), np.log(0.4)
    assert greedy_decode(lp, Alphabet()) == ""
    assert beam_search(lp, Alphabet(), BEAM) == "a"


def test_language_model_fixes_a_misspelled_word():
    a = Alphabet()
    lm = lm_from_texts(["seven six", "six seven", "seven one"])
    # acoustically "sevn six": the 'e' of "seven" is weak but present
    lp = soft("ss_ee_vv_e_nn_ _ss_ii_xx", sharp=4.0)
    lp[9] = soft("_", sharp=1.0)[0]
    assert greedy_decode(lp, a) != "seven six"
    assert beam_search(lp, a, BEAM, lm) == "seven six"


def test_unknown_whole_words_pay_the_oov_penalty():
    a = Alphabet()
    lm = lm_from_texts(["one two", "two one"])
    lp = soft("oo_nn_ee_ _tt_ww_oo_oo", sharp=4.0)  # "one twoo": a stray extra 'o'
    lp[-2] = soft("_", sharp=1.0)[0]
    assert greedy_decode(lp, a) == "one twoo"
    assert beam_search(lp, a, BEAM, lm) == "one two"


def test_bad_options():
    with pytest.raises(ValueError):
        DecodingOptions(method="viterbi")
    with pytest.raises(ValueError):
        DecodingOptions(beam_width=0)


def test_alignment_spans_each_label():
    a = Alphabet()
    ab = a.encode("ab")
    # frames: blank a a blank blank b blank
    lp = soft("_aa__b_", sharp=8.0)
    assert align(lp, ab) == [(1, 2), (5, 5)]
    # a repeated label needs a blank between its copies
    lp = soft("a_a", sharp=8.0)
    assert align(lp, a.encode("aa")) == [(0, 0), (2, 2)]
    with pytest.raises(ValueError, match="cannot be aligned"):
        align(soft("aa", sharp=8.0), a.encode("aa"))  # two frames cannot hold "a_a"
    assert align(lp, []) == []


def test_word_timings_and_confidence_follow_the_frames():
    a = Alphabet()
    # 10 ms frames x 3: "hi" at frames 2-3, "yo" at frames 8-10
    lp = soft("__hi__ __yo_", sharp=8.0)
    hyp = decode(lp, a, DecodingOptions(), frame_seconds=0.03)
    assert hyp.text == "hi yo"
    (hi, yo) = hyp.words
    assert (hi.word, hi.start, hi.end) == ("hi", 0.06, 0.12)
    assert (yo.word, yo.start, yo.end) == ("yo", 0.27, 0.33)
    assert 0.99 < hi.confidence <= 1.0 and 0.99 < hyp.confidence <= 1.0
    # a doubtful frame lowers that word's confidence, and the utterance's
    vague = soft("__hi__ __yo_", sharp=8.0)
    vague[9] = soft("y", sharp=1.5)[0]  # "y" is only just the likeliest
    doubtful = decode(vague, a, DecodingOptions(), frame_seconds=0.03)
    assert doubtful.text == "hi yo"
    assert doubtful.words[1].confidence < 0.5 < doubtful.words[0].confidence
    assert doubtful.confidence < hyp.confidence
    beam = decode(lp, a, BEAM, frame_seconds=0.03)
    assert beam.words == hyp.words
    shifted = hyp.shifted(10.0)
    assert shifted.words[0].start == 10.06 and shifted.as_dict()["words"][1]["end"] == 10.33
    assert decode(soft("___"), a).words == ()


def test_a_recipe_decodes_with_its_eval_section_and_all_its_training_text(tmp_path):
    """One definition of a recipe's decoding: beam options from ``eval``, and a word LM of
    every manifest it trains on (extras included), normalised as transcripts are."""
    from speechrnn.config import Config, DataConfig, EvalConfig
    from speechrnn.decoding import Decoding
    from speechrnn.manifest import Utterance, write_manifest

    write_manifest(tmp_path / "train.jsonl", [Utterance("a.wav", "one two", 1.0, "s")])
    write_manifest(tmp_path / "more.jsonl", [Utterance("b.wav", "Three!", 1.0, "s")])
    cfg = Config(data=DataConfig(out=str(tmp_path), extra_train=(str(tmp_path / "more.jsonl"),)),
                 eval=EvalConfig(beam_width=4, lm_order=2, lm_weight=0.3, word_bonus=0.7))
    beam = Decoding.for_recipe(cfg, "beam")
    assert beam.options == DecodingOptions("beam", 4, 0.3, 0.7) and beam.name == "beam_lm"
    assert beam.lm.vocab == {"one", "two", "three"} and beam.lm.order == 2
    greedy = Decoding.for_recipe(cfg, "greedy")
    assert greedy.lm is None and greedy.name == "greedy"
    with pytest.raises(ValueError, match="needs --decoder beam"):
        Decoding(DecodingOptions(), beam.lm)


def test_decoding_describes_itself_for_people():
    assert Decoding().describe() == "greedy"
    assert Decoding(DecodingOptions("beam", beam_width=32)).describe() == "beam 32"
    lm = lm_from_texts(["one two three"], order=2)
    with_lm = Decoding(DecodingOptions("beam", beam_width=64, lm_weight=0.8, word_bonus=2.0), lm)
    assert with_lm.describe() == "beam 64 + word LM (weight 0.8, word bonus 2)"
    assert with_lm.name == "beam_lm"

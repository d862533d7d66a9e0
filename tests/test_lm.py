import math

import pytest

from speechrnn.lm import EOS, WordLM


def test_probabilities_follow_the_counts_and_sum_to_one():
    lm = WordLM.from_texts(["one two three", "one two four", "two three"], order=3)
    assert lm.vocab == {"one", "two", "three", "four"}
    assert lm.log_prob(("one",), "two") > lm.log_prob(("one",), "four")
    assert lm.log_prob(("one", "two"), "three") > lm.log_prob(("one", "two"), "one")
    for history in [(), ("one",), ("one", "two"), ("four", "four")]:
        total = sum(math.exp(lm.log_prob(history, w)) for w in [*lm.vocab, EOS])
        assert total == pytest.approx(1.0, abs=1e-9)
    assert lm.log_prob(("one",), "zebra") == lm.oov_log_prob
    assert {"", "t", "tw", "two", "thr"} <= lm.prefixes and "tx" not in lm.prefixes


def test_save_load_and_errors(tmp_path):
    lm = WordLM.from_texts(["a b c", "b c d"], order=2)
    lm.save(tmp_path / "lm.json")
    back = WordLM.load(tmp_path / "lm.json")
    assert back.vocab == lm.vocab
    assert back.log_prob(("b",), "c") == pytest.approx(lm.log_prob(("b",), "c"))
    with pytest.raises(ValueError):
        WordLM.from_texts(["", "  "])

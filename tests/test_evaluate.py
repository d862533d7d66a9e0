import pytest

from speechrnn.evaluate import error_rates, utterance_wer


def test_error_rates_count_edits():
    r = error_rates(["the cat sat", "on the mat"], ["the cat sat down", "on mat"])
    assert (r.substitutions, r.deletions, r.insertions, r.words) == (0, 1, 1, 6)
    assert r.wer == pytest.approx(2 / 6)
    assert r.cer == pytest.approx(9 / 21)
    assert error_rates(["a b"], ["a b"]).wer == 0.0
    assert utterance_wer("one two three", "one too three") == pytest.approx(1 / 3)
    assert error_rates(["one two"], [""]).wer == 1.0


def test_error_rates_need_pairs():
    with pytest.raises(ValueError, match="references"):
        error_rates(["a"], [])
    with pytest.raises(ValueError, match="nothing"):
        error_rates([], [])

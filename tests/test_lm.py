"""The word LM as an ARPA file holds it: reading, writing, back-off queries, bad files."""

import gzip
import math

import pytest
from test_lm_build import total_prob, zipf_texts

from speechrnn.errors import InputError
from speechrnn.lm import EOS, UNK, WordLM
from speechrnn.lm_build import lm_from_texts


def test_small_texts_and_the_decoder_interface():
    lm = lm_from_texts(["one two three", "one two four", "two three"], order=3)
    assert lm.vocab == {"one", "two", "three", "four"} and lm.order == 3
    assert lm.log_prob(("one",), "two") > lm.log_prob(("one",), "four")
    assert lm.log_prob(("one", "two"), "three") > lm.log_prob(("one", "two"), "one")
    for history in [(), ("one",), ("one", "two"), ("four", "four")]:
        assert total_prob(lm, history) == pytest.approx(1.0, abs=1e-9)
    # an unknown word: the <unk> probability, for the beam search never above oov_log_prob
    assert lm.arpa_log_prob(("one",), "zebra") == lm.arpa_log_prob(("one",), UNK)
    assert lm.log_prob(("one",), "zebra") == min(lm.oov_log_prob,
                                                 lm.arpa_log_prob(("one",), UNK))
    assert {"", "t", "tw", "two", "thr"} <= lm.prefixes and "tx" not in lm.prefixes
    # a longer history than the order needs: only its last words count
    assert lm.log_prob(("four", "one", "two"), "three") == lm.log_prob(("x", "one", "two"),
                                                                        "three")
    with pytest.raises(ValueError):
        lm_from_texts(["", "  "])
    with pytest.raises(InputError, match="smoothing"):
        lm_from_texts(["a b"], method="good-turing")
    with pytest.raises(InputError, match="never decrease"):
        lm_from_texts(["a b"], prune=(0, 2, 1))
    with pytest.raises(InputError, match="unigram"):
        lm_from_texts(["a b"], prune=(1, 1))


@pytest.mark.parametrize("method", ["kneser-ney", "witten-bell"])
def test_arpa_round_trip(tmp_path, method):
    lm = lm_from_texts(zipf_texts(), order=3, method=method, prune=(0, 1))
    assert lm.path is None
    path = lm.write_arpa(tmp_path / "lm.arpa")
    assert lm.path == path and path.read_text().startswith("\\data\\\nngram 1=")
    assert not list(tmp_path.glob(".tmp-*"))
    back = WordLM.load(path)
    assert back.path == path and back.order == 3 and back.vocab == lm.vocab
    assert back.prefixes == lm.prefixes and back.ngram_counts() == lm.ngram_counts()
    for text in zipf_texts(20, seed=1) + ["w1 zebra w2"]:
        words = text.split()
        for i, w in enumerate([*words, EOS]):
            assert back.log_prob(words[:i], w) == pytest.approx(lm.log_prob(words[:i], w),
                                                                abs=1e-5)
    gz = lm.write_arpa(tmp_path / "lm.arpa.gz")
    assert gzip.decompress(gz.read_bytes()) == path.read_bytes()
    assert WordLM.load(gz).log_prob(("w0",), "w1") == back.log_prob(("w0",), "w1")


def test_arpa_path_writes_a_model_once(tmp_path):
    lm = lm_from_texts(["a b", "b c"], order=1)
    first = lm.arpa_path(tmp_path)
    assert "ngram 2=0\n" in first.read_text()  # KenLM needs a 2-gram section
    assert first.parent == tmp_path and first.suffix == ".arpa" and lm.path == first
    assert lm.arpa_path(tmp_path) == first and len(list(tmp_path.iterdir())) == 1
    loaded = WordLM.load(first)
    assert loaded.arpa_path() == first and loaded.order == 1
    assert loaded.log_prob(("a",), "b") == pytest.approx(lm.log_prob((), "b"), abs=1e-5)


HAND = """
\\data\\
ngram 1=6
ngram 2=4
ngram 3=1

\\1-grams:
-1.0\t<unk>
-99\t<s>\t-0.30
-0.70\t</s>
-0.60\ta\t-0.20
-0.80\tb\t-0.10
-0.90\tc

\\2-grams:
-0.25\t<s> a\t-0.05
-0.40\ta b
-0.35\tb </s>
-0.50\tb c

\\3-grams:
-0.15\t<s> a b

\\end\\
"""


def test_a_hand_written_arpa_gives_the_textbook_back_off_values(tmp_path):
    path = tmp_path / "hand.arpa"
    path.write_text(HAND)
    lm = WordLM.load(path)
    ln10 = math.log(10)
    assert lm.order == 3 and lm.vocab == {"a", "b", "c"}

    def log10(history, word):
        return lm.arpa_log_prob(history, word) / ln10

    assert log10((), "a") == pytest.approx(-0.25)  # P(a | <s>): the bigram
    assert log10(("a",), "b") == pytest.approx(-0.15)  # P(b | <s> a): the trigram
    assert log10(("a",), "c") == pytest.approx(-0.05 - 0.20 - 0.90)  # b(<s> a) b(a) P(c)
    assert log10(("a", "b"), EOS) == pytest.approx(-0.35)  # no back-off of "a b" (0)
    assert log10(("b",), "a") == pytest.approx(-0.10 - 0.60)  # b(b) P(a)
    assert log10((), "c") == pytest.approx(-0.30 - 0.90)  # b(<s>) P(c)
    assert log10(("a",), "zebra") == pytest.approx(-0.05 - 0.20 - 1.0)  # <unk>
    assert log10(("zebra",), "a") == pytest.approx(-0.60)  # "<unk>" has no back-off
    assert lm.log_prob(("a",), "zebra") == lm.oov_log_prob  # capped: -1.25 * ln10 > -10
    no_unk = tmp_path / "no-unk.arpa"
    no_unk.write_text(HAND.replace("ngram 1=6", "ngram 1=5").replace("-1.0\t<unk>\n", ""))
    assert WordLM.load(no_unk).arpa_log_prob(("a",), "zebra") == lm.oov_log_prob


@pytest.mark.parametrize("damage, line, message", [
    (lambda t: t.replace("-0.40\ta b", "-0.40\ta"), 17, "a 2-gram line needs"),
    (lambda t: t.replace("-0.40\ta b", "x\ta b"), 17, "not a number"),
    (lambda t: t.replace("-0.40\ta b", "0.40\ta b"), 17, "must be <= 0"),
    (lambda t: t.replace("-0.40\ta b", "-0.40\ta zebra"), 17, "'zebra' is not among"),
    (lambda t: t.replace("ngram 2=4", "ngram 2=5"), 21, "announces 5 2-grams"),
    (lambda t: t.replace("ngram 2=4", "ngram two"), 4, "expected 'ngram N=count'"),
    (lambda t: t.replace("\\end\\\n", ""), 23, "ends before"),
    (lambda t: t.replace("-0.50\tb c", "-0.50\ta b"), 19, "listed twice"),
    (lambda t: t.replace("\\3-grams:", "\\4-grams:"), 21, "out of order"),
])
def test_a_malformed_arpa_names_the_file_and_line(tmp_path, damage, line, message):
    path = tmp_path / "bad.arpa"
    path.write_text(damage(HAND))
    with pytest.raises(InputError, match=message) as err:
        WordLM.load(path)
    assert str(err.value).startswith(f"{path}:{line}: ")


def test_not_an_arpa_file(tmp_path):
    (tmp_path / "x.arpa").write_text("hello\n")
    with pytest.raises(InputError, match="no \\\\data"):
        WordLM.load(tmp_path / "x.arpa")
    with pytest.raises(FileNotFoundError):
        WordLM.load(tmp_path / "missing.arpa")



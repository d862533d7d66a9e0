"""Building word LMs from text: modified Kneser-Ney and Witten-Bell as KenLM estimates
them, pruning, a recipe's LM built once."""

import gzip
import math
import random
from collections import Counter

import pytest

from speechrnn.lm import BOS, EOS, UNK, WordLM
from speechrnn.lm_build import build_lm, lm_from_sources, lm_from_texts


def zipf_texts(n=400, vocab=40, seed=0):
    """Enough text that every order's count-of-counts give real (not fallback) discounts."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(vocab)]
    weights = [1 / (i + 1) for i in range(vocab)]
    return [" ".join(rng.choices(words, weights, k=rng.randint(1, 8))) for _ in range(n)]


def total_prob(lm, history):
    """Sum over every word the model can predict: the vocabulary, </s> and <unk>."""
    return sum(math.exp(lm.arpa_log_prob(history, w)) for w in [*lm.vocab, EOS, UNK])


def reference_kn(texts, order):
    """Interpolated modified Kneser-Ney straight from Chen & Goodman's definitions (no
    back-off form, no pruning): P(word | history) for any history."""
    sentences = [[BOS, *t.split(), EOS] for t in texts]
    raw = [Counter() for _ in range(order)]
    for s in sentences:
        for k in range(1, order + 1):
            for i in range(len(s) - k + 1):
                raw[k - 1][tuple(s[i:i + k])] += 1
    adjusted = [Counter() for _ in range(order)]
    adjusted[order - 1] = raw[order - 1]
    for k in range(1, order):
        for gram, c in raw[k - 1].items():
            adjusted[k - 1][gram] = c if gram[0] == BOS else sum(
                1 for g in raw[k] if g[1:] == gram)
    del adjusted[0][(BOS,)]
    discounts = []
    for table in adjusted:
        n = [sum(1 for c in table.values() if c == j) for j in range(1, 5)]
        if min(n) == 0:
            discounts.append((0.5, 1.0, 1.5))
            continue
        y = n[0] / (n[0] + 2 * n[1])
        discounts.append(tuple(j - (j + 1) * y * n[j] / n[j - 1] for j in (1, 2, 3)))

    def d(k, c):
        return 0.0 if c == 0 else discounts[k - 1][min(c, 3) - 1]

    uniform = 1 / (len(adjusted[0]) + 1)  # words and </s> (<s> is never predicted), <unk>

    def p(history, word):
        k = len(history) + 1
        table = adjusted[k - 1]
        follow = {g[-1]: c for g, c in table.items() if g[:-1] == history}
        if not follow:
            return p(history[1:], word) if history else uniform
        z = sum(follow.values())
        gamma = sum(d(k, c) for c in follow.values()) / z
        lower = p(history[1:], word) if history else uniform
        c = follow.get(word, 0)
        return max(c - d(k, c), 0) / z + gamma * lower

    return p, discounts


def test_kneser_ney_is_chen_and_goodmans_and_sums_to_one():
    texts = zipf_texts()
    lm = lm_from_texts(texts, order=3, prune=None)
    ref, discounts = reference_kn(texts, 3)
    assert lm.stats["discounts"][1:] == [[round(x, 4) for x in d] for d in discounts[1:]]
    assert all(d != [0.5, 1.0, 1.5] for d in lm.stats["discounts"][1:])  # real discounts
    histories = [(), ("w0",), ("w3",), ("w0", "w1"), ("w2", "w0"), ("w39", "w38"),
                 ("zebra",), ("w1", "zebra")]
    for history in histories:
        assert total_prob(lm, history) == pytest.approx(1.0, abs=1e-9)
        context = tuple(w if w in lm.vocab | {BOS} else UNK for w in (BOS, *history)[-2:])
        for word in ["w0", "w1", "w5", "w39", EOS]:
            assert math.exp(lm.log_prob(history, word)) == pytest.approx(
                ref(context, word), rel=1e-9)
    assert lm.log_prob(("w0",), "w1") > lm.log_prob(("w0",), "w39")


@pytest.mark.parametrize("method", ["kneser-ney", "witten-bell"])
@pytest.mark.parametrize("prune", [None, (0, 1), (0, 1, 2)])
@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_every_model_sums_to_one(method, prune, order):
    lm = lm_from_texts(zipf_texts(200, 20), order=order, method=method,
                           prune=prune[:order] if prune else None)
    for history in [(), ("w0",), ("w0", "w1"), ("w1", "w0", "w2"), ("w19", "w19", "w19")]:
        assert total_prob(lm, history) == pytest.approx(1.0, abs=1e-9)


def test_pruning_drops_singletons_and_keeps_the_model_whole():
    texts = zipf_texts()
    full = lm_from_texts(texts, order=3, prune=None)
    pruned = lm_from_texts(texts, order=3, prune=(0, 1, 1))
    counts = [Counter() for _ in range(3)]
    for t in texts:
        s = [BOS, *t.split(), EOS]
        for k in (2, 3):
            for i in range(len(s) - k + 1):
                counts[k - 1][tuple(s[i:i + k])] += 1
    for k in (2, 3):
        kept = {g for g in pruned._prob if len(g) == k}
        assert kept == {g for g, c in counts[k - 1].items() if c > 1}
        assert pruned.ngram_counts()[k] < full.ngram_counts()[k]
    assert pruned.ngram_counts()[1] == full.ngram_counts()[1]  # every word stays
    for history in [(), ("w0",), ("w0", "w1"), ("w7", "w30")]:
        assert total_prob(pruned, history) == pytest.approx(1.0, abs=1e-9)
    assert pruned.stats["prune"] == [0, 1, 1]
    # "auto": no pruning for a small text
    assert lm_from_texts(texts, order=3).ngram_counts() == full.ngram_counts()


def test_from_sources_and_build_lm(tmp_path):
    from speechrnn.manifest import Utterance, write_manifest

    write_manifest(tmp_path / "train.jsonl", [Utterance("a.wav", "One two!", 1.0, "s")])
    (tmp_path / "more.txt").write_text("Three, four.\n\nI've 2 cats\n", encoding="utf-8")
    with gzip.open(tmp_path / "more2.txt.gz", "wt", encoding="utf-8") as f:
        f.write("five six\n")
    lm = lm_from_sources([tmp_path / "train.jsonl"],
                             [tmp_path / "more.txt", tmp_path / "more2.txt.gz"], order=2)
    assert lm.vocab == {"one", "two", "three", "four", "i've", "cats", "five", "six"}
    assert lm.order == 2 and lm.path is None
    assert lm_from_sources() is None
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        lm_from_sources(text_files=[tmp_path / "missing.txt"])
    stats = build_lm([tmp_path / "more.txt"], [tmp_path / "train.jsonl"],
                     tmp_path / "out.arpa", order=3, prune=None)
    assert stats["words"] == 7 and stats["sentences"] == 3 and stats["vocabulary"] == 6
    assert stats["ngrams"][1] == 9  # 6 words, <s>, </s>, <unk>
    assert stats["arpa_bytes"] == (tmp_path / "out.arpa").stat().st_size
    assert stats["peak_rss_mb"] > 0 and stats["seconds"] >= 0
    assert WordLM.load(tmp_path / "out.arpa").vocab == {"one", "two", "three", "four",
                                                        "i've", "cats"}


def test_kenlm_reads_the_arpa_and_scores_as_log_prob(tmp_path):
    """The C++ decoder's KenLM loads the written file and gives the same scores."""
    kenlm = pytest.importorskip("flashlight.lib.text.decoder.kenlm")
    dictionary = pytest.importorskip("flashlight.lib.text.dictionary")
    for order, method, prune in [(3, "kneser-ney", None), (3, "kneser-ney", (0, 1, 2)),
                                 (3, "witten-bell", (0, 1)), (1, "kneser-ney", None),
                                 (2, "kneser-ney", (0, 1))]:
        lm = lm_from_texts(zipf_texts(), order=order, method=method, prune=prune)
        words = sorted(lm.vocab) + ["zebra"]
        d = dictionary.Dictionary(words)
        ken = kenlm.KenLM(str(lm.arpa_path(tmp_path)), d)
        for text in zipf_texts(30, seed=2) + ["zebra w1 w2", "w1 zebra w0"]:
            ws = text.split()
            state = ken.start(False)
            for i, w in enumerate(ws):
                state, score = ken.score(state, d.get_index(w))
                assert score * math.log(10) == pytest.approx(lm.arpa_log_prob(ws[:i], w),
                                                             abs=2e-5)
            state, score = ken.finish(state)
            assert score * math.log(10) == pytest.approx(lm.arpa_log_prob(ws, EOS), abs=2e-5)


def test_recipe_lm_is_built_once_from_transcripts_and_text_files(tmp_path, monkeypatch):
    from dataclasses import replace

    from speechrnn.config import Config, DataConfig, EvalConfig, TrainConfig
    from speechrnn.lm_build import recipe_lm
    from speechrnn.manifest import Utterance, write_manifest

    write_manifest(tmp_path / "train.jsonl", [Utterance("a.wav", "one two", 1.0, "s")])
    corpora = tmp_path / "corpora"
    (corpora / "text").mkdir(parents=True)
    (corpora / "text" / "more.txt").write_text("Three, four!\nfive six\n")
    cfg = Config(data=DataConfig(out=str(tmp_path)), train=TrainConfig(workdir=str(tmp_path / "w")),
                 eval=EvalConfig(lm_order=2, lm_text=("text/more.txt",)))
    monkeypatch.setenv("SPEECHRNN_CORPORA", str(corpora))  # relative paths looked up there
    lm = recipe_lm(cfg)
    assert lm.vocab == {"one", "two", "three", "four", "five", "six"} and lm.order == 2
    arpa = tmp_path / "w" / "lm" / "lm.arpa"
    assert lm.path == arpa
    built = arpa.stat().st_mtime_ns
    assert recipe_lm(cfg).log_prob(("three",), "four") == pytest.approx(
        lm.log_prob(("three",), "four"), abs=1e-5)  # ARPA keeps 6 decimals
    assert arpa.stat().st_mtime_ns == built  # the same sources: loaded, not built again
    (corpora / "text" / "more.txt").write_text("seven\n")
    assert "seven" in recipe_lm(cfg).vocab  # a source changed: built again
    assert recipe_lm(replace(cfg, eval=EvalConfig(lm_arpa=str(arpa)))).path == arpa
    plain = recipe_lm(replace(cfg, eval=EvalConfig(lm_order=2)))  # transcripts alone
    assert plain.vocab == {"one", "two"} and plain.path is None
    with pytest.raises(FileNotFoundError, match="nowhere.txt"):
        recipe_lm(replace(cfg, eval=EvalConfig(lm_text=("nowhere.txt",))))

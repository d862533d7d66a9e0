import numpy as np
import pytest
from conftest import check_epochs_are_seeded, tone, write

from speechrnn.config import BatchConfig, SpecAugmentConfig
from speechrnn.dataset import (
    bucket_boundaries,
    load_examples,
    make_dataset,
    spec_augment,
    tempo,
)
from speechrnn.features import FeatureExtractor
from speechrnn.manifest import Utterance
from speechrnn.text import Alphabet


@pytest.fixture
def rows(tmp_path):
    out = []
    for i in range(23):
        seconds = 0.4 + 0.1 * i
        path = write(tmp_path / f"u{i}.wav", tone(seconds, freq=200 + 30 * i))
        out.append(Utterance(str(path), "ab" * (1 + i % 4), seconds, f"s{i % 3}", f"u{i}"))
    return out


def test_bad_items_are_skipped_with_reasons(rows, tmp_path):
    (tmp_path / "bad.wav").write_text("not audio")
    extra = [Utterance(str(tmp_path / "bad.wav"), "ab", 1.0, "x", "bad"),
             Utterance(str(tmp_path / "gone.wav"), "ab", 1.0, "x", "gone"),
             Utterance(rows[0].audio, "caf\u00e9", 1.0, "x", "accent"),
             Utterance(rows[0].audio, "a very long transcript " * 5, 0.4, "x", "long")]
    ex = load_examples(rows + extra, FeatureExtractor(), Alphabet(), subsampling=3)
    assert len(ex) == len(rows)
    reasons = {r.id: why for r, why in ex.skipped}
    assert "not a readable audio file" in reasons["bad"]
    assert "file not found" in reasons["gone"]
    assert "outside the alphabet" in reasons["accent"]
    assert "too long" in reasons["long"]


def test_batches_are_padded_with_true_lengths(rows):
    ex = load_examples(rows, FeatureExtractor(), Alphabet())
    seen = set()
    for batch in make_dataset(ex, BatchConfig(batch_size=4, buckets=3)):
        feats, labels = batch["features"].numpy(), batch["labels"].numpy()
        for j, i in enumerate(batch["index"].numpy()):
            seen.add(int(i))
            n, m = int(batch["feature_lengths"][j]), int(batch["label_lengths"][j])
            np.testing.assert_array_equal(feats[j, :n], ex.features[i])
            assert (feats[j, n:] == 0).all()
            assert Alphabet().decode(labels[j, :m]) == ex.rows[i].text
            assert (labels[j, m:] == 0).all()
        assert feats.shape[0] <= 4 and feats.shape[2] == 39
    assert seen == set(range(len(ex)))


def test_bucketing_groups_similar_lengths(rows):
    ex = load_examples(rows, FeatureExtractor(), Alphabet())
    lengths = [len(f) for f in ex.features]
    edges = bucket_boundaries(lengths, 3)
    assert len(edges) == 2
    waste = []
    for batch in make_dataset(ex, BatchConfig(batch_size=4, buckets=3)):
        n = batch["feature_lengths"].numpy()
        waste.append(1 - n.sum() / (len(n) * batch["features"].shape[1]))
    assert np.mean(waste) < 0.2


def test_training_order_depends_on_seed_and_epoch_only(rows):
    ex = load_examples(rows, FeatureExtractor(), Alphabet())
    cfg = BatchConfig(batch_size=4, buckets=2, spec_augment=SpecAugmentConfig(enabled=True))

    def batches(epoch, seed=1, skip=0):
        ds = make_dataset(ex, cfg, training=True, seed=seed, epoch=epoch)
        return [(b["index"].numpy().tolist(), b["features"].numpy()) for b in ds.skip(skip)]

    check_epochs_are_seeded(batches, len(ex))


def test_spec_augment_masks_inside_valid_frames_only():
    import tensorflow as tf

    cfg = SpecAugmentConfig(enabled=True, freq_masks=2, freq_width=5, time_masks=2,
                            time_width=30, time_ratio=0.2)
    x = tf.ones([200, 39])
    masked_any = False
    for n in (200, 120, 50):
        for s in range(5):
            out = spec_augment(x, tf.constant(n), cfg, tf.constant([s, n])).numpy()
            again = spec_augment(x, tf.constant(n), cfg, tf.constant([s, n])).numpy()
            np.testing.assert_array_equal(out, again)
            frames = np.where((out == 0).all(axis=1))[0]
            assert len(frames) <= 2 * min(30, int(0.2 * n))
            assert all(f < n for f in frames)
            assert len(np.where((out == 0).all(axis=0))[0]) <= 10
            masked_any |= bool((out == 0).any())
    assert masked_any


def test_augmentation_only_in_training(rows):
    ex = load_examples(rows, FeatureExtractor(), Alphabet())
    cfg = BatchConfig(batch_size=4, spec_augment=SpecAugmentConfig(enabled=True))
    for batch in make_dataset(ex, cfg, training=False):
        for j, i in enumerate(batch["index"].numpy()):
            n = int(batch["feature_lengths"][j])
            np.testing.assert_array_equal(batch["features"][j, :n].numpy(), ex.features[i])


def test_vtlp_warps_training_items_only_and_keeps_them_normalised(rows):
    ex = load_examples(rows, FeatureExtractor(), Alphabet())
    cfg = BatchConfig(batch_size=4, buckets=2, vtlp=0.1)

    def items(**kwargs):
        out = {}
        for b in make_dataset(ex, cfg, **kwargs):
            for j, i in enumerate(b["index"].numpy()):
                out[int(i)] = b["features"][j, :int(b["feature_lengths"][j])].numpy()
        return out

    train, again, dev = items(training=True, seed=3), items(training=True, seed=3), \
        items(training=False)
    changed = 0
    for i, feats in train.items():
        np.testing.assert_array_equal(feats, again[i])  # reproducible
        np.testing.assert_array_equal(dev[i], ex.features[i])  # dev: untouched
        np.testing.assert_allclose(feats.mean(axis=0), 0.0, atol=1e-4)
        assert np.all((feats.std(axis=0) > 0.99) | (feats.std(axis=0) < 1e-3))
        changed += not np.allclose(feats, ex.features[i], atol=1e-3)
    assert changed >= len(ex) // 2  # most items drew a warp other than 1


def test_vtlp_needs_utterance_normalised_mfcc(rows):
    from speechrnn.config import FeatureConfig

    ex = load_examples(rows[:4], FeatureExtractor(FeatureConfig(cmvn="none")), Alphabet())
    with pytest.raises(ValueError, match="batch.vtlp needs"):
        make_dataset(ex, BatchConfig(vtlp=0.1), training=True)


def test_tempo_resamples_frames_within_its_range_and_keeps_ctc_feasible():
    import tensorflow as tf

    ramp = np.arange(60, dtype=np.float32)[:, None] * np.ones((1, 39), np.float32)
    lengths = set()
    for s in range(40):
        out = tempo(tf.constant(ramp), tf.constant(10), 0.5, tf.constant([s, 7])).numpy()
        again = tempo(tf.constant(ramp), tf.constant(10), 0.5, tf.constant([s, 7])).numpy()
        np.testing.assert_array_equal(out, again)
        assert 40 <= len(out) <= 90  # 60 frames / 1.5 .. 60 * 1.5
        assert out[0, 0] == 0 and out[-1, 0] == 59  # the same speech, start to end ...
        assert np.all(np.diff(out[:, 0]) > 0)  # ... in order, only slower or faster
        lengths.add(len(out))
    assert min(lengths) < 55 and max(lengths) > 65
    # never shorter than the transcript needs
    short = tempo(tf.constant(ramp), tf.constant(58), 0.5, tf.constant([0, 0])).numpy()
    assert all(len(tempo(tf.constant(ramp), tf.constant(58), 0.5,
                         tf.constant([s, 0]))) >= 58 for s in range(20)) and len(short) >= 58


def test_tempo_in_batches_gives_true_lengths(rows):
    ex = load_examples(rows, FeatureExtractor(), Alphabet(), subsampling=3)
    cfg = BatchConfig(batch_size=4, buckets=2, tempo=0.4)
    changed = 0
    for batch in make_dataset(ex, cfg, training=True, seed=1):
        for j, i in enumerate(batch["index"].numpy()):
            n, orig = int(batch["feature_lengths"][j]), len(ex.features[int(i)])
            assert orig / 1.41 <= n <= orig * 1.41
            assert (batch["features"][j, n:].numpy() == 0).all()
            changed += n != orig
    assert changed > len(ex) // 2
    for batch in make_dataset(ex, cfg, training=False):  # dev: as extracted
        assert [int(n) for n in batch["feature_lengths"]] == \
            [len(ex.features[int(i)]) for i in batch["index"]]


def test_counted_batches_equal_the_epochs_batches(rows):
    from speechrnn.dataset import count_batches

    ex = load_examples(rows, FeatureExtractor(), Alphabet(), subsampling=3)
    for cfg in (BatchConfig(batch_size=4, buckets=3), BatchConfig(batch_size=5, buckets=1),
                BatchConfig(batch_size=3, buckets=2, spec_augment=SpecAugmentConfig(True))):
        for epoch in (0, 1):
            assert count_batches(ex, cfg) == sum(
                1 for _ in make_dataset(ex, cfg, training=True, seed=4, epoch=epoch))
    # tempo moves items between buckets in memory: counted on the first epoch, as before
    cfg = BatchConfig(batch_size=3, buckets=3, tempo=0.4)
    assert count_batches(ex, cfg) == sum(1 for _ in make_dataset(ex, cfg, training=True))


# --------------------------------------------------------------------------- sampling weights


def indexes(ds) -> list[int]:
    return [int(i) for b in ds for i in b["index"].numpy()]


def test_unit_weights_give_the_unweighted_epochs(rows):
    from speechrnn.dataset import epoch_items, epoch_order

    for seed, epoch in ((0, 0), (1, 0), (0, 5), (7, 3)):
        before = np.random.default_rng([seed, epoch]).permutation(23)  # the order until now
        items, copies = epoch_items(23, seed, epoch, np.ones(23))
        np.testing.assert_array_equal(items, before)
        np.testing.assert_array_equal(epoch_order(23, seed, epoch), before)
        assert not copies.any()
    ex = load_examples(rows, FeatureExtractor(), Alphabet(), subsampling=3)
    cfg = BatchConfig(batch_size=4, buckets=3, tempo=0.2, spec_augment=SpecAugmentConfig(True))
    weighted = load_examples(rows, FeatureExtractor(), Alphabet(), subsampling=3,
                             weights=np.ones(len(rows)))
    assert weighted.weights.tolist() == [1.0] * len(rows) and ex.weights is None
    for epoch in (0, 2):
        a = list(make_dataset(ex, cfg, training=True, seed=3, epoch=epoch))
        b = list(make_dataset(weighted, cfg, training=True, seed=3, epoch=epoch))
        assert [x["index"].numpy().tolist() for x in a] == [x["index"].numpy().tolist()
                                                            for x in b]
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x["features"].numpy(), y["features"].numpy())


def test_weight_two_draws_every_item_twice_with_different_augmentation(rows):
    from speechrnn.dataset import count_batches, epoch_counts

    assert epoch_counts(np.full(9, 2.0), 0, 0).tolist() == [2] * 9
    ex = load_examples(rows, FeatureExtractor(), Alphabet(), weights=np.full(len(rows), 2.0))
    cfg = BatchConfig(batch_size=4, buckets=3, spec_augment=SpecAugmentConfig(True))
    seen: dict[int, list] = {}
    batches = 0
    for b in make_dataset(ex, cfg, training=True, seed=1, epoch=0):
        batches += 1
        for j, i in enumerate(b["index"].numpy()):
            seen.setdefault(int(i), []).append(b["features"][j, :int(b["feature_lengths"][j])])
    assert sorted(seen) == list(range(len(ex))) and all(len(v) == 2 for v in seen.values())
    differ = sum(not np.array_equal(a, b) for a, b in seen.values())
    assert differ >= len(ex) - 2  # the second copy draws its own masks
    assert batches == count_batches(ex, cfg)  # whole weights: the count is exact
    # the copies are shuffled like the items: not every one next to its twin
    order = indexes(make_dataset(ex, BatchConfig(batch_size=1, buckets=1), training=True))
    assert sum(a == b for a, b in zip(order, order[1:])) < len(ex) // 2


def test_weight_half_draws_a_different_half_every_epoch():
    from speechrnn.dataset import epoch_counts, epoch_order

    halves = [frozenset(epoch_order(22, 5, e, np.full(22, 0.5)).tolist()) for e in range(30)]
    assert all(len(h) == 11 for h in halves)  # exactly half of an even number
    assert halves[0] == frozenset(epoch_order(22, 5, 0, np.full(22, 0.5)).tolist())
    assert len(set(halves)) == 30  # a different half each epoch ...
    assert halves[0] != frozenset(epoch_order(22, 6, 0, np.full(22, 0.5)).tolist())
    drawn = np.mean([epoch_counts(np.full(23, 0.5), 5, e) for e in range(400)], axis=0)
    np.testing.assert_allclose(drawn, 0.5, atol=0.1)  # ... every item in half of them
    odd = [int(epoch_counts(np.full(23, 0.5), 5, e).sum()) for e in range(400)]
    assert set(odd) == {11, 12} and np.mean(odd) == pytest.approx(11.5, abs=0.1)


def test_mixed_weights_give_their_proportions():
    from speechrnn.dataset import epoch_counts, epoch_items

    weights = np.array([1.0] * 10 + [0.5] * 40 + [2.0] * 5 + [1.5] * 10 + [0.25] * 8)
    groups = {1.0: slice(0, 10), 0.5: slice(10, 50), 2.0: slice(50, 55), 1.5: slice(55, 65),
              0.25: slice(65, 73)}
    runs = []
    for epoch in range(300):
        counts = epoch_counts(weights, 2, epoch)
        assert counts[groups[1.0]].tolist() == [1] * 10
        assert counts[groups[2.0]].tolist() == [2] * 5
        assert set(counts[groups[1.5]].tolist()) == {1, 2} and counts[groups[1.5]].sum() == 15
        assert counts[groups[0.5]].sum() == 20 and set(counts[groups[0.5]]) == {0, 1}
        assert counts[groups[0.25]].sum() == 2
        items, copies = epoch_items(len(weights), 2, epoch, weights)
        assert np.bincount(items, minlength=len(weights)).tolist() == counts.tolist()
        for i in np.flatnonzero(counts):  # each drawn copy numbered once: 0, 1, ...
            assert sorted(copies[items == i].tolist()) == list(range(counts[i]))
        runs.append(counts)
    np.testing.assert_allclose(np.mean(runs, axis=0), weights, atol=0.15)


def test_counted_batches_match_weighted_epochs(rows):
    from speechrnn.dataset import count_batches

    weights = np.array([2.0, 1.0, 0.5] * 8)[:len(rows)]
    ex = load_examples(rows, FeatureExtractor(), Alphabet(), subsampling=3, weights=weights)
    for cfg in (BatchConfig(batch_size=4, buckets=3), BatchConfig(batch_size=3, buckets=1),
                BatchConfig(batch_size=2, buckets=2, spec_augment=SpecAugmentConfig(True))):
        counted = count_batches(ex, cfg)
        made = [sum(1 for _ in make_dataset(ex, cfg, training=True, seed=4, epoch=e))
                for e in range(8)]
        buckets = len(bucket_boundaries([len(f) for f in ex.features], cfg.buckets,
                                        weights)) + 1
        assert all(abs(m - counted) <= buckets for m in made), (counted, made)
        assert abs(np.mean(made) - counted) <= 1.0, (counted, made)
    whole = load_examples(rows, FeatureExtractor(), Alphabet(), subsampling=3,
                          weights=np.array([1.0, 3.0] * 12)[:len(rows)])
    cfg = BatchConfig(batch_size=4, buckets=3)
    for epoch in (0, 1):  # whole weights: exactly the epoch's batches
        assert count_batches(whole, cfg) == sum(
            1 for _ in make_dataset(whole, cfg, training=True, epoch=epoch))
    # tempo: epoch 0 built and counted, as without weights
    cfg = BatchConfig(batch_size=3, buckets=3, tempo=0.4)
    assert count_batches(ex, cfg) == sum(1 for _ in make_dataset(ex, cfg, training=True))


def test_bucket_edges_follow_the_weighted_lengths():
    lengths = list(range(100, 200))
    assert bucket_boundaries(lengths, 2) == [150]
    # the short half drawn 3 times as often: the median of the drawn items moves down
    weights = np.array([3.0] * 50 + [1.0] * 50)
    assert bucket_boundaries(lengths, 2, weights) == [134]  # 34 short items: half the draws


# --------------------------------------------------------------------------- SortaGrad


def test_sortagrad_sorts_the_first_epoch_only(rows):
    from dataclasses import replace

    from speechrnn.dataset import count_batches

    ex = load_examples(rows, FeatureExtractor(), Alphabet(), subsampling=3)
    plain = BatchConfig(batch_size=3, buckets=3, spec_augment=SpecAugmentConfig(True))
    sorta = replace(plain, sortagrad=True)
    assert not BatchConfig().sortagrad

    def batches(cfg, epoch, skip=0):
        ds = make_dataset(ex, cfg, training=True, seed=2, epoch=epoch)
        return [(b["index"].numpy().tolist(), b["feature_lengths"].numpy().tolist(),
                 b["features"].numpy()) for b in ds.skip(skip)]

    def items(epoch):  # index -> features as augmented
        return {i: f[j, :n] for idx, ns, f in epoch for j, (i, n) in enumerate(zip(idx, ns))}

    first, unsorted = batches(sorta, 0), batches(plain, 0)
    lengths = [n for _, ns, _ in first for n in ns]
    assert lengths == sorted(lengths)  # shortest first: batch lengths never decrease
    assert [max(ns) for _, ns, _ in first] == sorted(max(ns) for _, ns, _ in first)
    assert [max(ns) for _, ns, _ in unsorted] != sorted(max(ns) for _, ns, _ in unsorted)
    held, shuffled = items(first), items(unsorted)  # the same items, augmented alike
    assert sorted(held) == sorted(shuffled) == list(range(len(ex)))
    assert all(np.array_equal(held[i], shuffled[i]) for i in held)
    assert len(first) == len(unsorted) == count_batches(ex, sorta)
    assert [i for i, _, _ in batches(sorta, 0, skip=2)] == [i for i, _, _ in first[2:]]
    for epoch in (1, 2):  # later epochs: exactly the epochs without it
        a, b = batches(sorta, epoch), batches(plain, epoch)
        assert [i for i, _, _ in a] == [i for i, _, _ in b]
        assert all(np.array_equal(x, y) for (_, _, x), (_, _, y) in zip(a, b, strict=True))


def test_sortagrad_sorts_the_weighted_draws():
    from speechrnn.dataset import epoch_items

    weights = np.array([2.0, 1.0, 0.5, 1.5] * 6)
    lengths = np.random.default_rng(0).integers(50, 60, len(weights))  # many ties
    for epoch in (0, 3):
        items, copies = epoch_items(len(weights), 4, epoch, weights)
        s_items, s_copies = epoch_items(len(weights), 4, epoch, weights, lengths)
        assert np.all(np.diff(lengths[s_items]) >= 0)
        assert sorted(zip(items.tolist(), copies.tolist())) == \
            sorted(zip(s_items.tolist(), s_copies.tolist()))  # the same draws
    n = 23  # without weights: the permutation sorted, ties in their shuffled order
    items, _ = epoch_items(n, 1, 0)
    s_items, _ = epoch_items(n, 1, 0, lengths=np.arange(n) % 3)
    assert s_items.tolist() == [i for k in range(3) for i in items.tolist() if i % 3 == k]


def test_sortagrad_with_weights_keeps_batch_lengths_non_decreasing(rows):
    from speechrnn.dataset import count_batches

    ex = load_examples(rows, FeatureExtractor(), Alphabet(), subsampling=3,
                       weights=np.array([1.0, 3.0] * 12)[:len(rows)])
    cfg = BatchConfig(batch_size=4, buckets=3, sortagrad=True)
    first = list(make_dataset(ex, cfg, training=True, seed=5))
    lengths = [int(n) for b in first for n in b["feature_lengths"].numpy()]
    assert lengths == sorted(lengths)
    assert sorted(indexes(first)) == sorted(
        indexes(make_dataset(ex, BatchConfig(batch_size=4, buckets=3), training=True, seed=5)))
    assert len(first) == count_batches(ex, cfg)  # whole weights: the count is exact

"""Feature shards: extraction into TFRecord files, and the streamed pipeline over them."""

import dataclasses
import json
import logging
from dataclasses import replace

import numpy as np
import pytest
import yaml
from conftest import TINY_DATA, bad_files, check_epochs_are_seeded, tone, write

from speechrnn.config import BatchConfig, ConfigError, DataConfig, FeatureConfig, SpecAugmentConfig
from speechrnn.dataset import count_batches, load_examples, load_shards, make_dataset
from speechrnn.errors import InputError
from speechrnn.features import CMVN, FeatureExtractor
from speechrnn.manifest import Utterance
from speechrnn.shards import ShardIndex, ShardSpec, build_shards, item_record
from speechrnn.text import Alphabet
from speechrnn.tfrecord import write_record

TEXTS = ("ab", "aab", "abba", "ba b")


@pytest.fixture
def rows(tmp_path):
    out = []
    for i in range(14):
        seconds = 0.4 + 0.1 * i
        path = write(tmp_path / "audio" / f"u{i}.wav", tone(seconds, freq=200 + 30 * i))
        out.append(Utterance(str(path), TEXTS[i % 4], seconds, f"s{i % 3}", f"u{i}"))
    bad = bad_files(tmp_path / "bad")
    silent = write(tmp_path / "bad" / "silent.wav", np.zeros(8000, np.float32))
    out.insert(3, Utterance(str(bad["corrupt"]), "ab", 1.0, "x", "corrupt"))
    out.insert(6, Utterance(str(bad["empty"]), "ab", 1.0, "x", "empty"))
    out.insert(9, Utterance(str(silent), "ab", 0.5, "x", "silent"))
    out.insert(10, Utterance(out[0].audio, "caf\u00e9", 0.4, "x", "accent"))
    out.append(Utterance(str(tmp_path / "gone.wav"), "ab", 1.0, "x", "gone"))
    out.append(Utterance(out[0].audio, "a very long transcript " * 5, 0.4, "x", "long"))
    return out


def build(rows, folder, **kwargs):
    """build_shards with the test's settings: ShardSpec fields and run options as keywords."""
    fields = {f.name for f in dataclasses.fields(ShardSpec)}
    spec = ShardSpec(**{"stride": 3, "shard_minutes": 0.05,
                        **{k: v for k, v in kwargs.items() if k in fields}})
    run = {"workers": 1, "progress": False, **{k: v for k, v in kwargs.items()
                                                 if k not in fields}}
    return build_shards(rows, folder, spec, **run)


def memory(rows, features=FeatureConfig()):
    return load_examples(rows, FeatureExtractor(features), Alphabet(), subsampling=3)


def state(folder):
    """What tells a rewritten file from an untouched one."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.iterdir()}


def test_a_record_holds_an_utterances_features_labels_and_row(tmp_path):
    import tensorflow as tf

    feats = np.arange(12, dtype=np.float32).reshape(4, 3) / 7
    with open(tmp_path / "x.tfrecord", "wb") as f:
        write_record(f, item_record(feats, np.array([5, 1, 300]), 1234567, np.ones(3)))
        write_record(f, item_record(feats[:1], np.array([2]), 0))
    records = list(tf.data.TFRecordDataset(str(tmp_path / "x.tfrecord")))  # checks the CRCs
    assert len(records) == 2
    x = tf.train.Example.FromString(records[0].numpy()).features.feature
    got = np.frombuffer(x["features"].bytes_list.value[0], np.float32).reshape(4, 3)
    np.testing.assert_array_equal(got, feats)
    assert list(x["labels"].int64_list.value) == [5, 1, 300]
    assert (x["frames"].int64_list.value, x["n_features"].int64_list.value,
            x["index"].int64_list.value) == ([4], [3], [1234567])
    assert np.frombuffer(x["scale"].bytes_list.value[0], np.float32).tolist() == [1.0] * 3
    assert "scale" not in tf.train.Example.FromString(records[1].numpy()).features.feature


def test_extraction_writes_shards_and_an_index_and_skips_bad_rows(rows, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="speechrnn.shards"):
        index = build(rows, tmp_path / "sh")
    reported = [r.getMessage() for r in caplog.records if r.name == "speechrnn.shards"]
    ex = memory(rows)
    folder = tmp_path / "sh"
    meta = json.loads((folder / "index.json").read_text())
    assert len(index.files) >= 4 and all(f.exists() for f in index.files)
    assert [s["items"] for s in meta["shards"]] == index.counts and sum(index.counts) == 14
    assert meta["n_features"] == index.n_features == 39 and meta["rows"] == len(rows)
    assert not [p for p in folder.iterdir() if p.name.startswith(".tmp-")]
    # the items and skipped rows load_examples gives, for the same reasons, a line each
    assert len(index) == len(ex) == 14
    assert index.rows == ex.rows
    assert index.frames.tolist() == [len(f) for f in ex.features]
    assert index.label_lengths.tolist() == [len(x) for x in ex.labels]
    reasons = {r.id: why for r, why in index.skipped}
    assert reasons == {r.id: why for r, why in ex.skipped}
    assert set(reasons) == {"corrupt", "empty", "silent", "accent", "gone", "long"}
    assert "silent audio" in reasons["silent"] and "file not found" in reasons["gone"]
    assert "outside the alphabet" in reasons["accent"] and "too long" in reasons["long"]
    assert len(reported) == 6 and all(m.startswith("skipping ") for m in reported)
    assert index.seconds == pytest.approx(sum(r.duration for r in ex.rows))
    # opened again from disk: the same set
    again = ShardIndex.load(folder, rows)
    assert again.frames.tolist() == index.frames.tolist() and again.rows == index.rows
    # read back into memory (the dev set in training): what load_examples gives
    back = load_shards(index)
    for a, b in zip(back.features, ex.features, strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(back.labels, ex.labels, strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(back.scales, ex.scales, strict=True):
        np.testing.assert_array_equal(a, b)
    assert (back.rows, back.feature_config, back.subsampling) == \
        (ex.rows, ex.feature_config, ex.subsampling)


def test_shards_are_rebuilt_only_when_missing_or_stale(rows, tmp_path):
    folder = tmp_path / "sh"
    index = build(rows, folder)
    before = state(folder)
    build(rows, folder)
    assert state(folder) == before  # same inputs: nothing rebuilt, not even the index
    # a lost shard, or one a crash left half-written (under a temporary name): only that
    # one is extracted again, and the leftover goes
    lost = index.files[1]
    lost.unlink()
    (folder / f".tmp-{lost.name}-999").write_bytes(b"half a shard")
    build(rows, folder)
    after = state(folder)
    assert lost.exists() and after[lost.name] != before[lost.name]
    assert not [p for p in folder.iterdir() if p.name.startswith(".tmp-")]
    assert all(after[f.name] == before[f.name] for f in index.files if f != lost)
    # a changed manifest, or changed features: rebuilt
    first = index.files[0].name
    changed = build([replace(rows[0], text="ba"), *rows[1:]], folder)
    assert state(folder)[first] != after[first] and changed.digest != index.digest
    wider = build(rows, folder, features=FeatureConfig(n_mfcc=20))
    assert wider.n_features == 60 and len(wider) == 14


def test_two_processes_extract_what_one_does(rows, tmp_path):
    one = build(rows, tmp_path / "one", workers=1)
    two = build(rows, tmp_path / "two", workers=2)
    assert [f.name for f in one.files] == [f.name for f in two.files]
    for a, b in zip(one.files, two.files, strict=True):
        assert a.read_bytes() == b.read_bytes()
    assert (tmp_path / "one" / "index.json").read_text() == \
        (tmp_path / "two" / "index.json").read_text()


AUGMENTED = BatchConfig(batch_size=3, buckets=2, shuffle_buffer=8, vtlp=0.1, tempo=0.2,
                        spec_augment=SpecAugmentConfig(enabled=True))


def items(data, **kwargs):
    out = {}
    for b in make_dataset(data, AUGMENTED, **kwargs):
        assert set(b) == {"features", "feature_lengths", "labels", "label_lengths", "index"}
        assert b["features"].dtype.name == "float32" and b["labels"].dtype.name == "int32"
        for j, i in enumerate(b["index"].numpy()):
            n, m = int(b["feature_lengths"][j]), int(b["label_lengths"][j])
            assert (b["features"][j, n:].numpy() == 0).all()
            assert (b["labels"][j, m:].numpy() == 0).all()
            out[int(i)] = (b["features"][j, :n].numpy(), b["labels"][j, :m].numpy())
    return out


def test_streamed_items_are_the_memory_items(rows, tmp_path):
    index, ex = build(rows, tmp_path / "sh"), memory(rows)
    for kwargs in ({"training": False}, {"training": True, "seed": 2, "epoch": 1}):
        streamed, held = items(index, **kwargs), items(ex, **kwargs)
        assert set(streamed) == set(held) == set(range(len(ex)))
        for i in held:  # the same features (augmented alike), labels and lengths
            np.testing.assert_array_equal(streamed[i][0], held[i][0])
            np.testing.assert_array_equal(streamed[i][1], held[i][1])
    assert any(len(f) != len(ex.features[i]) for i, (f, _) in streamed.items())  # tempo


def test_batch_pipelines_run_without_autotuning(rows, tmp_path):
    # tf.data's autotuning thread held every finished epoch's iterator for seconds
    index, ex = build(rows, tmp_path / "sh"), memory(rows)
    for data in (index, ex):
        for training in (False, True):
            ds = make_dataset(data, AUGMENTED, training=training)
            assert ds.options().autotune.enabled is False
            assert sum(len(b["index"]) for b in ds) == len(ex)


def test_an_epoch_depends_on_seed_and_epoch_only_and_skip_resumes_it(rows, tmp_path):
    index = build(rows, tmp_path / "sh")

    def batches(epoch, seed=1, skip=0):
        ds = make_dataset(index, AUGMENTED, training=True, seed=seed, epoch=epoch)
        return [(b["index"].numpy().tolist(), b["features"].numpy()) for b in ds.skip(skip)]

    check_epochs_are_seeded(batches, len(index))
    with pytest.raises(InputError, match="sortagrad"):
        make_dataset(index, replace(AUGMENTED, sortagrad=True), training=True)


def test_counted_batches_are_the_batches_an_epoch_gives(rows, tmp_path):
    index, ex = build(rows, tmp_path / "sh"), memory(rows)
    for cfg, epochs in ((BatchConfig(batch_size=3, buckets=3), (0,)),
                        (BatchConfig(batch_size=4, buckets=1), (0,)),
                        (BatchConfig(batch_size=2, buckets=3, tempo=0.4), (0, 3))):
        for epoch in epochs:  # with tempo too: items are bucketed by their stored length
            assert count_batches(index, cfg) == sum(
                1 for _ in make_dataset(index, cfg, training=True, seed=7, epoch=epoch))
        assert count_batches(ex, cfg) == sum(
            1 for _ in make_dataset(ex, cfg, training=True))


def test_global_cmvn_from_the_shards_is_cmvn_of_the_features(rows, tmp_path):
    from speechrnn.audio import AudioError

    raw = FeatureExtractor(FeatureConfig(cmvn="none"))
    arrays = []
    for r in rows:
        try:
            arrays.append(raw(r.audio, *r.segment))
        except AudioError:
            pass
    expected = CMVN.compute(arrays)
    index = build(rows, tmp_path / "sh", features=FeatureConfig(cmvn="global"))
    got = index.cmvn  # read from cmvn.json, CMVN's own format
    assert set(json.loads((tmp_path / "sh" / "cmvn.json").read_text())) == \
        {"mean", "std", "frames"}
    np.testing.assert_allclose(got.mean, expected.mean, atol=1e-4)
    np.testing.assert_allclose(got.std, expected.std, atol=1e-4)
    assert got.frames == expected.frames
    back = load_shards(index)
    assert back.scales is None and len(back) == 14
    for feats, row in zip(back.features, back.rows, strict=True):
        np.testing.assert_allclose(feats, expected.apply(raw(row.audio)), atol=1e-4)
    # the same statistics given from outside: the same features, a different digest
    given = build(rows, tmp_path / "given", features=FeatureConfig(cmvn="global"), cmvn=got)
    assert given.digest != index.digest and not (tmp_path / "given" / "stats.json").exists()
    assert index.files[0].read_bytes() == given.files[0].read_bytes()


def test_config_knows_the_source_and_the_shard_folder():
    assert BatchConfig().source == "memory"
    with pytest.raises(ConfigError, match="batch.source"):
        BatchConfig(source="disk")
    with pytest.raises(ConfigError, match="sortagrad"):  # a stream cannot be sorted
        BatchConfig(source="shards", sortagrad=True)
    with pytest.raises(ConfigError, match="shard_minutes"):
        DataConfig(shard_minutes=0)
    assert str(DataConfig(out="d/x").shard_dir()) == "d/x/shards"
    assert str(DataConfig(out="d/x", shards="/s").shard_dir()) == "/s"


def test_features_command_and_training_data_from_shards(synth_corpus, tmp_path, capsys):
    from speechrnn.cli import main
    from speechrnn.config import load_pipeline_config
    from speechrnn.training_data import load_data

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({
        "data": {**TINY_DATA, "out": str(synth_corpus), "cache": "",
                 "shards": str(tmp_path / "shards"), "shard_minutes": 0.05},
        "batch": {"batch_size": 4, "buckets": 2, "source": "shards"},
        "train": {"workdir": str(tmp_path / "run")}}))
    assert main(["data", "features", "--config", str(config), "--workers", "1",
                 "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "train: 16 items" in out and "dev: 4 items" in out and "0 skipped" in out
    files = state(tmp_path / "shards" / "train")
    cfg = load_pipeline_config(config)
    cfg.workdir.mkdir(parents=True)
    data = load_data(cfg, progress=False)  # the shards are current: nothing extracted
    assert state(tmp_path / "shards" / "train") == files
    assert isinstance(data.train, ShardIndex) and len(data.train) == 16
    assert data.steps_per_epoch(cfg.batch) == sum(
        1 for _ in make_dataset(data.train, cfg.batch, training=True, seed=0, epoch=0))
    dev = memory(data.manifest_rows["dev"])
    assert data.dev.rows == dev.rows
    for a, b in zip(data.dev.features, dev.features, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_worker_that_does_not_build_only_looks(rows, tmp_path):
    """What a non-chief worker does: no shards yet -> None, nothing written; the chief's
    current set -> that set, untouched."""
    folder = tmp_path / "sh"
    assert build(rows, folder, build=False) is None and not folder.exists()
    made = build(rows, folder)
    before = state(folder)
    seen = build(rows, folder, build=False)
    assert seen is not None and seen.frames.tolist() == made.frames.tolist()
    assert state(folder) == before
    assert build(rows[:-3], folder, build=False) is None  # stale for other rows: not rebuilt
    assert state(folder) == before


def test_weighted_streamed_epochs_draw_the_memory_epochs_items(rows, tmp_path):
    """Sampling weights follow the manifest rows (skipped rows included) to the items; a
    streamed epoch draws the copies a memory epoch draws, each augmented alike, and whole
    weights give the counted batches exactly."""
    from speechrnn.dataset import epoch_counts

    row_weights = np.array([2.0, 0.5, 1.0, 1.5] * 5)[:len(rows)]
    index = build(rows, tmp_path / "sh").weigh(row_weights)
    ex = load_examples(rows, FeatureExtractor(), Alphabet(), subsampling=3, weights=row_weights)
    np.testing.assert_array_equal(index.weights, ex.weights)
    assert index.weights.tolist() == [row_weights[r] for r in index.item_rows]
    with pytest.raises(ValueError, match="row weights"):
        index.weigh(row_weights[:-1])

    def copies(data, epoch):
        out: dict[int, list] = {}
        for b in make_dataset(data, AUGMENTED, training=True, seed=2, epoch=epoch):
            for j, i in enumerate(b["index"].numpy()):
                out.setdefault(int(i), []).append(
                    b["features"][j, :int(b["feature_lengths"][j])].numpy().tobytes())
        return {i: sorted(v) for i, v in out.items()}

    for epoch in (0, 1):
        streamed, held = copies(index, epoch), copies(ex, epoch)
        counts = epoch_counts(ex.weights, 2, epoch)
        assert {i: len(v) for i, v in held.items()} == \
            {i: int(c) for i, c in enumerate(counts) if c}
        assert streamed == held  # the same copies, augmented alike (two copies: unalike)
        assert any(len(set(v)) == 2 for v in held.values())
    whole = build(rows, tmp_path / "sh").weigh(np.where(row_weights == 2.0, 2.0, 1.0))
    cfg = BatchConfig(batch_size=3, buckets=3, tempo=0.4)
    for epoch in (0, 3):
        assert count_batches(whole, cfg) == sum(
            1 for _ in make_dataset(whole, cfg, training=True, seed=7, epoch=epoch))

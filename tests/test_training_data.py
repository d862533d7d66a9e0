"""What a run trains on: each training manifest's weight, the mix, in memory and streamed."""


import pytest
from conftest import write_config

from speechrnn.config import load_pipeline_config
from speechrnn.manifest import read_manifest, write_manifest


@pytest.mark.parametrize("source", ["memory", "shards"])
def test_training_data_carries_each_corpus_weight_and_prints_the_mix(corpus, tmp_path, source,
                                                                     capsys):
    """data.train_weight and a further corpus's weight reach every training item, in memory
    and streamed; the mix is printed once; steps per epoch count the weighted epoch."""
    from speechrnn.dataset import count_batches, make_dataset
    from speechrnn.shards import config_shards
    from speechrnn.training_data import load_data

    data = tmp_path / "data"
    rows = read_manifest(corpus / "train.jsonl")
    write_manifest(data / "train.jsonl", rows)
    for split in ("dev", "test"):
        write_manifest(data / f"{split}.jsonl", read_manifest(corpus / f"{split}.jsonl"))
    write_manifest(data / "corpora" / "extra" / "train.jsonl", rows[:6])
    config = write_config(
        tmp_path, data, tracking={"enabled": False},
        batch={"batch_size": 4, "buckets": 1, "source": source},
        data={"train_weight": 2.0, "shards": str(tmp_path / "shards"), "shard_minutes": 0.05,
              "corpora": [{"kind": "generic", "source": "extra", "weight": 0.5}]})
    cfg = load_pipeline_config(config)
    assert [w for _, w in cfg.data.training_sets()] == [2.0, 0.5]
    if source == "shards":
        config_shards(cfg, workers=1, progress=False)
    training = load_data(cfg, progress=False)
    assert training.train.weights.tolist() == [2.0] * len(rows) + [0.5] * 6
    out = capsys.readouterr().out
    assert out.count("training mix") == 1
    hours = [sum(r.duration for r in part) / 3600 for part in (rows, rows[:6])]
    shares = [2.0 * hours[0], 0.5 * hours[1]]
    assert [m["weight"] for m in training.mix] == [2.0, 0.5]
    assert [m["utterances"] for m in training.mix] == [len(rows), 6]
    assert [m["share"] for m in training.mix] == pytest.approx([s / sum(shares)
                                                                for s in shares])
    for m in training.mix:
        assert m["manifest"] in out and f"{100 * m['share']:5.1f} %" in out
    # an epoch: every train utterance twice and 3 of the 6 further ones
    steps = training.steps_per_epoch(cfg.batch)
    assert steps == count_batches(training.train, cfg.batch) == -(-(2 * len(rows) + 3) // 4)
    for epoch in (0, 1):
        items = [int(i) for b in make_dataset(training.train, cfg.batch, training=True,
                                              epoch=epoch) for i in b["index"].numpy()]
        assert len(items) == 2 * len(rows) + 3 and -(-len(items) // 4) == steps
        assert all(items.count(i) == 2 for i in range(len(rows)))
    # without weights: none carried, the epochs as they were
    plain = load_data(load_pipeline_config(config, ["data.train_weight=1.0",
                                                    "data.corpora=[]"]), progress=False)
    assert plain.train.weights is None and [m["weight"] for m in plain.mix] == [1.0]

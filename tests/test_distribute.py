"""Scale-out on CPU: cluster descriptions, replicas sharing a batch, two worker processes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, TINY_DATA

from speechrnn.config import Config, TrainConfig
from speechrnn.distribute import Cluster, local_workers, set_cluster, strategy_kind
from speechrnn.errors import InputError


def test_cluster_from_tf_config_and_flags(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", "")  # restored afterwards: set_cluster writes it
    assert Cluster.from_env() == Cluster() and Cluster().is_chief and Cluster().size == 1
    cluster = set_cluster(["a:1", "b:2", "c:3"], 2)
    assert cluster == Cluster(("a:1", "b:2", "c:3"), 2) == Cluster.from_env()
    assert not cluster.is_chief
    assert json.loads(os.environ["TF_CONFIG"])["task"] == {"type": "worker", "index": 2}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"chief": ["a:1"], "worker": ["b:2"]},
                                                "task": {"type": "worker", "index": 0}}))
    assert Cluster.from_env() == Cluster(("a:1", "b:2"), 1)
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(InputError, match="TF_CONFIG"):
        Cluster.from_env()
    with pytest.raises(InputError, match="--worker-index 5"):
        set_cluster(["a:1"], 5)


def test_strategy_follows_the_config_the_cluster_and_the_gpus():
    auto, alone, pair = Config(), Cluster(), Cluster(("a:1", "b:2"), 0)
    assert strategy_kind(auto, alone, gpus=0) == "none"
    assert strategy_kind(auto, alone, gpus=1) == "none"
    assert strategy_kind(auto, alone, gpus=4) == "mirrored"
    assert strategy_kind(auto, pair, gpus=0) == "multi_worker"
    assert strategy_kind(Config(train=TrainConfig(distribute="none")), pair, gpus=4) == "none"
    with pytest.raises(InputError, match="multi_worker needs a cluster"):
        strategy_kind(Config(train=TrainConfig(distribute="multi_worker")), alone, gpus=0)


REPLICAS = """
import numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from speechrnn.config import Config, ModelConfig
from speechrnn.model import build_model
from speechrnn.text import Alphabet
from speechrnn.steps import Steps, make_optimizer

cfg = Config()
rng = np.random.default_rng(0)
batches = []
for size in (5, 4, 3, 1):  # odd sizes: uneven shares, and a replica with no item
    lengths = rng.integers(20, 40, size).astype(np.int32)
    labels = rng.integers(1, 27, (size, 5)).astype(np.int32)
    batches.append({"features": rng.normal(size=(size, 40, 39)).astype(np.float32),
                    "feature_lengths": lengths, "labels": labels,
                    "label_lengths": np.full(size, 5, np.int32)})
keras.utils.set_random_seed(0)
start = build_model(ModelConfig(conv_filters=8, lstm_layers=1, lstm_units=8, dropout=0.0),
                    39, Alphabet()).get_weights()

def run(strategy):
    with strategy.scope():
        model = build_model(ModelConfig(conv_filters=8, lstm_layers=1, lstm_units=8,
                                        dropout=0.0), 39, Alphabet())
        model.set_weights(start)
        optimizer = make_optimizer(cfg, 10, strategy.num_replicas_in_sync)
        optimizer.build(model.trainable_variables)
    steps = Steps(model, optimizer, 39, 0.9, strategy)
    losses = [steps.train_batch({k: tf.constant(v) for k, v in b.items()})[0] for b in batches]
    return losses, [v.numpy() for v in model.weights], [v.numpy() for v in steps.ema]

one = run(tf.distribute.get_strategy())
two = run(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
np.testing.assert_allclose(two[0], one[0], rtol=1e-5)
for a, b in zip(one[1] + one[2], two[1] + two[2]):
    np.testing.assert_allclose(b, a, atol=1e-5)
print("replicas agree", one[0])
"""


@pytest.mark.slow
def test_two_replicas_share_each_batch_and_match_one_device():
    """Two replicas (two logical CPUs, MirroredStrategy) train exactly as one device does
    on the same global batches: losses, weights and their moving average."""
    proc = subprocess.run([sys.executable, "-c", REPLICAS], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "replicas agree" in proc.stdout


def epoch_metrics(uri: str, experiment: str):
    import mlflow

    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return client, runs


@pytest.mark.slow
def test_two_worker_processes_train_as_one(synth_corpus, tmp_path):
    """Two `speechrnn train` processes on localhost (MultiWorkerMirroredStrategy, CPU):
    one MLflow run, each metric once per epoch, a model from the chief, and the loss curve
    of a single worker with the same global batch."""
    def config(name: str) -> Path:
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({
            "name": name,
            "model": {"conv_filters": 16, "lstm_layers": 1, "lstm_units": 16, "dropout": 0.0},
            "batch": {"batch_size": 4, "buckets": 1},
            "train": {"epochs": 2, "learning_rate": 0.003, "workdir": str(tmp_path / name)},
            "data": {**TINY_DATA, "out": str(synth_corpus), "cache": str(tmp_path / "cache")},
            "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
                         "experiment": f"speechrnn-{name}"}}))
        return path

    env = {**os.environ, "SPEECHRNN_PROGRESS": "0"}
    env.pop("TF_CONFIG", None)
    single = subprocess.run([sys.executable, "-m", "speechrnn", "train", "--config",
                             str(config("single")), "--quiet"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    workers = ",".join(local_workers(2))
    path = config("pair")
    logs = [(tmp_path / f"worker{i}.out", tmp_path / f"worker{i}.err") for i in (0, 1)]
    procs = []
    for i, (out, err) in enumerate(logs):  # files, not pipes: a full pipe would stall a worker
        with out.open("w") as stdout, err.open("w") as stderr:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "speechrnn", "train", "--config", str(path), "--quiet",
                 "--workers", workers, "--worker-index", str(i)], cwd=ROOT, env=env,
                stdout=stdout, stderr=stderr))
    try:
        for p in procs:
            p.wait(timeout=300)
    finally:  # one worker failing leaves the other waiting for it: never hang the suite
        for p in procs:
            p.kill()
    outputs = [(out.read_text(), err.read_text()) for out, err in logs]
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    assert "MultiWorkerMirroredStrategy" in outputs[0][0] and "replicas 2" in outputs[0][0]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client, runs = epoch_metrics(uri, "speechrnn-pair")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    run = runs[0]
    assert run.data.params["runtime.replicas"] == "2"
    pair_loss = [m.value for m in client.get_metric_history(run.info.run_id, "train_loss")]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "dev_wer")] == [0, 1]
    assert len(pair_loss) == 2
    _, (one,) = epoch_metrics(uri, "speechrnn-single")
    single_loss = [m.value for m in client.get_metric_history(one.info.run_id, "train_loss")]
    # the same global batches, shared out: the same curve up to the order of float sums
    assert pair_loss == pytest.approx(single_loss, rel=1e-3)
    assert (tmp_path / "pair" / "model" / "model.json").exists()

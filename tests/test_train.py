"""Training end to end on a tiny synthetic corpus: tracking, resume, guards."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import TINY_DATA

from speechrnn.config import load_pipeline_config
from speechrnn.fastbeam import available as fastbeam_available
from speechrnn.lexicon import Lexicon, PhoneAlphabet
from speechrnn.manifest import read_manifest, write_manifest

needs_flashlight = pytest.mark.skipif(not fastbeam_available(),
                                      reason="flashlight-text is not installed")

TINY = {
    "model": {"conv_filters": 16, "lstm_layers": 1, "lstm_units": 16, "dropout": 0.0},
    "batch": {"batch_size": 4, "buckets": 1},
    "train": {"epochs": 2, "learning_rate": 0.003},
}


@pytest.fixture
def corpus(synth_corpus):
    return synth_corpus


def write_config(tmp_path: Path, corpus: Path, **sections) -> Path:
    data = json.loads(json.dumps(TINY))
    data["data"] = {**TINY_DATA, "out": str(corpus), "cache": str(tmp_path / "cache")}
    data["train"]["workdir"] = str(tmp_path / "run")
    data["tracking"] = {"uri": f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"}
    for key, value in sections.items():
        data.setdefault(key, {}).update(value)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def mlflow_run(tmp_path: Path, run_id: str):
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    return client, client.get_run(run_id)


def test_train_logs_everything_and_registers_a_model(trained):
    from speechrnn.tracking import Tracker
    from speechrnn.train import train

    client = __import__("mlflow").MlflowClient(trained.uri)
    run = client.get_run(trained.run_id)
    assert run.info.status == "FINISHED"
    for metric in ("train_loss", "dev_loss", "dev_wer", "dev_cer", "learning_rate",
                   "epoch_seconds", "train_audio_s_per_s"):
        assert [m.step for m in client.get_metric_history(trained.run_id, metric)] == [0, 1]
    lrs = [m.value for m in client.get_metric_history(trained.run_id, "learning_rate")]
    assert lrs[0] != lrs[1]  # the schedule moves
    assert run.data.params["model.lstm_units"] == "16"
    assert run.data.params["dataset.training.utterances"] == "16"
    assert {d.dataset.name for d in run.inputs.dataset_inputs} == {"tiny-train", "tiny-dev"}
    artifacts = {a.path for a in client.list_artifacts(trained.run_id)}
    assert {"config.yaml", "alphabet.json", "training_curves.png",
            "dev_transcripts"} <= artifacts
    assert {Path(a.path).name for a in client.list_artifacts(trained.run_id, "dev_transcripts")} \
        == {"dev_transcripts.csv", "dev_word_errors.csv"}
    errors = {a.path for a in client.list_artifacts(trained.run_id, "errors")}
    assert errors == {"errors/worst", "errors/worst.tsv", "errors/word_errors.tsv",
                      "errors/word_errors.md"}
    worst = [a.path for a in client.list_artifacts(trained.run_id, "errors/worst")]
    assert worst and all(p.endswith(".wav") for p in worst) and worst == sorted(worst)
    assert not list(trained.model_dir.rglob("*.wav"))  # the model carries no dev audio
    versions = client.search_model_versions(f"name='{trained.name}'")
    assert [int(v.version) for v in versions] == [1]

    import mlflow
    import pandas as pd

    mlflow.set_tracking_uri(trained.uri)
    served = mlflow.pyfunc.load_model(f"models:/{trained.name}/1")
    audio = Path(read_manifest(trained.corpus / "test.jsonl")[0].audio).read_bytes()
    out = served.predict(pd.DataFrame({"audio": [audio]}))
    assert list(out.columns) == ["text", "confidence", "words", "error"]
    from speechrnn.transcribe import Transcriber

    local = Transcriber(trained.model_dir).transcribe(audio)
    assert out["text"][0] == local.text
    assert json.loads(out["words"][0]) == local.as_dict()["words"]
    # a finished run rerun does nothing more
    again = train(load_pipeline_config(trained.config), Tracker(trained.name, trained.uri),
                  progress=False)
    assert again.run_id == trained.run_id and len(again.history) == 2


def _run_cli(config: Path, *extra) -> subprocess.Popen:
    env = {**os.environ, "SPEECHRNN_PROGRESS": "0", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "speechrnn", "train", "--config",
                             str(config), "--quiet", *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)


def _wait_for(proc, pattern: str, timeout: float = 240):
    lines, start = [], time.time()
    for line in proc.stdout:
        lines.append(line)
        if pattern in line:
            return lines
        if time.time() - start > timeout:
            break
    proc.kill()
    raise AssertionError(f"never saw {pattern!r}:\n{''.join(lines)}")


@pytest.mark.slow
def test_sigkill_mid_epoch_resumes_the_same_run(corpus, tmp_path):
    config = write_config(tmp_path, corpus, train={"epochs": 4})
    proc = _run_cli(config)
    _wait_for(proc, "epoch   2 ")
    time.sleep(1.0)  # into epoch 3
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = json.loads((tmp_path / "run" / "checkpoints" / "last" / "state.json").read_text())
    assert state["epoch"] >= 2 and not state["finished"]
    run_id = state["run_id"]

    proc = _run_cli(config)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert "resuming from" in out
    client, run = mlflow_run(tmp_path, run_id)
    assert run.info.status == "FINISHED"
    for metric in ("dev_wer", "train_loss", "learning_rate"):
        steps = [m.step for m in client.get_metric_history(run_id, metric)]
        assert steps == [0, 1, 2, 3], (metric, steps)
    assert len(client.search_runs([run.info.experiment_id])) == 1


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_checkpoints_mid_epoch_and_resumes(corpus, tmp_path, sig):
    config = write_config(tmp_path, corpus, train={"epochs": 5},
                          batch={"batch_size": 2, "buckets": 1})
    proc = _run_cli(config)
    _wait_for(proc, "epoch   1 ")
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    state = json.loads((tmp_path / "run" / "checkpoints" / "last" / "state.json").read_text())
    assert 1 <= state["epoch"] < 5 and state["step"] > 0 and state["partial"]["items"] > 0
    assert len(state["history"]) == state["epoch"]  # finished epochs only
    proc = _run_cli(config)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert f"epoch {state['epoch'] + 1}, batch {state['step'] + 1}" in out
    final = json.loads((tmp_path / "run" / "checkpoints" / "last" / "state.json").read_text())
    assert final["finished"] and [h["epoch"] for h in final["history"]] == [0, 1, 2, 3, 4]


def test_bad_utterances_are_skipped_and_changed_config_is_refused(corpus, tmp_path):
    from speechrnn.audio import save_audio
    from speechrnn.train import TrainError, train

    rows = read_manifest(corpus / "train.jsonl")
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF....garbage")
    save_audio(tmp_path / "silent.wav", np.zeros(16000, np.float32))
    bad = [replace(rows[0], audio=str(tmp_path / "corrupt.wav"), id="corrupt"),
           replace(rows[0], audio=str(tmp_path / "silent.wav"), id="silent")]
    data = tmp_path / "data"
    write_manifest(data / "train.jsonl", rows + bad)
    for split in ("dev", "test"):
        write_manifest(data / f"{split}.jsonl", read_manifest(corpus / f"{split}.jsonl"))
    config = write_config(tmp_path, data, train={"epochs": 1}, tracking={"enabled": False})
    cfg = load_pipeline_config(config)
    result = train(cfg, progress=False)
    assert result.skipped == 2
    with pytest.raises(TrainError, match="different configuration"):
        train(load_pipeline_config(config, ["model.lstm_units=8"]), progress=False)


def test_nonfinite_batch_leaves_weights_alone(corpus, tmp_path):
    import tensorflow as tf

    from speechrnn.config import Config, ModelConfig
    from speechrnn.model import build_model
    from speechrnn.text import Alphabet
    from speechrnn.train import Steps, make_optimizer

    cfg = Config(model=ModelConfig(conv_filters=8, lstm_layers=1, lstm_units=4))
    model = build_model(cfg.model, 39, Alphabet())
    optimizer = make_optimizer(cfg, 10)
    optimizer.build(model.trainable_variables)
    steps = Steps(model, optimizer, 39)
    before = [w.copy() for w in model.get_weights()]
    x = np.random.default_rng(0).standard_normal((2, 30, 39)).astype(np.float32)
    x[0, 3, 4] = np.nan
    batch = {"features": tf.constant(x), "feature_lengths": tf.constant([30, 30]),
             "labels": tf.constant([[1, 2], [3, 0]]), "label_lengths": tf.constant([2, 1])}
    loss, finite = steps.train_batch(batch)
    assert not finite and not np.isfinite(loss)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))
    x[0, 3, 4] = 0.0
    loss, finite = steps.train_batch({**batch, "features": tf.constant(x)})
    assert finite and np.isfinite(loss)
    assert not all(np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))


def test_ctc_losses_are_tensorflows_dense_ctc_loss_and_its_gradient():
    """The sparse-label C++ kernel gives the loss and gradient of the dense reference, each
    item over its own output and label lengths (padding in either changes nothing)."""
    import tensorflow as tf

    from speechrnn.train import ctc_losses

    rng = np.random.default_rng(0)
    log_probs = tf.nn.log_softmax(tf.constant(rng.normal(0, 3, (6, 80, 29)), tf.float32))
    output_lengths = tf.constant([80, 60, 45, 80, 33, 70])
    label_lengths = tf.constant([10, 20, 5, 30, 1, 12])
    labels = np.zeros((6, 30), np.int32)
    for i, n in enumerate(label_lengths.numpy()):
        labels[i, :n] = rng.integers(1, 29, n)
    padded = np.concatenate([labels, rng.integers(1, 29, (6, 7))], axis=1)  # junk padding
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(log_probs)
        fast = ctc_losses(log_probs, output_lengths, tf.constant(padded), label_lengths)
        dense = tf.nn.ctc_loss(tf.constant(labels), log_probs, label_lengths, output_lengths,
                               logits_time_major=False, blank_index=0)
    np.testing.assert_allclose(fast.numpy(), dense.numpy(), rtol=1e-6)
    np.testing.assert_allclose(tape.gradient(fast, log_probs).numpy(),
                               tape.gradient(dense, log_probs).numpy(), atol=1e-3)
    # frames past an item's output length get no gradient
    grad = tape.gradient(fast, log_probs).numpy()
    assert not grad[2, 45:].any() and not grad[4, 33:].any()


def test_mixed_precision_step_scales_the_loss_and_keeps_float32_weights():
    """train.mixed_precision: float16 compute, float32 weights, a dynamic loss scale; the
    step trains and its loss is the float32 step's within float16 rounding."""
    import keras
    import tensorflow as tf

    from speechrnn.config import Config, ModelConfig, TrainConfig
    from speechrnn.model import build_model
    from speechrnn.text import Alphabet
    from speechrnn.train import Steps, make_optimizer

    rng = np.random.default_rng(0)
    batch = {"features": tf.constant(rng.standard_normal((2, 30, 39)).astype(np.float32)),
             "feature_lengths": tf.constant([30, 24]), "labels": tf.constant([[1, 2], [3, 0]]),
             "label_lengths": tf.constant([2, 1])}
    small = ModelConfig(conv_filters=8, lstm_layers=1, lstm_units=4, dropout=0.0)
    keras.utils.set_random_seed(0)
    start = build_model(small, 39, Alphabet()).get_weights()
    losses = {}
    for mixed in (False, True):
        cfg = Config(model=small, train=TrainConfig(mixed_precision=mixed))
        keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
        try:
            model = build_model(cfg.model, 39, Alphabet())
            model.set_weights(start)
            optimizer = make_optimizer(cfg, 10)
            optimizer.build(model.trainable_variables)
            steps = Steps(model, optimizer, 39, loss_scaling=mixed)
            losses[mixed], finite = steps.train_batch(batch)
            for _ in range(40):  # an overflowing scaled step is skipped and the scale halved
                if not all(np.array_equal(a, b) for a, b in zip(start, model.get_weights())):
                    break
                steps.train_batch(batch)
        finally:
            keras.mixed_precision.set_global_policy("float32")
        assert finite and all(w.dtype == np.float32 for w in model.get_weights())
        assert not all(np.array_equal(a, b) for a, b in zip(start, model.get_weights()))
        assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer) == mixed
    assert losses[True] == pytest.approx(losses[False], rel=1e-2)


def test_weight_average_follows_training_and_is_swapped_in_for_evaluation():
    import tensorflow as tf

    from speechrnn.config import Config, ModelConfig, TrainConfig
    from speechrnn.model import build_model
    from speechrnn.text import Alphabet
    from speechrnn.train import Checkpointer, Steps, TrainState, make_optimizer

    cfg = Config(model=ModelConfig(conv_filters=8, lstm_layers=1, lstm_units=4),
                 train=TrainConfig(ema_decay=0.9))
    model = build_model(cfg.model, 39, Alphabet())
    optimizer = make_optimizer(cfg, 10)
    optimizer.build(model.trainable_variables)
    steps = Steps(model, optimizer, 39, ema_decay=0.9)
    x = np.random.default_rng(0).standard_normal((2, 30, 39)).astype(np.float32)
    batch = {"features": tf.constant(x), "feature_lengths": tf.constant([30, 30]),
             "labels": tf.constant([[1, 2], [3, 0]]), "label_lengths": tf.constant([2, 1])}
    for _ in range(3):
        steps.train_batch(batch)
    live = [v.numpy().copy() for v in model.trainable_variables]
    with steps.averaged():
        averaged = [v.numpy().copy() for v in model.trainable_variables]
    assert not all(np.allclose(a, b) for a, b in zip(live, averaged))  # the average lags
    assert all(np.array_equal(a, v.numpy()) for a, v in zip(live, model.trainable_variables))
    assert len(steps.state_variables) == len(optimizer.variables) + len(live)
    # the average survives a checkpoint
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        Checkpointer(Path(tmp)).save(model, steps.state_variables, TrainState(config_digest="d"))
        for v in steps.ema:
            v.assign(tf.zeros_like(v))
        Checkpointer(Path(tmp)).restore(model, steps.state_variables, "d")
    with steps.averaged():
        assert all(np.allclose(a, v.numpy()) for a, v in zip(averaged, model.trainable_variables))


def test_schedule_warms_up_then_anneals_by_steps_or_budget():
    from speechrnn.train import Schedule

    s = Schedule(peak=1e-3, warmup_steps=10, total_steps=110, min_ratio=0.05)
    assert s(0) == pytest.approx(1e-4) and s(10) == pytest.approx(1e-3)
    assert s(60) == pytest.approx(0.525e-3) and s(110) == pytest.approx(0.05e-3)
    assert s(500) == pytest.approx(0.05e-3)
    budget = Schedule(1e-3, 10, 110, 0.05, budget_seconds=100.0)
    assert budget(20, elapsed=10.0) == pytest.approx(s(20))  # steps lead
    assert budget(20, elapsed=100.0) == pytest.approx(0.05e-3)  # budget spent: annealed
    assert budget(20, elapsed=50.0) == pytest.approx(0.525e-3)


def test_dev_wer_with_beam_search_and_the_training_transcripts_lm():
    """Frames that spell "tw o" greedily: beam search with a word LM of the training
    transcripts reads "two"; the greedy rates come along for the record."""
    import tensorflow as tf

    from speechrnn.config import Config, EvalConfig, TrainConfig
    from speechrnn.dataset import Examples
    from speechrnn.decoding import Decoding, DecodingOptions
    from speechrnn.lm import WordLM
    from speechrnn.manifest import Utterance
    from speechrnn.text import Alphabet
    from speechrnn.train import evaluate_examples

    alphabet = Alphabet()
    spelled = [alphabet.encode(c)[0] if c != "_" else alphabet.blank for c in "t_w__ _o"]
    frames = np.full((len(spelled), alphabet.size), np.log(0.01 / alphabet.size), np.float32)
    for t, k in enumerate(spelled):
        frames[t, k] = np.log(0.55)
        if k == alphabet.encode(" ")[0]:  # the space is a close call with the blank
            frames[t, alphabet.blank] = np.log(0.44)

    class Fake:  # what evaluate_examples needs of Steps
        class model:
            @staticmethod
            def output_lengths(lengths):
                return tf.cast(lengths, tf.int32)

        @staticmethod
        def evaluate(features, feature_lengths, labels, label_lengths):
            n = int(tf.shape(features)[0])
            return tf.constant(np.stack([frames] * n)), tf.zeros([n])

    examples = Examples(rows=[Utterance("x.wav", "two", 1.0, "s", "u")],
                        features=[np.zeros((len(spelled), 39), np.float32)],
                        labels=[np.array(alphabet.encode("two"), np.int32)])
    train_texts = ["two one", "one two", "two"]
    _, rates, _, extra, per = evaluate_examples(Fake, examples, Config(), alphabet, Decoding())
    assert rates.wer == 2.0 and extra is None and per is None  # "tw o": a sub. and an ins.
    cfg = Config(train=TrainConfig(dev_decoder="beam"),
                 eval=EvalConfig(lm_order=1, lm_weight=2.0, word_bonus=0.0))
    beam = Decoding(DecodingOptions.from_eval(cfg.eval), WordLM.from_texts(train_texts, 1))
    _, rates, table, greedy, _ = evaluate_examples(Fake, examples, cfg, alphabet, beam)
    assert rates.wer == 0.0 and table[0].hypothesis == "two" and greedy.wer == 2.0


def test_a_full_disk_is_a_clear_error_and_leaves_nothing_half_written(corpus, tmp_path,
                                                                      monkeypatch):
    """No space left while caching features or saving the best model: a TrainError that
    names the file and says what is intact; no temporary file or folder left behind."""
    import types

    from conftest import full_disk

    from speechrnn.config import Config, ModelConfig, TrainConfig
    from speechrnn.model import build_model, load_model
    from speechrnn.text import Alphabet
    from speechrnn.train import TrainError, save_best, train

    config = write_config(tmp_path, corpus, train={"epochs": 1}, tracking={"enabled": False})
    with monkeypatch.context() as patch:
        full_disk(patch)
        with pytest.raises(TrainError) as err:
            train(load_pipeline_config(config), progress=False)
    message = str(err.value)
    assert message.startswith(str(tmp_path / "cache"))  # the entry that was not written
    assert message.endswith(".npy: no space left on device; features cached so far are "
                            f"whole and the checkpoints and model in {tmp_path / 'run'} are "
                            "untouched (nothing half-written is left). Free some space and "
                            "run the same command again to resume")
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert (tmp_path / "run" / "train.lock").read_text() == ""  # released

    cfg = Config(model=ModelConfig(conv_filters=8, lstm_layers=1, lstm_units=4),
                 train=TrainConfig(workdir=str(tmp_path / "saved")))
    model = build_model(cfg.model, 39, Alphabet())
    job = types.SimpleNamespace(cfg=cfg, model=model, data=types.SimpleNamespace(
        alphabet=Alphabet()), best_dir=tmp_path / "saved" / "best")
    rates = types.SimpleNamespace(wer=0.5, cer=0.25)
    save_best(job, types.SimpleNamespace(epoch=0), rates, [])
    full_disk(monkeypatch)  # the files written after the weights
    with pytest.raises(TrainError) as err:
        save_best(job, types.SimpleNamespace(epoch=1), rates, [])
    assert str(job.best_dir) in str(err.value) and "previous best model" in str(err.value)
    assert load_model(job.best_dir)[3]["epoch"] == 0
    assert sorted(p.name for p in job.best_dir.parent.iterdir()) == ["best"]


def test_each_best_epochs_dev_errors_replace_the_previous_in_the_run(tmp_path, monkeypatch,
                                                                      caplog):
    """log_dev_errors (what save_best calls): the worst utterances' audio (16 kHz WAV, named
    by rank), their table and the word errors in <workdir>/best_errors and in the run under
    errors/; the next best epoch's replace them in both; an unreadable file is listed."""
    import csv
    import errno
    import logging
    import types

    import mlflow
    import soundfile as sf
    from conftest import bad_files, tone, write

    from speechrnn import train as train_module
    from speechrnn.evaluate import score_utterances
    from speechrnn.manifest import Utterance
    from speechrnn.tracking import Tracker
    from speechrnn.train import log_dev_errors

    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    audio = {"a": write(tmp_path / "a.flac", tone(0.5, 8000), 8000),
             "b": write(tmp_path / "b.wav", tone(0.7, 22050), 22050),
             "c": bad_files(tmp_path)["corrupt"]}
    refs = {"a": "one two", "b": "three", "c": "four five"}
    rows = [Utterance(str(audio[k]), refs[k], 1.0, speaker="s" + k, id=k) for k in refs]
    tracker = Tracker("speechrnn-errors", uri)
    run_id = tracker.start()
    job = types.SimpleNamespace(best_dir=tmp_path / "run" / "best", tracker=tracker,
                                data=types.SimpleNamespace(dev=types.SimpleNamespace(rows=rows)))
    client = mlflow.MlflowClient(uri)

    def logged(folder=""):
        return sorted(a.path for a in client.list_artifacts(run_id, folder))

    try:
        log_dev_errors(job, score_utterances(list(refs), list(refs.values()),
                                             ["one", "tree", "four"]))
        assert logged("errors") == ["errors/word_errors.md", "errors/word_errors.tsv",
                                    "errors/worst", "errors/worst.tsv"]
        # c (rank 3) cannot be read: in the table, without audio
        assert logged("errors/worst") == ["errors/worst/01_b.wav", "errors/worst/02_a.wav"]
        assert "\t03_c.wav" not in (job.best_dir.with_name("best_errors") / "worst.tsv"
                                     ).read_text()
        assert "corrupt.wav: not a readable audio file" in (
            job.best_dir.with_name("best_errors") / "worst.tsv").read_text()
        # the next best epoch: only b is wrong now
        log_dev_errors(job, score_utterances(list(refs), list(refs.values()),
                                             ["one two", "tree", "four five"]))
        assert logged("errors/worst") == ["errors/worst/01_b.wav"]
        local = Path(mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path="errors", dst_path=str(tmp_path / "down"),
            tracking_uri=uri))
    finally:
        tracker.end()
    info = sf.info(local / "worst" / "01_b.wav")
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    assert info.duration == pytest.approx(0.7, abs=0.02)
    with (local / "worst.tsv").open(newline="") as f:
        assert list(csv.reader(f, delimiter="\t")) == [
            ["rank", "id", "speaker", "wer", "cer", "reference", "hypothesis", "audio",
             "problem"],
            ["1", "b", "sb", "1.0000", "0.2000", "three", "tree", "worst/01_b.wav", ""]]
    assert (local / "word_errors.tsv").read_text() == \
        "kind\treference\thypothesis\tcount\nsubstitution\tthree\ttree\t1\n"
    kept = tmp_path / "run" / "best_errors"  # the work directory's copy: the same
    assert sorted(p.name for p in (kept / "worst").iterdir()) == ["01_b.wav"]
    assert (kept / "worst.tsv").read_bytes() == (local / "worst.tsv").read_bytes()

    # a full disk: a warning, the previous analysis intact, nothing logged; training goes on
    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device", str(kept))

    monkeypatch.setattr(train_module, "write_error_analysis", full)
    job.tracker = types.SimpleNamespace()  # would fail if called
    with caplog.at_level(logging.WARNING, logger="speechrnn.train"):
        log_dev_errors(job, score_utterances(["a"], ["one two"], ["two"]))
    assert "dev error analysis not written" in caplog.text and "No space" in caplog.text
    assert sorted(p.name for p in (kept / "worst").iterdir()) == ["01_b.wav"]


@pytest.mark.slow
def test_a_flaky_tracking_store_does_not_stop_training(corpus, tmp_path, monkeypatch, caplog):
    """The store is locked when the run starts and again when epochs are logged: training
    finishes, every epoch's metrics are logged once, and one warning says so."""
    import logging

    import mlflow
    from conftest import flaky

    from speechrnn.tracking import Tracker, experiment_name
    from speechrnn.train import train

    monkeypatch.setattr(Tracker, "backoff", (0.01, 0.01))
    monkeypatch.setattr(Tracker, "retry_every", 0.0)
    cfg = load_pipeline_config(write_config(tmp_path, corpus, train={"epochs": 3}))
    tracker = Tracker(experiment_name(cfg), cfg.tracking.uri)
    flaky(monkeypatch, mlflow, "start_run", 3)  # every try of the start fails: kept
    flaky(monkeypatch, mlflow, "log_metrics", 4)
    with caplog.at_level(logging.WARNING, logger="speechrnn.tracking.runs"):
        result = train(cfg, tracker, progress=False)
    assert [h["epoch"] for h in result.history] == [0, 1, 2] and result.run_id
    assert len(caplog.records) == 1 and "database is locked" in caplog.text
    client, run = mlflow_run(tmp_path, result.run_id)
    assert run.info.status == "FINISHED" and run.data.params["model.lstm_units"] == "16"
    for metric in ("dev_wer", "train_loss"):
        assert [m.step for m in client.get_metric_history(result.run_id, metric)] == [0, 1, 2]
    assert len(client.get_metric_history(result.run_id, "best_dev_wer")) == 1
    state = json.loads((tmp_path / "run" / "checkpoints" / "last" / "state.json").read_text())
    assert state["run_id"] == result.run_id  # a later resume finds the run started late


@pytest.mark.slow
def test_a_damaged_checkpoint_resumes_from_the_one_before(corpus, tmp_path, capsys, caplog):
    import logging

    from speechrnn.train import TrainError, train

    config = write_config(tmp_path, corpus, tracking={"enabled": False})
    train(load_pipeline_config(config), progress=False)
    checkpoints = tmp_path / "run" / "checkpoints"
    weights = checkpoints / "last" / "weights.npz"
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated
    with caplog.at_level(logging.WARNING, logger="speechrnn.checkpoint"):
        result = train(load_pipeline_config(config, ["train.epochs=3"]), progress=False)
    assert "last/weights.npz is unusable" in caplog.text
    assert f"resuming from {checkpoints / 'prev'}: epoch 3" in capsys.readouterr().out
    assert [h["epoch"] for h in result.history] == [0, 1, 2]
    for name in ("last", "prev"):
        (checkpoints / name / "state.json").write_text("{")
    with pytest.raises(TrainError, match=r"no usable checkpoint.*--fresh"):
        train(load_pipeline_config(config, ["train.epochs=4"]), progress=False)
    assert train(load_pipeline_config(config), fresh=True, progress=False).best_epoch >= 0


@pytest.mark.parametrize("source", ["memory", "shards"])
def test_training_data_carries_each_corpus_weight_and_prints_the_mix(corpus, tmp_path, source,
                                                                     capsys):
    """data.train_weight and a further corpus's weight reach every training item, in memory
    and streamed; the mix is printed once; steps per epoch count the weighted epoch."""
    from speechrnn.dataset import count_batches, make_dataset
    from speechrnn.shards import config_shards
    from speechrnn.train import load_data

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


def test_a_second_stage_starts_from_the_first_stages_weights(corpus, tmp_path):
    """train.init_from naming a recipe: the pipeline trains that recipe first, then starts
    this one from its model (weights and moving average; dropout may differ). At a
    vanishing learning rate the second stage's model is the first one's. Once begun, the
    second stage no longer needs the first."""
    import shutil

    from speechrnn import pipeline
    from speechrnn.checkpoint import finished
    from speechrnn.errors import NotFoundError
    from speechrnn.model import load_model
    from speechrnn.train import init_model_dir

    for stage in ("a", "b"):
        (tmp_path / stage).mkdir()
    first = write_config(tmp_path / "a", corpus, train={"epochs": 1},
                         tracking={"enabled": False})
    second = write_config(tmp_path / "b", corpus, model={"dropout": 0.2}, train={
        "epochs": 1, "learning_rate": 1e-12, "ema_decay": 0.9, "init_from": str(first)})
    cfg = load_pipeline_config(second)
    with pytest.raises(NotFoundError, match="is not trained yet; train it first"):
        init_model_dir(cfg)
    result = pipeline.train(cfg, progress=False)
    assert finished(tmp_path / "a" / "run")
    assert init_model_dir(cfg) == tmp_path / "a" / "run" / "model"
    before = np.load(tmp_path / "a" / "run" / "checkpoints" / "last" / "weights.npz")
    after = np.load(tmp_path / "b" / "run" / "checkpoints" / "last" / "weights.npz")
    assert len(before.files) == len(after.files)
    for key in before.files:
        np.testing.assert_allclose(after[key], before[key], atol=1e-6)
    exported = load_model(result.model_dir)[0].get_weights()  # the moving average
    for mine, theirs in zip(exported, load_model(init_model_dir(cfg))[0].get_weights(),
                            strict=True):
        np.testing.assert_allclose(mine, theirs, atol=1e-6)
    client, run = mlflow_run(tmp_path / "b", result.run_id)
    assert run.data.params["train.init_from"] == str(first)
    assert run.data.params["runtime.init_model"] == str(init_model_dir(cfg).resolve())

    shutil.rmtree(tmp_path / "a" / "run")  # begun (here: finished), it stands alone
    first.rename(tmp_path / "a" / "moved.yaml")
    again = pipeline.train(cfg, progress=False)
    assert again.run_id == result.run_id and not (tmp_path / "a" / "run").exists()


def test_a_first_stage_that_cannot_serve_is_refused_before_training(corpus, tmp_path,
                                                                    trained):
    """Another network, a recipe that starts from itself, a model that is not there: clear
    errors, and nothing trains."""
    from speechrnn import pipeline
    from speechrnn.config import ConfigError
    from speechrnn.errors import NotFoundError

    config = write_config(tmp_path, corpus, tracking={"enabled": False})
    wider = load_pipeline_config(config, ["model.lstm_units=24",
                                          f"train.init_from={trained.model_dir}"])
    with pytest.raises(ConfigError, match=r"model.lstm_units 24 vs 16"):
        pipeline.train(wider, progress=False)
    with pytest.raises(ConfigError, match=r"model.lstm_units 24 vs 16"):  # a recipe's too
        pipeline.train(load_pipeline_config(config, ["model.lstm_units=24",
                                                     f"train.init_from={trained.config}"]))
    with pytest.raises(ConfigError, match="cannot start from itself"):
        pipeline.train(load_pipeline_config(config, [f"train.init_from={config}"]))
    with pytest.raises(NotFoundError, match=r"train.init_from .*nowhere.*model not found"):
        pipeline.train(load_pipeline_config(config, [f"train.init_from={tmp_path}/nowhere"]))
    with pytest.raises(ConfigError, match=r"train.init_from: .*gone.yaml: config file"):
        pipeline.train(load_pipeline_config(config, [f"train.init_from={tmp_path}/gone.yaml"]))
    assert not (tmp_path / "run" / "checkpoints").exists()
    # a finished first stage whose YAML has changed since is not silently reused
    from speechrnn.train import check_first_stage

    cfg = load_pipeline_config(config, [f"train.init_from={trained.config}"])
    assert check_first_stage(cfg, load_pipeline_config(trained.config))
    with pytest.raises(ConfigError, match="trained with other settings.*--fresh"):
        check_first_stage(cfg, load_pipeline_config(trained.config, ["train.seed=1"]))


@needs_flashlight
def test_a_phone_model_trains_saves_its_lexicon_and_transcribes_words(synth_corpus, tmp_path,
                                                                      capsys):
    """The recipe's lexicon is built from its transcripts, a word it cannot spell skips
    its utterance by name, dev PER is a metric, and the model directory carries the
    lexicon: evaluation reports PER and transcription gives words."""
    from speechrnn import pipeline
    from speechrnn.lexicon import recipe_lexicon

    data = synth_corpus
    cfg_file = tmp_path / "phones.yaml"
    cfg_file.write_text(json.dumps({
        "model": {"conv_filters": 16, "lstm_layers": 1, "lstm_units": 16, "dropout": 0.0,
                  "units": "phones"},
        "batch": {"batch_size": 4, "buckets": 1},
        "train": {"epochs": 2, "learning_rate": 0.003, "workdir": str(tmp_path / "run")},
        "data": {**TINY_DATA, "out": str(data), "cache": str(tmp_path / "cache")},
        "tracking": {"enabled": False}}))
    cfg = load_pipeline_config(cfg_file)
    lexicon = recipe_lexicon(cfg, progress=False)
    words = {w for p in ("train", "dev") for r in read_manifest(data / f"{p}.jsonl")
             for w in r.text.split()}
    assert words <= set(lexicon.pronunciations)
    # a lexicon that lacks a training word: that utterance is skipped, the word named
    first = read_manifest(data / "train.jsonl")[0]
    dropped = first.text.split()[0]
    Lexicon({w: p for w, p in lexicon.pronunciations.items() if w != dropped}).save(
        tmp_path / "lexicon.txt")
    cfg = load_pipeline_config(cfg_file, [f"model.lexicon={tmp_path / 'lexicon.txt'}"])
    result = pipeline.train(cfg, progress=False)
    printed = capsys.readouterr().out
    assert f"skipped {first.audio}: no pronunciation in the lexicon for {dropped!r}" in printed
    assert "PER" in printed  # each epoch's dev phone error rate
    model_dir = result.model_dir
    assert (model_dir / "lexicon.txt").is_file()
    assert json.loads((model_dir / "alphabet.json").read_text())["units"] == "phones"
    report = pipeline.evaluate(model_dir, data / "test.jsonl", progress=False)
    assert report.rates.per is not None and 0 <= report.rates.per
    assert "per" in report.summary()
    (transcript,) = pipeline.transcribe(model_dir, [read_manifest(data / "test.jsonl")[0].audio],
                                        progress=False)
    assert all(w.word in lexicon.pronunciations for w in transcript.words)


@needs_flashlight
@pytest.mark.parametrize("source", ["memory", "shards"])
def test_an_auxiliary_phone_head_trains_under_a_character_head(synth_corpus, tmp_path, source):
    """model.aux_ctc: the training batches carry the transcripts in phones too (in memory
    and streamed from shards), the loss mixes both heads, and the model it saves is a
    character model whose transcription is unchanged by the auxiliary head."""
    from speechrnn import pipeline
    from speechrnn.dataset import make_dataset
    from speechrnn.lexicon import recipe_lexicon
    from speechrnn.train import load_data

    cfg = load_pipeline_config(None, [
        "model.conv_filters=16", "model.lstm_layers=2", "model.lstm_units=16",
        "model.dropout=0.0", "model.aux_ctc.units=phones", "model.aux_ctc.layer=1",
        "batch.batch_size=4", "batch.buckets=1", "train.epochs=1",
        f"train.workdir={tmp_path / 'run'}", f"batch.source={source}",
        f"data.cache={tmp_path / 'cache'}", "tracking.enabled=false",
        *(f"data.{k}={v}" for k, v in {**TINY_DATA, "out": synth_corpus}.items())])
    data = load_data(cfg, progress=False)
    batch = next(iter(make_dataset(data.train, cfg.batch, training=True)))
    assert {"aux_labels", "aux_label_lengths"} <= set(batch)
    phones = PhoneAlphabet(recipe_lexicon(cfg, progress=False))
    for i, labels, n in zip(batch["index"].numpy(), batch["aux_labels"].numpy(),
                            batch["aux_label_lengths"].numpy()):
        assert labels[:n].tolist() == phones.encode(data.train.rows[i].text)
    dev = next(iter(make_dataset(data.dev, cfg.batch)))
    assert "aux_labels" not in dev  # dev scores the main head
    result = pipeline.train(cfg, progress=False)
    assert json.loads((result.model_dir / "alphabet.json").read_text())["characters"]
    report = pipeline.evaluate(result.model_dir, synth_corpus / "test.jsonl", progress=False)
    assert report.rates.per is None and 0 <= report.rates.wer

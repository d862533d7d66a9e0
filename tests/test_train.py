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
from conftest import TINY_DATA, mlflow_run, write_config

from speechrnn.config import load_pipeline_config
from speechrnn.fastbeam import available as fastbeam_available
from speechrnn.lexicon import Lexicon, PhoneAlphabet
from speechrnn.manifest import read_manifest, write_manifest

needs_flashlight = pytest.mark.skipif(not fastbeam_available(),
                                      reason="flashlight-text is not installed")

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


def test_dev_wer_with_beam_search_and_the_training_transcripts_lm():
    """Frames that spell "tw o" greedily: beam search with a word LM of the training
    transcripts reads "two"; the greedy rates come along for the record."""
    import tensorflow as tf

    from speechrnn.config import Config, EvalConfig, TrainConfig
    from speechrnn.dataset import Examples
    from speechrnn.decoding import Decoding, DecodingOptions
    from speechrnn.lm_build import lm_from_texts
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
    beam = Decoding(DecodingOptions.from_eval(cfg.eval), lm_from_texts(train_texts, 1))
    _, rates, table, greedy, _ = evaluate_examples(Fake, examples, cfg, alphabet, beam)
    assert rates.wer == 0.0 and table[0].hypothesis == "two" and greedy.wer == 2.0


def test_a_full_disk_is_a_clear_error_and_leaves_nothing_half_written(corpus, tmp_path,
                                                                      monkeypatch):
    """No space left while caching features or saving the best model: a TrainError that
    names the file and says what is intact; no temporary file or folder left behind."""
    import types

    from conftest import full_disk

    from speechrnn.config import Config, ModelConfig, TrainConfig
    from speechrnn.model import build_model, load_network
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
    assert load_network(job.best_dir)[3]["epoch"] == 0
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
    from speechrnn.training_data import load_data

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

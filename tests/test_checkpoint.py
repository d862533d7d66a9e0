"""Checkpoints that survive faults: two generations, damaged files, a full disk, and the
lock that keeps a second training out of a work directory."""

import errno
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT

from speechrnn.checkpoint import Checkpointer, TrainError, TrainLock, TrainState


@pytest.fixture(scope="module")
def tiny():
    """A small model and its optimizer's variables (what a checkpoint holds)."""
    from speechrnn.config import Config, ModelConfig
    from speechrnn.model import build_model
    from speechrnn.steps import make_optimizer
    from speechrnn.text import Alphabet

    cfg = Config(model=ModelConfig(conv_filters=8, lstm_layers=1, lstm_units=4))
    model = build_model(cfg.model, 39, Alphabet())
    optimizer = make_optimizer(cfg, 10)
    optimizer.build(model.trainable_variables)
    return model, list(optimizer.variables)


def save_generations(tiny, folder: Path, epochs=(1, 2)) -> list[list[np.ndarray]]:
    """Checkpoints after each of ``epochs``, the weights changed between them; returns the
    weights of each."""
    model, variables = tiny
    saved = []
    for epoch in epochs:
        model.set_weights([np.full(w.shape, epoch, w.dtype) for w in model.get_weights()])
        Checkpointer(folder).save(model, variables, TrainState(epoch=epoch, config_digest="d"))
        saved.append(model.get_weights())
    return saved


def scramble(model):
    model.set_weights([np.zeros_like(w) for w in model.get_weights()])


def same(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_two_generations_are_kept_and_nothing_temporary(tiny, tmp_path):
    save_generations(tiny, tmp_path, epochs=(1, 2, 3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last", "prev"]
    model, variables = tiny
    checkpoints = Checkpointer(tmp_path)
    assert checkpoints.restore(model, variables, "d").epoch == 3
    assert checkpoints.restored_from == tmp_path / "last"


@pytest.mark.parametrize("damage", ["truncated", "flipped", "bad json", "shape", "missing"])
def test_a_damaged_last_checkpoint_falls_back_to_the_previous(tiny, tmp_path, caplog,
                                                              damage):
    first, _ = save_generations(tiny, tmp_path)
    last = tmp_path / "last"
    weights = last / "weights.npz"
    if damage == "truncated":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "flipped":  # a bit flip inside an array: the zip CRC catches it
        data = bytearray(weights.read_bytes())
        data[len(data) // 2] ^= 0xFF
        weights.write_bytes(bytes(data))
    elif damage == "bad json":
        (last / "state.json").write_text('{"epoch": 2, "step"')
    elif damage == "shape":
        arrays = [np.zeros((3, 3), np.float32)] * len(tiny[0].weights)
        np.savez(weights, *arrays)
    else:
        (last / "optimizer.npz").unlink()
    model, variables = tiny
    scramble(model)
    checkpoints = Checkpointer(tmp_path)
    with caplog.at_level(logging.WARNING, logger="speechrnn.checkpoint"):
        state = checkpoints.restore(model, variables, "d")
    assert state.epoch == 1 and checkpoints.restored_from == tmp_path / "prev"
    assert same(model.get_weights(), first)  # all of the previous one, none of the damaged
    [record] = caplog.records
    damaged = "state.json" if damage == "bad json" else \
        "optimizer.npz" if damage == "missing" else "weights.npz"
    assert damaged in record.getMessage() and "unusable" in record.getMessage()
    # the next save keeps the good checkpoint as the previous one, not the damaged one
    checkpoints.save(model, variables, TrainState(epoch=5, config_digest="d"))
    assert Checkpointer(tmp_path).restore(model, variables, "d").epoch == 5
    assert TrainState(**__import__("json").loads((tmp_path / "prev" / "state.json")
                                                 .read_text())).epoch == 1


def test_no_usable_checkpoint_is_a_clear_error(tiny, tmp_path, caplog):
    save_generations(tiny, tmp_path)
    for name in ("last", "prev"):
        path = tmp_path / name / "weights.npz"
        path.write_bytes(path.read_bytes()[:100])
    model, variables = tiny
    before = model.get_weights()
    with pytest.raises(TrainError, match="no usable checkpoint") as err:
        Checkpointer(tmp_path).restore(model, variables, "d")
    message = str(err.value)
    assert "last/weights.npz" in message and "prev/weights.npz" in message
    assert "--fresh" in message
    assert same(model.get_weights(), before)  # nothing assigned


def test_another_configurations_checkpoint_is_refused_not_skipped(tiny, tmp_path):
    save_generations(tiny, tmp_path)
    with pytest.raises(TrainError, match="different configuration"):
        Checkpointer(tmp_path).restore(*tiny, "another digest")


def test_a_full_disk_while_checkpointing_leaves_the_previous_one(tiny, tmp_path,
                                                                 monkeypatch):
    import speechrnn.checkpoint as checkpoint

    first, _ = save_generations(tiny, tmp_path)
    real = np.savez

    def full(file, *arrays):  # writes part of the file, then the disk is full
        Path(file).write_bytes(b"PK\x03\x04" + b"\0" * 100)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.np, "savez", full)
    model, variables = tiny
    with pytest.raises(TrainError) as err:
        Checkpointer(tmp_path).save(model, variables, TrainState(epoch=3, config_digest="d"))
    message = str(err.value)
    assert str(tmp_path / "last") in message and "no space left on device" in message
    assert "previous checkpoint" in message and "intact" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last", "prev"]  # no temporary
    monkeypatch.setattr(checkpoint.np, "savez", real)
    scramble(model)
    assert Checkpointer(tmp_path).restore(model, variables, "d").epoch == 2


HOLD = """
import sys, time
from speechrnn.checkpoint import TrainLock
TrainLock(sys.argv[1]).acquire()
print("holding", flush=True)
time.sleep(120)
"""


def test_a_second_training_is_refused_and_a_dead_holders_lock_is_taken(tmp_path, caplog):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path), "--epochs", "3"],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        start = time.monotonic()
        with pytest.raises(TrainError) as err:
            TrainLock(tmp_path).acquire()
        assert time.monotonic() - start < 1.0  # at once, no waiting
        message = str(err.value)
        assert f"pid {holder.pid}" in message and "--epochs 3" in message
        assert os.uname().nodename in message and "in use by another training" in message
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # the kernel released the dead process's lock: the file is there, but it does not block
    assert (tmp_path / "train.lock").read_text()
    with caplog.at_level(logging.WARNING, logger="speechrnn.checkpoint"):
        lock = TrainLock(tmp_path).acquire()
    assert f"pid {holder.pid}" in caplog.text and "ended without releasing" in caplog.text
    assert f'"pid": {os.getpid()}' in (tmp_path / "train.lock").read_text()
    with pytest.raises(TrainError):  # held by this process now: another attempt is refused
        TrainLock(tmp_path).acquire()
    lock.release()
    assert (tmp_path / "train.lock").read_text() == ""  # released cleanly: not stale
    with TrainLock(tmp_path):
        pass


def test_training_takes_the_lock_before_touching_the_work_directory(tmp_path):
    """`speechrnn train` on a work directory another training holds: refused at once, and
    --fresh does not clear the holder's checkpoints."""
    from speechrnn.config import Config, TrainConfig
    from speechrnn.train import train

    workdir = tmp_path / "run"
    (workdir / "checkpoints" / "last").mkdir(parents=True)
    cfg = Config(train=TrainConfig(workdir=str(workdir)))
    with TrainLock(workdir), pytest.raises(TrainError, match=f"pid {os.getpid()}"):
        train(cfg, fresh=True, progress=False)
    assert (workdir / "checkpoints" / "last").is_dir()


def test_every_training_setting_counts_in_the_digest(tmp_path):
    """Further corpora, their weights, SortaGrad and a starting model each change the
    digest (a run resumed under other settings is refused); the same settings give the
    same digest."""
    from dataclasses import replace

    from speechrnn import checkpoint
    from speechrnn.config import Config, CorpusConfig, DataConfig

    for split in ("train", "dev"):
        (tmp_path / f"{split}.jsonl").write_text('{"audio": "a.wav", "text": "ab", '
                                                 '"duration": 1.0}\n')
    (tmp_path / "corpora" / "x").mkdir(parents=True)
    (tmp_path / "corpora" / "x" / "train.jsonl").write_text("")
    cfg = Config(data=DataConfig(out=str(tmp_path)))
    digest = checkpoint.config_digest(cfg)
    weighted = checkpoint.config_digest(replace(cfg, data=replace(cfg.data, train_weight=2.0)))
    more = checkpoint.config_digest(replace(cfg, data=replace(
        cfg.data, corpora=(CorpusConfig("generic", "x"),))))
    heavier = checkpoint.config_digest(replace(cfg, data=replace(
        cfg.data, corpora=(CorpusConfig("generic", "x", weight=3.0),))))
    sortagrad = checkpoint.config_digest(replace(cfg, batch=replace(cfg.batch, sortagrad=True)))
    started = checkpoint.config_digest(replace(cfg, train=replace(cfg.train, init_from="m")))
    assert len({digest, weighted, more, heavier, sortagrad, started}) == 6
    assert checkpoint.config_digest(cfg) == digest  # the same settings, the same digest


def test_finished_reads_the_newest_readable_state(tmp_path):
    """A finished run whose last checkpoint is damaged still counts as finished (restore
    would fall back to the one before); no model, or no state, is not finished."""
    import json

    from speechrnn.checkpoint import TrainState, finished, latest_state

    assert latest_state(tmp_path) is None and not finished(tmp_path)
    (tmp_path / "checkpoints" / "last").mkdir(parents=True)
    (tmp_path / "checkpoints" / "last" / "state.json").write_text("{not json")
    (tmp_path / "checkpoints" / "prev").mkdir()
    (tmp_path / "checkpoints" / "prev" / "state.json").write_text(
        json.dumps({**TrainState(epoch=3, finished=True).__dict__}))
    assert latest_state(tmp_path).epoch == 3
    assert not finished(tmp_path)  # no exported model
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.json").write_text("{}")
    assert finished(tmp_path)

"""Checkpoints and interruption: what lets a training run stop anywhere and resume exactly.

- :class:`TrainState`: where training is (epoch, batch, partial sums), the best epoch so
  far, the history of epoch metrics and the MLflow run id;
- :class:`Checkpointer`: ``<workdir>/checkpoints/last`` holds the weights, the optimizer
  (and weight-average) variables and the state, replaced atomically; weights are kept by
  position, so a run resumes whichever LSTM implementation (scan on CPU, cuDNN on GPU)
  or strategy it continues on; only the chief of a cluster writes;
- :class:`StopFlag`: SIGINT/SIGTERM become a flag checked between batches, so the batch in
  flight finishes and a checkpoint is written before the process exits;
- :func:`config_digest`: what must not change under a resumed run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import signal
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .config import Config, flatten
from .errors import SpeechRNNError

log = logging.getLogger(__name__)


class TrainError(SpeechRNNError, RuntimeError):
    """Training cannot go on; the message says why and what to do."""


class Interrupted(Exception):
    """SIGINT/SIGTERM: a checkpoint was written; rerunning resumes."""


@dataclass
class TrainState:
    epoch: int = 0  # next epoch to run
    step: int = 0  # batches of that epoch already trained (after an interrupt)
    partial: dict = field(default_factory=dict)  # sums of the unfinished epoch
    best_wer: float = math.inf
    best_loss: float = math.inf
    best_epoch: int = -1
    bad_epochs: int = 0
    elapsed: float = 0.0  # training seconds, all sessions together
    history: list[dict] = field(default_factory=list)
    run_id: str | None = None
    config_digest: str = ""
    stop_reason: str = ""
    finished: bool = False


class Checkpointer:
    """``<dir>/last``: weights, optimizer (and weight-average) variables and state,
    replaced atomically. ``writer=False`` (a worker that is not the chief): reads only."""

    def __init__(self, directory: Path, writer: bool = True):
        self.dir = Path(directory)
        self.writer = writer

    def save(self, model, variables, state: TrainState) -> None:
        if not self.writer:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f".tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        np.savez(tmp / "weights.npz", *[v.numpy() for v in model.weights])
        np.savez(tmp / "optimizer.npz", *[v.numpy() for v in variables])
        (tmp / "state.json").write_text(json.dumps(asdict(state), indent=1))
        last, old = self.dir / "last", self.dir / "old"
        shutil.rmtree(old, ignore_errors=True)
        if last.exists():
            last.rename(old)
        tmp.rename(last)
        shutil.rmtree(old, ignore_errors=True)

    def restore(self, model, variables, digest: str) -> TrainState | None:
        """The saved state, weights and optimizer, if any; refuses another config's run."""
        for name in ("last", "old"):  # "old" survives a crash between the two renames
            path = self.dir / name
            if (path / "state.json").exists():
                state = TrainState(**json.loads((path / "state.json").read_text()))
                if state.config_digest != digest:
                    raise TrainError(f"{self.dir.parent} holds a run of a different "
                                     "configuration; pass --fresh to start over, or set "
                                     "train.workdir to another folder")
                _assign(model.weights, path / "weights.npz", "weights")
                _assign(variables, path / "optimizer.npz", "optimizer state")
                return state
        return None

    def clear(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def _assign(variables, path: Path, what: str) -> None:
    """Load ``path`` (arrays saved in the order of ``variables``) into ``variables``."""
    with np.load(path) as saved:
        values = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    if len(values) != len(variables) or any(
            tuple(v.shape) != a.shape for v, a in zip(variables, values)):
        raise TrainError(f"{path}: {what} does not match the model")
    for var, value in zip(variables, values):
        var.assign(value)


class StopFlag:
    """Turns SIGINT/SIGTERM into a flag checked between batches."""

    def __init__(self):
        self.requested = False
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        if self.requested:  # a second signal: stop now
            raise KeyboardInterrupt
        self.requested = True
        log.warning("signal %s: finishing this batch, then checkpointing", signum)

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def config_digest(cfg: Config) -> str:
    """What must not change under a resumed run: the settings (tracking, evaluation, budget,
    thread, strategy and LSTM implementation settings may: weights are kept by position)
    and the train and dev manifests' contents."""
    keep = {k: v for k, v in flatten(cfg).items()
            if not k.startswith(("tracking.", "eval.", "train.time_budget", "train.epochs",
                                 "train.patience", "train.workdir", "train.intra",
                                 "train.inter", "train.distribute", "batch.workers",
                                 "data.cache", "model.lstm_impl"))}
    h = hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode())
    for path in (*cfg.data.training_manifests(), cfg.data.manifest("dev")):
        h.update(path.read_bytes())
    return h.hexdigest()[:16]

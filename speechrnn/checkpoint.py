"""Checkpoints and interruption: what lets a training run stop anywhere and resume exactly.

- :class:`TrainState`: where training is (epoch, batch, partial sums), the best epoch so
  far, the history of epoch metrics and the MLflow run id;
- :class:`Checkpointer`: ``<workdir>/checkpoints/last`` holds the weights, the optimizer
  (and weight-average) variables and the state, replaced atomically, and ``prev`` the
  checkpoint before it: a damaged ``last`` (truncated, bad JSON, arrays that do not fit) is
  reported and the run resumes from ``prev``. Weights are kept by position, so a run
  resumes whichever LSTM implementation (scan on CPU, cuDNN on GPU) or strategy it
  continues on; only the chief of a cluster writes;
- :class:`TrainLock`: one training at a time in a work directory (``train.lock``, an
  ``flock`` the kernel releases when the process dies, whatever kills it);
- :func:`disk_full`: a full disk while writing becomes a :class:`TrainError` that names
  the file and says what is intact;
- :class:`StopFlag`: SIGINT/SIGTERM become a flag checked between batches, so the batch in
  flight finishes and a checkpoint is written before the process exits;
- :func:`config_digest`: what must not change under a resumed run.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import math
import os
import shlex
import shutil
import signal
import socket
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .config import Config, flatten
from .errors import SpeechRNNError
from .files import replace_dir

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
    replaced atomically; ``<dir>/prev``: the one before. ``writer=False`` (a worker that is
    not the chief): reads only."""

    GENERATIONS = ("last", "prev")  # the newest first

    def __init__(self, directory: Path, writer: bool = True):
        self.dir = Path(directory)
        self.writer = writer
        self.restored_from: Path | None = None
        self._damaged: set[str] = set()

    def save(self, model, variables, state: TrainState) -> None:
        if not self.writer:
            return
        last = self.dir / "last"
        if "last" in self._damaged:  # keep the good "prev" rather than a damaged "last"
            shutil.rmtree(last, ignore_errors=True)
            self._damaged.discard("last")
        with disk_full(last, f"the previous checkpoint in {self.dir} is intact"), \
                replace_dir(last, previous=self.dir / "prev") as tmp:
            np.savez(tmp / "weights.npz", *[v.numpy() for v in model.weights])
            np.savez(tmp / "optimizer.npz", *[v.numpy() for v in variables])
            (tmp / "state.json").write_text(json.dumps(asdict(state), indent=1))

    def restore(self, model, variables, digest: str) -> TrainState | None:
        """The newest usable checkpoint's state, with its weights and optimizer assigned;
        None when there is none. A damaged one is reported (a warning) and the one before
        it is tried; another configuration's run is refused."""
        damaged = []
        for name in self.GENERATIONS:
            path = self.dir / name
            if not path.exists():
                continue
            try:
                state = _read_state(path)
                if state.config_digest != digest:
                    raise TrainError(f"{self.dir.parent} holds a run of a different "
                                     "configuration; pass --fresh to start over, or set "
                                     "train.workdir to another folder")
                values = [_read_arrays(path / "weights.npz", model.weights, "weights"),
                          _read_arrays(path / "optimizer.npz", variables, "optimizer state")]
            except _Damaged as err:
                log.warning("checkpoint %s is unusable (%s); trying the one before it",
                            err.path, err.reason)
                damaged.append(f"{err.path} ({err.reason})")
                self._damaged.add(name)
                continue
            for group, arrays in zip((model.weights, variables), values):
                for var, value in zip(group, arrays):
                    var.assign(value)
            self.restored_from = path
            return state
        if damaged:
            raise TrainError("no usable checkpoint in " + str(self.dir) + ": "
                             + "; ".join(damaged) + ". Pass --fresh to start over")
        return None

    def clear(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def latest_state(workdir: str | Path) -> TrainState | None:
    """The state of the newest readable checkpoint in ``workdir`` (as :meth:`Checkpointer.
    restore` would take it; weights unread), None when there is none."""
    for name in Checkpointer.GENERATIONS:
        try:
            return _read_state(Path(workdir) / "checkpoints" / name)
        except _Damaged:
            continue
    return None


def finished(workdir: str | Path) -> bool:
    """Whether the training run in ``workdir`` has finished and exported its model."""
    state = latest_state(workdir)
    return bool(state and state.finished and (Path(workdir) / "model" / "model.json").exists())


class _Damaged(Exception):
    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


def _read_state(folder: Path) -> TrainState:
    path = folder / "state.json"
    try:
        return TrainState(**json.loads(path.read_text()))
    except FileNotFoundError:
        raise _Damaged(path, "missing") from None
    except (OSError, ValueError, TypeError) as err:  # TypeError: not the fields we write
        raise _Damaged(path, f"not a training state: {type(err).__name__}: {err}") from None


def _read_arrays(path: Path, variables, what: str) -> list[np.ndarray]:
    """Every array of ``path`` (saved in the order of ``variables``), checked against
    their shapes; nothing is assigned."""
    try:
        with np.load(path, allow_pickle=False) as saved:
            values = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    except FileNotFoundError:
        raise _Damaged(path, "missing") from None
    except Exception as err:  # a damaged zip: BadZipFile, CRC, EOF, zlib, ValueError...
        raise _Damaged(path, f"cannot be read: {type(err).__name__}: {err}") from None
    if len(values) != len(variables):
        raise _Damaged(path, f"{len(values)} arrays for the model's {len(variables)} {what} "
                       "variables")
    for var, value in zip(variables, values):
        if tuple(var.shape) != value.shape:
            raise _Damaged(path, f"{what}: an array of shape {value.shape} for the variable "
                           f"{var.name} of shape {tuple(var.shape)}")
    return values


@contextlib.contextmanager
def disk_full(path: str | Path, intact: str):
    """A full disk (``ENOSPC``) in the block becomes a :class:`TrainError` that names the
    file (the one the error names, else ``path``) and says what is ``intact``."""
    try:
        yield
    except OSError as err:
        if err.errno != errno.ENOSPC:
            raise
        raise TrainError(f"{err.filename or path}: no space left on device; {intact} "
                         "(nothing half-written is left). Free some space and run the same "
                         "command again to resume") from err


class TrainLock:
    """``<workdir>/train.lock``: held (``flock``) by the one training in that folder.

    A second training is refused at once with the holder's pid, host, start time and
    command line. The kernel releases the lock when its process ends, killed or not: a
    lock file left by a dead process does not block (it is reported and taken over)."""

    def __init__(self, workdir: str | Path):
        self.path = Path(workdir) / "train.lock"
        self._fd: int | None = None

    def acquire(self) -> TrainLock:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe_holder(_read_holder(fd))
            os.close(fd)
            raise TrainError(f"{self.path.parent} is in use by another training ({holder}); "
                             "wait for it to end or stop it, or set train.workdir to "
                             "another folder") from None
        except OSError as err:  # a file system without locks (some network ones)
            os.close(fd)
            log.warning("cannot lock %s (%s): not guarding against a second training",
                        self.path, err.strerror)
            return self
        stale = _read_holder(fd)
        if stale:
            log.warning("taking over %s from a training that ended without releasing it "
                        "(%s)", self.path, _describe_holder(stale))
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
                "command": shlex.join(getattr(sys, "orig_argv", sys.argv)).replace("\n", " ")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)  # an empty lock file: released, not stale
        finally:
            os.close(self._fd)  # and the flock with it
            self._fd = None

    def __enter__(self) -> TrainLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(fd: int) -> dict:
    try:
        data = os.pread(fd, 4096, 0)
        info = json.loads(data) if data.strip() else {}
    except (OSError, ValueError):
        info = None
    return info if isinstance(info, dict) else {"pid": "?"}


def _describe_holder(info: dict) -> str:
    if not info:
        return "holder just starting"
    return (f"pid {info.get('pid', '?')} on {info.get('host', '?')}, started "
            f"{info.get('started', '?')}: {info.get('command', '?')}")


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

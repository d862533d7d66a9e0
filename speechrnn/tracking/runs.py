"""One MLflow run: start or resume it, log parameters, metrics, datasets, artifacts and the
model to it, end it; and :func:`log_to_run`, which adds an evaluation to a finished run."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow

from .base import RunTracker, tracking_uri
from .registry import log_pyfunc

log = logging.getLogger(__name__)
logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)  # "Creating tables..."


def _artifact_root(uri: str) -> str | None:
    """``artifacts/`` beside a SQLite database; None (MLflow's default) otherwise."""
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        db.parent.mkdir(parents=True, exist_ok=True)
        return (db.parent.resolve() / "artifacts").as_uri()
    return None


class Tracker(RunTracker):
    """One MLflow run: start or resume it, log to it, end it.

    A store that fails never stops the caller (a training): a call that fails for the
    store's sake (SQLite "database is locked", a server that is down: :func:`_transient`)
    is tried again after ``backoff`` seconds, then kept, in order with the calls after it,
    and tried again at the next call (at most every ``retry_every`` seconds while the store
    is down) and at :meth:`end`; one warning says so. A store that cannot be reached when
    the tracker is made is joined later the same way: the run starts then, and what was
    logged meanwhile follows it. A call the store refuses (an unknown run, a changed
    parameter) raises as before.
    """

    backoff = (0.5, 2.0)  # seconds before each further try of a failing call
    retry_every = 30.0  # seconds between tries while the store is down

    def __init__(self, experiment: str, uri: str | None = None):
        self.uri = tracking_uri(uri)
        self.experiment = experiment
        self.experiment_id = ""
        self.run_id: str | None = None
        self._kept: list[tuple[Callable, tuple]] = []  # calls not done yet, in order
        self._failed_at: float | None = None  # last failed try; None while the store works
        self._warned = False
        self._delete_warned = False  # delete_artifacts refused once: said once
        mlflow.set_tracking_uri(self.uri)
        self._do(self._open_experiment)

    # ------------------------------------------------------------------ failing stores

    def _do(self, call: Callable, *args, final: bool = False):
        """``call(*args)`` after the calls kept before it; kept itself when the store
        fails. Returns its result, or None when it is kept."""
        self._kept.append((call, args))
        down = self._failed_at is not None
        if down and not final and time.monotonic() - self._failed_at < self.retry_every:
            return None
        result = None
        while self._kept:
            call, args = self._kept[0]
            delays = list(self.backoff) if final or not down else []
            while True:
                try:
                    with _trying(quick=down or len(delays) < len(self.backoff)):
                        result = call(*args)
                    break
                except Exception as err:
                    if not _transient(err):
                        self._kept.pop(0)
                        raise
                    if not delays:
                        self._failing(err)
                        return None
                    time.sleep(delays.pop(0))
            self._kept.pop(0)
        if down:
            log.info("MLflow store %s answers again: the tracking calls kept meanwhile are "
                     "logged", self.uri)
            self._failed_at = None
        return result

    def _failing(self, err: Exception) -> None:
        self._failed_at = time.monotonic()
        if not self._warned:
            self._warned = True
            log.warning("MLflow store %s fails (%s); training goes on, and the tracking "
                        "calls are kept and logged when it answers again", self.uri,
                        _brief(err))

    def _open_experiment(self) -> None:
        root = _artifact_root(self.uri)
        found = mlflow.get_experiment_by_name(self.experiment)
        if found is None:
            try:
                self.experiment_id = mlflow.create_experiment(
                    self.experiment, artifact_location=root,
                    # the UI opens it as model training (runs, metrics, charts), not GenAI
                    tags={"mlflow.experimentKind": "custom_model_development"})
            except mlflow.exceptions.MlflowException:  # another process created it first
                found = mlflow.get_experiment_by_name(self.experiment)
                if found is None:
                    raise
        if found is not None:
            self.experiment_id = found.experiment_id

    # ------------------------------------------------------------------ the interface

    def start(self, run_id: str | None = None, run_name: str | None = None) -> str:
        """Start a new run, or resume ``run_id`` (after an interrupt or a crash); its id
        ("" for a new run while the store cannot be reached: it starts later)."""
        self._do(self._start, run_id, run_name)
        return self.run_id or run_id or ""

    def _start(self, run_id: str | None, run_name: str | None) -> None:
        if mlflow.active_run():
            try:
                mlflow.end_run()
            except mlflow.exceptions.MlflowException:
                pass  # left active by a store that failed or another store: now let go
        outer = os.environ.get("MLFLOW_RUN_ID")  # set by `mlflow run`: log into its run
        if outer and not run_id:
            try:
                mlflow.MlflowClient(self.uri).get_run(outer)
            except mlflow.exceptions.MlflowException:
                log.warning("MLFLOW_RUN_ID %s is not in %s; starting a run of our own",
                            outer, self.uri)
                del os.environ["MLFLOW_RUN_ID"]
        if run_id:
            run = mlflow.start_run(run_id=run_id)
        else:
            run = mlflow.start_run(experiment_id=self.experiment_id, run_name=run_name or None)
        self.run_id = run.info.run_id

    @property
    def run_url(self) -> str:
        return f"experiment {self.experiment_id}, run {self.run_id}"

    def log_params(self, params: dict[str, Any]) -> None:
        self._do(self._log_params, dict(params))

    @staticmethod
    def _log_params(params: dict[str, Any]) -> None:
        items = {k: ("" if v is None else json.dumps(v) if isinstance(v, (list, dict)) else v)
                 for k, v in params.items()}
        keys = sorted(items)
        for i in range(0, len(keys), 100):  # MLflow takes at most 100 per call
            mlflow.log_params({k: items[k] for k in keys[i:i + 100]})

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self._do(mlflow.log_metrics, {k: float(v) for k, v in metrics.items()}, step)

    def logged_steps(self, metric: str) -> set[int]:
        return self._do(self._logged_steps, metric) or set()

    def _logged_steps(self, metric: str) -> set[int]:
        client = mlflow.MlflowClient(self.uri)
        return {m.step for m in client.get_metric_history(self.run_id, metric)}

    def log_history(self, history: list[dict]) -> None:
        self._do(self._log_history, [dict(h) for h in history])

    def _log_history(self, history: list[dict]) -> None:
        logged: dict[str, set[int]] = {}
        for h in history:
            metrics = {k: float(v) for k, v in h.items() if k != "epoch"}
            if not metrics:
                continue
            first = next(iter(metrics))
            if first not in logged:
                logged[first] = self._logged_steps(first)
            if h["epoch"] not in logged[first]:
                mlflow.log_metrics(metrics, step=h["epoch"])

    def set_tags(self, tags: dict[str, Any]) -> None:
        self._do(mlflow.set_tags, {k: str(v) for k, v in tags.items()})

    def log_dataset(self, name: str, manifest: Path, rows: list, context: str) -> None:
        """The manifest as an MLflow dataset (digest of its rows), with hours and speakers."""
        self._do(self._log_dataset, name, manifest, list(rows), context)

    def _log_dataset(self, name: str, manifest: Path, rows: list, context: str) -> None:
        import pandas as pd

        frame = pd.DataFrame({"audio": [r.audio for r in rows], "text": [r.text for r in rows],
                              "duration": [r.duration for r in rows],
                              "speaker": [r.speaker for r in rows]})
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*dataset source.*multiple ways")
            dataset = mlflow.data.from_pandas(frame, source=str(manifest), name=name,
                                              targets="text")
        hours = float(frame["duration"].sum()) / 3600
        speakers = int(frame["speaker"].nunique())
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*dataset source.*multiple ways")
            mlflow.log_input(dataset, context=context,
                             tags={"hours": f"{hours:.3f}", "speakers": str(speakers)})
        self._log_params({f"dataset.{context}.utterances": len(rows),
                          f"dataset.{context}.hours": round(hours, 3),
                          f"dataset.{context}.speakers": speakers,
                          f"dataset.{context}.digest": dataset.digest})

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self._do(mlflow.log_artifacts, str(path), artifact_path)
        else:
            self._do(mlflow.log_artifact, str(path), artifact_path)

    def delete_artifacts(self, artifact_path: str) -> None:
        self._do(self._delete_artifacts, artifact_path)

    def _delete_artifacts(self, artifact_path: str) -> None:
        """MLflow's client cannot delete a run's artifacts; the run's artifact repository
        (local folder, ``mlflow-artifacts`` proxy, S3, GCS, Azure, ...) can."""
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        try:
            repository = get_artifact_repository(mlflow.get_artifact_uri(), self.uri)
            repository.delete_artifacts(artifact_path)
        except Exception as err:
            # a server that refuses deletion (HTTP 403, 405, ...) is not one that is down
            status = getattr(getattr(err, "response", None), "status_code", None)
            refused = isinstance(status, int) and 400 <= status < 500 and status not in (
                408, 429)
            if _transient(err) and not refused:
                raise
            if not self._delete_warned:
                self._delete_warned = True
                log.warning("MLflow artifact store of run %s cannot delete artifacts (%s): "
                            "what was logged under %s before stays beside what replaces it",
                            self.run_id, _brief(err), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        self._do(mlflow.log_text, text, artifact_file)

    def log_figure(self, figure, artifact_file: str) -> None:
        self._do(mlflow.log_figure, figure, artifact_file)

    def log_model(self, model_dir: Path, registered_name: str | None = None) -> dict:
        """Log the model directory as a pyfunc that transcribes audio; register it.
        Returns {} when the store fails (the call is kept)."""
        return self._do(self._log_model, model_dir, registered_name) or {}

    @staticmethod
    def _log_model(model_dir: Path, registered_name: str | None) -> dict:
        return _model_info(log_pyfunc(model_dir, registered_name), registered_name)

    def end(self, status: str = "FINISHED") -> None:
        """End the run. The calls still kept are tried once more (with ``backoff``), then
        each on its own (one that still fails does not hold back the others), and those
        that fail are given up, with a warning."""
        self._do(self._end, status, final=True)
        kept, self._kept, lost = self._kept, [], 0
        for call, args in kept:
            try:
                with _trying(quick=True):
                    call(*args)
            except Exception as err:
                if not _transient(err):
                    raise
                lost += 1
        if lost:
            log.warning("MLflow store %s still fails: %d tracking calls of run %s were not "
                        "logged", self.uri, lost, self.run_id or "(not started)")

    @staticmethod
    def _end(status: str) -> None:
        if mlflow.active_run():
            mlflow.end_run(status=status)


# MLflow error codes of a store that may answer later (the others: a refused request)
TRANSIENT = {"INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "IO_ERROR", "ABORTED",
             "SERVICE_UNDER_MAINTENANCE", "WORKSPACE_TEMPORARILY_UNAVAILABLE",
             "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "REQUEST_LIMIT_EXCEEDED",
             "COULD_NOT_ACQUIRE_LOCK", "UNPARSEABLE_HTTP_ERROR"}


def _transient(err: Exception) -> bool:
    """Does ``err`` say the store cannot be reached or is busy (try again later)?"""
    if isinstance(err, mlflow.exceptions.MlflowException):
        return err.error_code in TRANSIENT
    if isinstance(err, (FileNotFoundError, IsADirectoryError, NotADirectoryError)):
        return False  # a file of ours that is not there
    # OSError: connections (requests' errors are OSErrors), the store's disk
    return isinstance(err, OSError) or type(err).__module__.startswith(
        ("sqlalchemy", "sqlite3", "requests", "urllib3"))


# what MLflow logs about each failing call (a traceback per call): the tracker warns once
_CHATTY = ("mlflow.store.db.utils", "urllib3.connectionpool", "mlflow.utils.request_utils")


@contextlib.contextmanager
def _trying(quick: bool):
    """One try of a call to the store: MLflow's own log records of a failure muted and,
    while the store is known to fail (``quick``), one HTTP request per try instead of
    minutes of retries (unless MLFLOW_HTTP_REQUEST_MAX_RETRIES is set)."""
    loggers = [logging.getLogger(name) for name in _CHATTY]
    muted = [lg.disabled for lg in loggers]
    name = "MLFLOW_HTTP_REQUEST_MAX_RETRIES"
    quick = quick and name not in os.environ
    for lg in loggers:
        lg.disabled = True
    if quick:
        os.environ[name] = "0"
    try:
        yield
    finally:
        for lg, was in zip(loggers, muted):
            lg.disabled = was
        if quick:
            os.environ.pop(name, None)


def _brief(err: Exception) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:200]}{'...' if len(text) > 200 else ''}"


def log_to_run(run_id: str, metrics: dict[str, float], files: list[Path],
               artifact_path: str, uri: str | None = None) -> str:
    """Add metrics and files to an existing run (an evaluation of its model)."""
    client = mlflow.MlflowClient(tracking_uri(uri))
    try:
        client.get_run(run_id)
    except mlflow.exceptions.MlflowException:
        raise ValueError(f"MLflow run {run_id!r} not found in {tracking_uri(uri)}") from None
    for key, value in metrics.items():
        client.log_metric(run_id, key, float(value))
    for f in files:
        client.log_artifact(run_id, str(f), artifact_path)
    return run_id


def log_model_to_run(run_id: str, model_dir: Path, registered_name: str | None = None,
                     uri: str | None = None) -> dict:
    """Log ``model_dir`` to an existing (finished) run once more, e.g. with the decoding
    chosen after training, and register it as a new version; the run keeps its status.
    Returns what :meth:`Tracker.log_model` returns."""
    mlflow.set_tracking_uri(tracking_uri(uri))
    client = mlflow.MlflowClient()
    try:
        status = client.get_run(run_id).info.status
    except mlflow.exceptions.MlflowException:
        raise ValueError(f"MLflow run {run_id!r} not found in {tracking_uri(uri)}") from None
    with mlflow.start_run(run_id=run_id):
        info = _model_info(log_pyfunc(model_dir, registered_name), registered_name)
    client.set_terminated(run_id, status)
    return info


def _model_info(info, registered_name: str | None) -> dict:
    return {"model_uri": info.model_uri, "registered_name": registered_name,
            "version": getattr(info, "registered_model_version", None)}

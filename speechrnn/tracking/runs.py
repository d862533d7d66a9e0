"""One MLflow run: start or resume it, log parameters, metrics, datasets, artifacts and the
model to it, end it; and :func:`log_to_run`, which adds an evaluation to a finished run."""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import mlflow

from . import RunTracker, tracking_uri
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
    """One MLflow run: start or resume it, log to it, end it."""

    def __init__(self, experiment: str, uri: str | None = None):
        self.uri = tracking_uri(uri)
        self.experiment = experiment
        mlflow.set_tracking_uri(self.uri)
        root = _artifact_root(self.uri)
        found = mlflow.get_experiment_by_name(experiment)
        if found is None:
            try:
                self.experiment_id = mlflow.create_experiment(
                    experiment, artifact_location=root,
                    # the UI opens it as model training (runs, metrics, charts), not GenAI
                    tags={"mlflow.experimentKind": "custom_model_development"})
            except mlflow.exceptions.MlflowException:  # another process created it first
                found = mlflow.get_experiment_by_name(experiment)
                if found is None:
                    raise
        if found is not None:
            self.experiment_id = found.experiment_id
        self.run_id: str | None = None

    def start(self, run_id: str | None = None, run_name: str | None = None) -> str:
        """Start a new run, or resume ``run_id`` (after an interrupt or a crash)."""
        if mlflow.active_run():
            mlflow.end_run()
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
        return self.run_id

    @property
    def run_url(self) -> str:
        return f"experiment {self.experiment_id}, run {self.run_id}"

    def log_params(self, params: dict[str, Any]) -> None:
        items = {k: ("" if v is None else json.dumps(v) if isinstance(v, (list, dict)) else v)
                 for k, v in params.items()}
        keys = sorted(items)
        for i in range(0, len(keys), 100):  # MLflow takes at most 100 per call
            mlflow.log_params({k: items[k] for k in keys[i:i + 100]})

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def logged_steps(self, metric: str) -> set[int]:
        client = mlflow.MlflowClient(self.uri)
        return {m.step for m in client.get_metric_history(self.run_id, metric)}

    def set_tags(self, tags: dict[str, Any]) -> None:
        mlflow.set_tags({k: str(v) for k, v in tags.items()})

    def log_dataset(self, name: str, manifest: Path, rows: list, context: str) -> None:
        """The manifest as an MLflow dataset (digest of its rows), with hours and speakers."""
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
        self.log_params({f"dataset.{context}.utterances": len(rows),
                         f"dataset.{context}.hours": round(hours, 3),
                         f"dataset.{context}.speakers": speakers,
                         f"dataset.{context}.digest": dataset.digest})

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            mlflow.log_artifacts(str(path), artifact_path)
        else:
            mlflow.log_artifact(str(path), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        mlflow.log_text(text, artifact_file)

    def log_figure(self, figure, artifact_file: str) -> None:
        mlflow.log_figure(figure, artifact_file)

    def log_model(self, model_dir: Path, registered_name: str | None = None) -> dict:
        """Log the model directory as a pyfunc that transcribes audio; register it."""
        info = log_pyfunc(model_dir, registered_name)
        return {"model_uri": info.model_uri,
                "registered_name": registered_name,
                "version": getattr(info, "registered_model_version", None)}

    def end(self, status: str = "FINISHED") -> None:
        if mlflow.active_run():
            mlflow.end_run(status=status)


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

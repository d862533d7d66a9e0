"""What every tracker is, without MLflow: the store's URI, the experiment a config logs to,
and the interface every tracker has (:class:`RunTracker`, whose methods all do nothing:
:class:`NullTracker` is tracking switched off). The MLflow-backed modules build on it."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

    from ..config import Config

DEFAULT_URI = "sqlite:///mlruns/mlflow.db"

__all__ = ["DEFAULT_URI", "NullTracker", "RunTracker", "experiment_name", "tracking_uri"]


def tracking_uri(uri: str | None = None) -> str:
    """``uri``, else ``$MLFLOW_TRACKING_URI``, else :data:`DEFAULT_URI`."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def experiment_name(cfg: Config) -> str:
    """The experiment a config's runs log to: ``tracking.experiment``, else
    ``speechrnn-<config name>``."""
    return cfg.tracking.experiment or f"speechrnn-{cfg.name}"


class RunTracker:
    """What a tracker does, here done by nobody: every method is a no-op that returns a
    neutral value. :class:`Tracker` logs to MLflow; :class:`NullTracker` is this as is."""

    uri: str = ""
    experiment: str = ""
    experiment_id: str = ""
    run_id: str | None = None
    run_url: str = "tracking off"

    def start(self, run_id: str | None = None, run_name: str | None = None) -> str:
        """Start a new run, or resume ``run_id``; return its id ("" when none)."""
        return run_id or ""

    def log_params(self, params: dict[str, Any]) -> None:
        """Log parameters (lists and dicts as JSON, None as "")."""

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Log metrics at ``step``."""

    def logged_steps(self, metric: str) -> set[int]:
        """The steps at which ``metric`` was logged in this run (none here)."""
        return set()

    def log_history(self, history: list[dict]) -> None:
        """Log the epochs of ``history`` (dicts of ``epoch`` and metrics) that the run does
        not have yet: after an interrupt, or a store that could not be reached."""

    def set_tags(self, tags: dict[str, Any]) -> None:
        """Set run tags (values as strings)."""

    def log_dataset(self, name: str, manifest: Path, rows: list, context: str) -> None:
        """Log a manifest's rows as a dataset used in ``context`` ("train", "dev", ...)."""

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Log a file, or a folder's files, under ``artifact_path``."""

    def delete_artifacts(self, artifact_path: str) -> None:
        """Remove the run's artifact ``artifact_path`` (a file, or a folder and all in it):
        what a later call logs there replaces it instead of adding to it. Where the
        artifact store refuses, one warning, and what is there stays."""

    def log_text(self, text: str, artifact_file: str) -> None:
        """Log ``text`` as the artifact ``artifact_file``."""

    def log_figure(self, figure, artifact_file: str) -> None:
        """Log a matplotlib figure as the artifact ``artifact_file``."""

    def log_model(self, model_dir: Path, registered_name: str | None = None) -> dict:
        """Log a trained model directory as a servable model and register it; return
        ``{"model_uri", "registered_name", "version"}`` ({} here)."""
        return {}

    def end(self, status: str = "FINISHED") -> None:
        """End the run with ``status`` ("FINISHED", "FAILED", "KILLED")."""


class NullTracker(RunTracker):
    """Tracking switched off (``tracking.enabled: false``, ``--no-track``): every call
    does nothing."""

"""Experiment tracking with MLflow: this package is the only part of the library that
imports MLflow, and importing it imports neither MLflow nor TensorFlow.

Store: ``sqlite:///mlruns/mlflow.db`` (relative to the working directory) unless
``tracking.uri`` or ``MLFLOW_TRACKING_URI`` says otherwise; artifacts of a new experiment
go to ``artifacts/`` beside the database.

Here: the tracker a config asks for (:func:`make_tracker`), and from ``base`` the store's
URI, the experiment a config logs to and the interface every tracker has
(:class:`RunTracker`, whose methods all do nothing: :class:`NullTracker` is tracking
switched off). The MLflow-backed names load on first use:

- ``runs``: :class:`Tracker` (one MLflow run), :func:`log_to_run` and
  :func:`log_model_to_run`;
- ``registry``: logged models, :func:`download_model`, :func:`served_model_uri`,
  :func:`load_pyfunc`, :func:`model_record`, ``SIGNATURE``, :func:`pinned_requirements`;
- ``servers``: :func:`ui_command` for ``speechrnn ui``, :func:`scoring_app` for
  ``speechrnn serve``;
- ``pyfunc.py``: the logged model itself, an MLflow "model from code" that MLflow runs when
  it loads the model (never imported by the library).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .base import DEFAULT_URI, NullTracker, RunTracker, experiment_name, tracking_uri

if TYPE_CHECKING:
    from ..config import Config

# name -> the submodule that defines it (imported on first access: they import MLflow)
_LAZY = {
    "Tracker": "runs",
    "log_to_run": "runs",
    "log_model_to_run": "runs",
    "download_model": "registry",
    "served_model_uri": "registry",
    "load_pyfunc": "registry",
    "model_record": "registry",
    "log_pyfunc": "registry",
    "pinned_requirements": "registry",
    "MODEL_REQUIREMENTS": "registry",
    "SIGNATURE": "registry",
    "ui_command": "servers",
    "scoring_app": "servers",
}

__all__ = ["DEFAULT_URI", "NullTracker", "RunTracker", "experiment_name", "make_tracker",
           "tracking_uri", *_LAZY]


def make_tracker(cfg: Config, enabled: bool = True) -> RunTracker:
    """The tracker a config asks for: an MLflow :class:`Tracker` on ``tracking.uri`` and
    :func:`experiment_name`, or a :class:`NullTracker` when ``tracking.enabled`` is false
    or ``enabled`` is (``--no-track``)."""
    if not (cfg.tracking.enabled and enabled):
        return NullTracker()
    from .runs import Tracker

    return Tracker(experiment_name(cfg), cfg.tracking.uri)


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))

"""Experiment tracking with MLflow: the only module that talks to MLflow.

Store: ``sqlite:///mlruns/mlflow.db`` (relative to the working directory) unless
``tracking.uri`` or ``MLFLOW_TRACKING_URI`` says otherwise; artifacts of a new experiment
go to ``artifacts/`` beside the database. MLflow's anonymous usage telemetry is off unless
the user turns it on (``MLFLOW_DISABLE_TELEMETRY=false``).

The logged model is an MLflow "model from code" (``mlflow_pyfunc.py``, the one other file
that imports MLflow): its ``predict`` takes a DataFrame with a binary ``audio`` column (any
file libsndfile reads, any length) and returns the transcripts; loading it runs no pickle.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import json  # noqa: E402
import logging  # noqa: E402
import warnings  # noqa: E402
from importlib import metadata  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import mlflow  # noqa: E402
from mlflow.models import ModelSignature  # noqa: E402
from mlflow.types import ColSpec, Schema  # noqa: E402

log = logging.getLogger(__name__)
logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)  # "Creating tables..."

DEFAULT_URI = "sqlite:///mlruns/mlflow.db"
PACKAGE_DIR = Path(__file__).resolve().parent
# What the served model needs; pinned to the versions it was trained with.
MODEL_REQUIREMENTS = ("tensorflow", "keras", "librosa", "soundfile", "soxr", "numpy", "pyyaml",
                      "tqdm", "threadpoolctl", "jiwer", "mlflow")
SIGNATURE = ModelSignature(inputs=Schema([ColSpec("binary", "audio")]),
                           outputs=Schema([ColSpec("string", "text"),
                                           ColSpec("double", "confidence"),
                                           ColSpec("string", "words"),
                                           ColSpec("string", "error")]))


def tracking_uri(uri: str | None = None) -> str:
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def _artifact_root(uri: str) -> str | None:
    """``artifacts/`` beside a SQLite database; None (MLflow's default) otherwise."""
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        db.parent.mkdir(parents=True, exist_ok=True)
        return (db.parent.resolve() / "artifacts").as_uri()
    return None


def pinned_requirements() -> list[str]:
    out = []
    for name in MODEL_REQUIREMENTS:
        try:
            out.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            out.append(name)
    return out


class Tracker:
    """One MLflow run: start or resume it, log to it, end it."""

    def __init__(self, experiment: str, uri: str | None = None):
        self.uri = tracking_uri(uri)
        self.experiment = experiment
        mlflow.set_tracking_uri(self.uri)
        root = _artifact_root(self.uri)
        found = mlflow.get_experiment_by_name(experiment)
        self.experiment_id = found.experiment_id if found else mlflow.create_experiment(
            experiment, artifact_location=root,
            # the UI opens it as model training (runs, metrics, charts), not as GenAI traces
            tags={"mlflow.experimentKind": "custom_model_development"})
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
        with warnings.catch_warnings():
            # our signature is explicit; an input example would be a whole audio file
            warnings.filterwarnings("ignore", message=".*(type hints|input example).*")
            info = self._log_pyfunc(model_dir, registered_name)
        return {"model_uri": info.model_uri,
                "registered_name": registered_name,
                "version": getattr(info, "registered_model_version", None)}

    def _log_pyfunc(self, model_dir: Path, registered_name: str | None):
        return mlflow.pyfunc.log_model(
            name="model",
            python_model=str(PACKAGE_DIR / "mlflow_pyfunc.py"),
            artifacts={"model_dir": str(model_dir)},
            code_paths=[str(PACKAGE_DIR)],
            signature=SIGNATURE,
            pip_requirements=pinned_requirements(),
            registered_model_name=registered_name or None,
        )

    def end(self, status: str = "FINISHED") -> None:
        if mlflow.active_run():
            mlflow.end_run(status=status)


class NullTracker:
    """Tracking switched off (``tracking.enabled: false``): every call does nothing."""

    uri = experiment = experiment_id = ""
    run_id = None
    run_url = "tracking off"

    def start(self, run_id=None, run_name=None):
        return run_id or ""

    def logged_steps(self, metric):
        return set()

    def log_model(self, model_dir, registered_name=None):
        return {}

    def _nothing(self, *args, **kwargs):
        return None

    log_params = log_metrics = set_tags = log_dataset = log_artifact = _nothing
    log_text = log_figure = end = _nothing


def plot_history(history: list[dict]):
    """Training curves: losses, dev WER/CER and the learning rate against epochs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(epochs, [h["train_loss"] for h in history], label="train loss")
    axes[0].plot(epochs, [h["dev_loss"] for h in history], label="dev loss")
    axes[0].set_ylabel("CTC loss")
    axes[1].plot(epochs, [100 * h["dev_wer"] for h in history], label="dev WER")
    axes[1].plot(epochs, [100 * h["dev_cer"] for h in history], label="dev CER")
    axes[1].set_ylabel("%")
    axes[2].plot(epochs, [h["learning_rate"] for h in history], label="learning rate")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


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


def served_model_uri(model: str) -> str:
    """The MLflow model to serve for a ``runs:/``/``models:/`` URI, a logged MLflow model
    folder, or a trained model directory (which remembers the run that logged it)."""
    if model.startswith(("runs:/", "models:/")):
        return model
    path = Path(model)
    if (path / "MLmodel").exists():
        return str(path.resolve())
    info = path / "mlflow.json"
    if info.exists():
        uri = json.loads(info.read_text()).get("model_uri")
        if uri:
            return uri
    raise FileNotFoundError(f"{model}: not an MLflow model; pass runs:/<run_id>/model, "
                            "models:/<name>/<version>, or a model directory trained with "
                            "tracking on")


def server_command(kind: str, host: str, port: int, model: str | None = None,
                   uri: str | None = None) -> tuple[list[str], dict]:
    """The command line and environment of ``mlflow ui`` on the project's store, or of
    ``mlflow models serve`` of a model (in this environment: ``--env-manager local``)."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri(uri),
           # the servers MLflow starts (uvicorn) live beside this Python, venv or not
           "PATH": os.pathsep.join([str(Path(sys.executable).parent),
                                    os.environ.get("PATH", "")])}
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    base = [sys.executable, "-m", "mlflow"]
    if kind == "ui":
        return base + ["ui", "--backend-store-uri", tracking_uri(uri), "--host", host,
                       "--port", str(port), "--workers", "1"], env
    return base + ["models", "serve", "-m", served_model_uri(model), "--env-manager", "local",
                   "--host", host, "--port", str(port)], env


def download_model(model_uri: str, uri: str | None = None) -> Path:
    """The model directory inside a logged MLflow model (``runs:/<run_id>/model``,
    ``models:/<name>/<version>``), downloaded to a local folder."""
    import yaml

    mlflow.set_tracking_uri(tracking_uri(uri))
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri))
    except mlflow.exceptions.MlflowException as err:
        raise FileNotFoundError(f"{model_uri}: {err.message.splitlines()[0]}") from None
    try:
        flavor = yaml.safe_load((local / "MLmodel").read_text())["flavors"]["python_function"]
        return local / flavor["artifacts"]["model_dir"]["path"]
    except (FileNotFoundError, KeyError, TypeError):
        raise FileNotFoundError(f"{model_uri}: not a speechrnn MLflow model") from None


def load_pyfunc(model_uri: str, uri: str | None = None):
    mlflow.set_tracking_uri(tracking_uri(uri))
    return mlflow.pyfunc.load_model(model_uri)

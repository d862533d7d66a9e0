"""Logged models: how a trained model directory becomes an MLflow model, and how an MLflow
model is found again (served, downloaded, loaded).

The logged model is an MLflow "model from code" (``pyfunc.py`` beside this file): its
``predict`` takes a DataFrame with a binary ``audio`` column (any file libsndfile reads,
any length) and returns the transcripts; loading it runs no pickle. The whole ``speechrnn``
package travels with it (``code_paths``), pinned requirements describe its environment.
"""

from __future__ import annotations

import json
import warnings
from importlib import metadata
from pathlib import Path

import mlflow
import yaml
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema

from .base import tracking_uri

TRACKING_DIR = Path(__file__).resolve().parent
PACKAGE_DIR = TRACKING_DIR.parent  # speechrnn/: the code the logged model runs
MODEL_CODE = TRACKING_DIR / "pyfunc.py"
# What the served model needs; pinned to the versions it was trained with.
MODEL_REQUIREMENTS = ("tensorflow", "keras", "librosa", "soundfile", "soxr", "numpy", "pyyaml",
                      "tqdm", "threadpoolctl", "jiwer", "mlflow")
SIGNATURE = ModelSignature(inputs=Schema([ColSpec("binary", "audio")]),
                           outputs=Schema([ColSpec("string", "text"),
                                           ColSpec("double", "confidence"),
                                           ColSpec("string", "words"),
                                           ColSpec("string", "error")]))


def pinned_requirements() -> list[str]:
    """:data:`MODEL_REQUIREMENTS` at the versions installed here (unpinned if absent)."""
    out = []
    for name in MODEL_REQUIREMENTS:
        try:
            out.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            out.append(name)
    return out


def log_pyfunc(model_dir: Path, registered_name: str | None = None):
    """Log ``model_dir`` to the active run as the model ``model`` (from code: ``pyfunc.py``,
    with the ``speechrnn`` package beside it); register it as ``registered_name`` when
    given. Returns MLflow's ``ModelInfo``."""
    with warnings.catch_warnings():
        # our signature is explicit; an input example would be a whole audio file
        warnings.filterwarnings("ignore", message=".*(type hints|input example).*")
        return mlflow.pyfunc.log_model(
            name="model",
            python_model=str(MODEL_CODE),
            artifacts={"model_dir": str(model_dir)},
            code_paths=[str(PACKAGE_DIR)],
            signature=SIGNATURE,
            pip_requirements=pinned_requirements(),
            registered_model_name=registered_name or None,
        )


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


_downloaded: dict[tuple[str, str], Path] = {}  # (model URI, tracking URI) -> model dir


def _fixed(model_uri: str) -> bool:
    """Whether a URI names one model for good: a run's, or a numbered registered version
    (not ``latest`` or an alias, which move when a new version is registered)."""
    return model_uri.startswith("runs:/") or (
        model_uri.startswith("models:/") and model_uri.rstrip("/").rsplit("/", 1)[-1].isdigit())


def download_model(model_uri: str, uri: str | None = None) -> Path:
    """The model directory inside a logged MLflow model (``runs:/<run_id>/model``,
    ``models:/<name>/<version>``), downloaded to a local folder; once per process for a
    run's model or a numbered version (the CLI reads a model's decoding, then loads it)."""

    key = (model_uri, tracking_uri(uri))
    if _fixed(model_uri) and key in _downloaded and _downloaded[key].is_dir():
        return _downloaded[key]
    mlflow.set_tracking_uri(key[1])
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri))
    except mlflow.exceptions.MlflowException as err:
        raise FileNotFoundError(f"{model_uri}: {err.message.splitlines()[0]}") from None
    try:
        flavor = yaml.safe_load((local / "MLmodel").read_text())["flavors"]["python_function"]
        _downloaded[key] = local / flavor["artifacts"]["model_dir"]["path"]
    except (FileNotFoundError, KeyError, TypeError):
        raise FileNotFoundError(f"{model_uri}: not a speechrnn MLflow model") from None
    return _downloaded[key]


def load_pyfunc(model_uri: str, uri: str | None = None):
    """The logged model, loaded as MLflow loads it to serve it."""
    mlflow.set_tracking_uri(tracking_uri(uri))
    return mlflow.pyfunc.load_model(model_uri)


def model_record(model: str, uri: str | None = None) -> dict:
    """What MLflow knows of a model given as ``speechrnn serve --model`` takes it:
    ``name`` and ``version`` (registered models), ``run_id``, and ``test_wer`` (the run's
    ``test_<decoding>_wer`` metrics by decoding: ``greedy``, ``beam_lm``, ...). Keys MLflow
    cannot answer are left out; a store that fails never raises."""
    record: dict = {}
    if model.startswith("models:/"):
        name, _, ref = model[len("models:/"):].strip("/").partition("/")
        if "@" in name and not ref:
            name, _, alias = name.partition("@")
            ref = f"@{alias}"
        record["name"] = name
    elif model.startswith("runs:/"):
        record["run_id"] = model[len("runs:/"):].split("/")[0]
    else:
        info = Path(model) / "mlflow.json"
        try:
            saved = json.loads(info.read_text())
        except (OSError, ValueError):
            return record
        record.update({k: saved[k] for k in ("run_id", "version") if saved.get(k)})
        if saved.get("registered_name"):
            record["name"] = saved["registered_name"]
        ref = None
    client = mlflow.MlflowClient(tracking_uri(uri))
    try:
        if "name" in record and ref:
            if ref.startswith("@"):
                found = client.get_model_version_by_alias(record["name"], ref[1:])
            elif ref == "latest":
                found = max(client.search_model_versions(f"name='{record['name']}'"),
                            key=lambda v: int(v.version))
            else:
                found = client.get_model_version(record["name"], ref)
            record.update(version=str(found.version), run_id=found.run_id)
        if record.get("run_id"):
            metrics = client.get_run(record["run_id"]).data.metrics
            record["test_wer"] = {k[len("test_"):-len("_wer")]: v for k, v in
                                  sorted(metrics.items())
                                  if k.startswith("test_") and k.endswith("_wer")}
    except (mlflow.exceptions.MlflowException, OSError, ValueError) as err:
        warnings.warn(f"{model}: MLflow could not tell its run or WER ({err})", stacklevel=2)
    if "version" in record:
        record["version"] = str(record["version"])
    return record

"""The MLflow servers behind ``speechrnn ui`` (the tracking UI on the project's store) and
``speechrnn serve`` (a logged model behind MLflow's scoring server)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from . import tracking_uri


def server_command(kind: str, host: str, port: int, model: str | None = None,
                   uri: str | None = None) -> tuple[list[str], dict]:
    """The command line and environment of ``mlflow ui`` on the project's store
    (``kind="ui"``), or of ``mlflow models serve`` of ``model`` (in this environment:
    ``--env-manager local``)."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri(uri),
           # the servers MLflow starts (uvicorn) live beside this Python, venv or not
           "PATH": os.pathsep.join([str(Path(sys.executable).parent),
                                    os.environ.get("PATH", "")])}
    base = [sys.executable, "-m", "mlflow"]
    if kind == "ui":
        return base + ["ui", "--backend-store-uri", tracking_uri(uri), "--host", host,
                       "--port", str(port), "--workers", "1"], env
    from .registry import served_model_uri

    return base + ["models", "serve", "-m", served_model_uri(model), "--env-manager", "local",
                   "--host", host, "--port", str(port)], env

"""The MLflow servers behind ``speechrnn ui`` (the tracking UI on the project's store) and
``speechrnn serve`` (a logged model in MLflow's scoring app, run by :mod:`speechrnn.serve`
beside the transcription page of :mod:`speechrnn.web`)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .base import tracking_uri


def ui_command(host: str, port: int, uri: str | None = None) -> tuple[list[str], dict]:
    """The command line and environment of ``mlflow ui`` on the project's store."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri(uri),
           # the servers MLflow starts (uvicorn) live beside this Python, venv or not
           "PATH": os.pathsep.join([str(Path(sys.executable).parent),
                                    os.environ.get("PATH", "")])}
    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri(uri),
            "--host", host, "--port", str(port), "--workers", "1"], env


def scoring_app(model: str, limits, uri: str | None = None):
    """MLflow's scoring app (an ASGI app) for ``model``, whose items are held to
    ``limits`` (a :class:`speechrnn.serve.ServeLimits`); and the
    :class:`~speechrnn.transcribe.Transcriber` inside it, which the page shares."""
    from .registry import load_pyfunc, served_model_uri

    # MLflow's own time limit, a little after ours (speechrnn.serve.LimitsMiddleware answers 504)
    os.environ["MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT"] = str(int(limits.timeout_s) + 5)
    from mlflow.pyfunc import scoring_server

    loaded = load_pyfunc(served_model_uri(model), uri)
    recognizer = loaded.unwrap_python_model()
    recognizer.limits = limits
    return scoring_server.init(loaded), recognizer.transcriber

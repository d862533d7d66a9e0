"""The MLflow model: MLflow runs this file ("model from code") to build the served model.

``predict`` takes a DataFrame with a binary ``audio`` column (whole audio files: any format
libsndfile reads, any rate, channels and length; base64 in MLflow's JSON formats) and
returns a DataFrame with ``text``, ``confidence``, ``words`` (a JSON list of {word, start,
end, confidence}) and ``error`` ("" or why that item could not be transcribed). A bad item
among good ones is reported in its row and the others are transcribed; when no item can be
transcribed the request fails with MLflow's 400 "invalid parameter value" and the reason.
The trained model directory travels as the artifact ``model_dir``; nothing is unpickled.

MLflow copies this file into the logged model and runs it from there (``registry.log_pyfunc``
passes its path as ``python_model``), with the ``speechrnn`` package beside it as code;
hence absolute imports only. Nothing in the library imports it: importing the library never
defines or registers the model.
"""

import base64
import binascii
import json

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from speechrnn.serve import ServeLimits, transcribe_items


def _audio_bytes(item):
    """Bytes of an item; anything else is passed on for ``transcribe_items`` to refuse."""
    if isinstance(item, str):  # base64 that the schema did not decode
        try:
            return base64.b64decode(item, validate=True)
        except (binascii.Error, ValueError):
            return item
    return item


class SpeechRecognizerModel(mlflow.pyfunc.PythonModel):
    """Audio bytes in, text out: features, network and decoding inside. ``limits`` (a
    :class:`speechrnn.serve.ServeLimits`, set by ``speechrnn serve``) bound each item."""

    limits = None

    def load_context(self, context):
        from speechrnn.transcribe import Transcriber

        self.transcriber = Transcriber(context.artifacts["model_dir"])

    def predict(self, context, model_input, params=None):
        if isinstance(model_input, (pd.DataFrame, dict)):
            if "audio" not in model_input:
                raise MlflowException("the input needs an 'audio' column of audio files",
                                      INVALID_PARAMETER_VALUE)
            items = list(model_input["audio"])
        else:
            items = list(model_input)
        rows = transcribe_items(self.transcriber, [_audio_bytes(x) for x in items],
                                self.limits or ServeLimits())
        if not rows or all(r["error"] for r in rows):
            raise MlflowException("; ".join(r["error"] for r in rows) or "no audio given",
                                  INVALID_PARAMETER_VALUE)
        return pd.DataFrame([(r["text"], r["confidence"], json.dumps(r["words"]), r["error"])
                             for r in rows], columns=["text", "confidence", "words", "error"])


mlflow.models.set_model(SpeechRecognizerModel())

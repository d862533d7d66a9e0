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


def _audio_bytes(item) -> bytes:
    if isinstance(item, (bytes, bytearray)):
        return bytes(item)
    if isinstance(item, str):  # base64 that the schema did not decode
        try:
            return base64.b64decode(item, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("not base64-encoded audio") from None
    raise ValueError(f"expected audio bytes, got {type(item).__name__}")


class SpeechRecognizerModel(mlflow.pyfunc.PythonModel):
    """Audio bytes in, text out: features, network and decoding inside."""

    def load_context(self, context):
        from speechrnn.transcribe import Transcriber

        self.transcriber = Transcriber(context.artifacts["model_dir"])

    def predict(self, context, model_input, params=None):
        from speechrnn.audio import AudioError

        if isinstance(model_input, (pd.DataFrame, dict)):
            if "audio" not in model_input:
                raise MlflowException("the input needs an 'audio' column of audio files",
                                      INVALID_PARAMETER_VALUE)
            items = list(model_input["audio"])
        else:
            items = list(model_input)
        rows = []
        for i, item in enumerate(items):
            try:
                r = self.transcriber.transcribe(_audio_bytes(item))
                rows.append((r.text, r.confidence, json.dumps(r.as_dict()["words"]), ""))
            except (AudioError, ValueError) as err:
                reason = err.reason if isinstance(err, AudioError) else str(err)
                rows.append(("", 0.0, "[]", f"audio {i}: {reason}"))
        if not rows or all(r[3] for r in rows):
            raise MlflowException("; ".join(r[3] for r in rows) or "no audio given",
                                  INVALID_PARAMETER_VALUE)
        return pd.DataFrame(rows, columns=["text", "confidence", "words", "error"])


mlflow.models.set_model(SpeechRecognizerModel())

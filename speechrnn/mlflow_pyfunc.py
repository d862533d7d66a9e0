"""The MLflow model: MLflow runs this file ("model from code") to build the served model.

``predict`` takes a DataFrame with a binary ``audio`` column (whole audio files: any format
libsndfile reads, any rate, channels and length) and returns a DataFrame with ``text``,
``confidence`` and ``words`` (a JSON list of {word, start, end, confidence}).
The trained model directory travels as the artifact ``model_dir``; nothing is unpickled.
Kept apart from tracking.py so that importing the library never defines or registers it.
"""

import json

import mlflow
import pandas as pd


class SpeechRecognizerModel(mlflow.pyfunc.PythonModel):
    """Audio bytes in, text out: features, network and decoding inside."""

    def load_context(self, context):
        from speechrnn.transcribe import Transcriber

        self.transcriber = Transcriber(context.artifacts["model_dir"])

    def predict(self, context, model_input, params=None):
        if isinstance(model_input, (pd.DataFrame, dict)):
            items = list(model_input["audio"])
        else:
            items = list(model_input)
        results = [self.transcriber.transcribe(bytes(x)) for x in items]
        return pd.DataFrame({
            "text": [r.text for r in results],
            "confidence": [r.confidence for r in results],
            "words": [json.dumps(r.as_dict()["words"]) for r in results]})


mlflow.models.set_model(SpeechRecognizerModel())

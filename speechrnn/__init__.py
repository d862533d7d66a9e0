"""speechrnn: a Keras speech recognition pipeline.

audio -> features -> dataset -> model -> train -> decoding -> evaluate -> transcribe.
"""

import os

# Environment defaults, set here once: every module of the package is imported after this.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ start-up chatter
# MLflow: no anonymous usage telemetry unless the user turns it on
# (MLFLOW_DISABLE_TELEMETRY=false), no progress bars over artifact uploads
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

__version__ = "0.1.0"


def load_model(model, **options):
    """A ready transcriber: ``speechrnn.load_model(M).transcribe(path_or_array,
    sample_rate=None)``. ``M`` is a model directory, ``runs:/<run_id>/model`` or
    ``models:/<name>/<version>``; options are those of
    :class:`speechrnn.transcribe.Transcriber` (backend, options, lm, chunking, ...)."""
    from .transcribe import load_transcriber

    return load_transcriber(model, **options)

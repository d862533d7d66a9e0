"""speechrnn: a Keras speech recognition pipeline.

audio -> features -> dataset -> model -> train -> decoding -> evaluate -> transcribe.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ start-up chatter

__version__ = "0.1.0"


def load_model(model, **options):
    """A ready transcriber: ``speechrnn.load_model(M).transcribe(path_or_array,
    sample_rate=None)``. ``M`` is a model directory, ``runs:/<run_id>/model`` or
    ``models:/<name>/<version>``; options are those of
    :class:`speechrnn.transcribe.Transcriber` (backend, options, lm, chunking, ...)."""
    from .transcribe import load_model as _load

    return _load(model, **options)

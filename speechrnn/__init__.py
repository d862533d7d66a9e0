"""speechrnn: a Keras speech recognition pipeline.

audio -> features -> dataset -> model -> train -> decoding -> evaluate -> transcribe.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ start-up chatter

__version__ = "0.1.0"

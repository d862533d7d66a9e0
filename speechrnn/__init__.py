"""speechrnn: a Keras speech recognition pipeline.

audio -> features -> dataset -> model -> train -> decoding -> evaluate -> transcribe.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

__version__ = "0.1.0"

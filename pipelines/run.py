"""Run a recipe end to end: prepare -> train -> evaluate -> transcribe.

    python pipelines/run.py [--config pipelines/configs/synth.yaml] [--corpora DIR]
                            [--set key.sub=value ...] [--stages prepare,train,...] [--fresh]

The same as ``speechrnn run`` (:func:`speechrnn.recipe.run_recipe`), with the offline
default recipe: synthetic voices, held out by voice, needing no network and no corpus.
See ``speechrnn run --help``.
"""

import sys
from pathlib import Path

from speechrnn.cli import main

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "synth.yaml"

if __name__ == "__main__":
    args = sys.argv[1:]
    if not any(a == "--config" or a.startswith("--config=") for a in args):
        args = ["--config", str(DEFAULT_CONFIG), *args]
    sys.exit(main(["run", *args]))

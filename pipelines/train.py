"""Train a model for a pipeline config (data prepared first; an interrupted run resumes).

    python pipelines/train.py --config pipelines/configs/fsdd-digits.yaml \
        --corpora ../shared/corpora [--set train.epochs=10 ...] [--fresh]

The same as ``speechrnn train``; see ``speechrnn train --help``.
"""

import sys

from speechrnn.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))

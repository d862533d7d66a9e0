"""Run the pipeline for a config, stage by stage.

    python pipelines/run.py [--config pipelines/configs/synth.yaml] [--set key.sub=value ...]
                            [--corpora DIR] [--force]

Stages so far: prepare (import or synthesise the corpus, write manifests), report
(utterances, hours, speakers, lengths), features (extract into the on-disk cache).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from speechrnn.config import Config, ConfigError, dump_yaml, load_config
from speechrnn.corpora import prepare_data
from speechrnn.features import FeatureExtractor
from speechrnn.manifest import format_stats, manifest_stats, read_manifest
from speechrnn.text import Alphabet

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "synth.yaml"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a config value (repeatable)")
    parser.add_argument("--corpora", help="folder holding the corpora (or SPEECHRNN_CORPORA)")
    parser.add_argument("--force", action="store_true", help="rebuild the manifests")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(Config, args.config, args.overrides)
    except ConfigError as err:
        print(f"run.py: error: {err}", file=sys.stderr)
        return 2
    print(f"== config {args.config}\n{dump_yaml(cfg)}")

    t0 = time.time()
    result = prepare_data(cfg.data, args.corpora, force=args.force)
    print(f"== prepare: {'built' if result else 'manifests already there'} "
          f"in {cfg.data.out} ({time.time() - t0:.1f} s)")
    if result and result.rejected:
        print(f"   {len(result.rejected)} rows rejected: {result.files['rejected']}")

    from speechrnn.dataset import load_examples  # imports TensorFlow

    extractor = FeatureExtractor(cfg.features, cfg.data.cache or None)
    for split in (cfg.data.train, cfg.data.dev, cfg.data.test):
        rows = read_manifest(Path(cfg.data.out) / f"{split}.{cfg.data.format}")
        print(format_stats(split, manifest_stats(rows)))
        t0 = time.time()
        examples = load_examples(rows, extractor, Alphabet(), workers=cfg.batch.workers,
                                 desc=f"features {split}")
        took = time.time() - t0
        print(f"   features: {len(examples)} utterances, {examples.seconds / max(took, 1e-9):.0f} "
              f"audio-s/s, {len(examples.skipped)} skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main())

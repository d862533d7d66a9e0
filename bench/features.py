"""Feature extraction speed: audio-seconds of MFCC per wall-second, cold and from the cache.

    python bench/features.py [--manifest M | --corpora DIR] [--workers 2] [--json OUT]

Default input: the speechocean762 train set (1,340 utterances, ~105 min) from the shared
corpora. "cold" decodes, resamples and computes features into an empty cache; "cached"
reads the same features back (hash of the file + load). Targets (2 cores): >= 500 audio-s/s
cold, >= 5x that cached.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("SPEECHRNN_PROGRESS", "0")

from report import print_table, write_report  # noqa: E402

from speechrnn.config import FeatureConfig  # noqa: E402
from speechrnn.corpora.tables import read_table  # noqa: E402
from speechrnn.features import FeatureExtractor  # noqa: E402
from speechrnn.manifest import read_manifest  # noqa: E402
from speechrnn.progress import parallel_map  # noqa: E402

TARGET_COLD = 500.0
TARGET_CACHED_RATIO = 5.0


def speechocean_train(corpora: Path) -> list[tuple[str, float]]:
    root = corpora / "speechocean762"
    return [(str(root / r["path"]), float(r["duration_s"]))
            for r in read_table(root / "manifest.tsv") if r["split"] == "train"]


def run(files: list[str], seconds: float, extractor, workers: int) -> float:
    t0 = time.perf_counter()
    _, errors = parallel_map(extractor, files, workers, progress=False)
    if errors:
        raise SystemExit(f"{len(errors)} files failed, e.g. {errors[0][1]}")
    return seconds / (time.perf_counter() - t0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--manifest", type=Path)
    parser.add_argument("--corpora", type=Path, default=Path(os.environ.get(
        "SPEECHRNN_CORPORA", Path(__file__).resolve().parents[2] / "shared" / "corpora")))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path, default=Path("bench/results/features.json"))
    args = parser.parse_args(argv)

    if args.manifest:
        items = [(r.audio, r.duration) for r in read_manifest(args.manifest)]
        name = str(args.manifest)
    else:
        if not (args.corpora / "speechocean762" / "manifest.tsv").is_file():
            print(f"no speechocean762 under {args.corpora}: pass --corpora or --manifest",
                  file=sys.stderr)
            return 2
        items, name = speechocean_train(args.corpora), "speechocean762 train"
    files = [f for f, _ in items]
    seconds = sum(d for _, d in items)
    config = FeatureConfig()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, workers, cache in (("no cache, 1 thread", 1, None),
                                      (f"cold cache, {args.workers} threads", args.workers,
                                       Path(tmp) / "cache"),
                                      (f"cached, {args.workers} threads", args.workers,
                                       Path(tmp) / "cache")):
            rate = run(files, seconds, FeatureExtractor(config, cache), workers)
            rows.append({"mode": label, "workers": workers, "audio_s_per_s": round(rate, 1)})
    cold, cached = rows[1]["audio_s_per_s"], rows[2]["audio_s_per_s"]
    result = {
        "benchmark": "features",
        "input": name, "utterances": len(files), "audio_seconds": round(seconds, 1),
        "features": f"{config.n_mfcc} MFCC + {config.deltas} delta orders, "
                    f"{config.win_ms} ms window, {config.hop_ms} ms hop",
        "results": rows,
        "cached_over_cold": round(cached / cold, 2),
        "targets": {"cold_audio_s_per_s": TARGET_COLD, "cached_over_cold": TARGET_CACHED_RATIO},
        "meets_targets": cold >= TARGET_COLD and cached / cold >= TARGET_CACHED_RATIO,
    }
    print(f"features on {name}: {len(files)} utterances, {seconds / 60:.1f} audio-minutes")
    print_table([("mode", "mode", 28), ("audio_s_per_s", "audio-s/s", 12)], rows)
    print(f"cached / cold: {result['cached_over_cold']:.1f}x   "
          f"(targets: cold >= {TARGET_COLD:.0f}, cached >= {TARGET_CACHED_RATIO:.0f}x cold)")
    write_report(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Training speed: audio-seconds trained per wall-second at batch 16, and peak memory.

    python bench/train_speed.py [--manifest M | --corpora DIR] [--batches 12] [--json OUT]

Runs the default model, its stride-1 variant (no time subsampling) and the default model
with the other LSTM implementation (``model.lstm_impl``: the default, ``auto``, is ``scan``
without a GPU and ``keras``, i.e. cuDNN, with one; the third row is the other one), each
in its own process so that each peak RSS is its own. Each row says which LSTM
implementation ran and on which device (GPU when the weights lived on one). Input: the
first 400 utterances of the speechocean762 train set (real speech, 1.9-8 s), else a
manifest you name. Each variant trains ``--batches`` batches after 3 warm-up batches
(graph tracing), with the thread settings training uses. Target: >= 60 audio-s/s for the
default model on 2 cores.

``--against REV`` also runs the default model as the code of git revision REV trains it
(that revision's tree, extracted to a temporary folder, in its own process), ``--repeat``
times in turns with this tree's: before and after a change, in one run, on one machine;
the speed-up is the median of the pairs' ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("SPEECHRNN_PROGRESS", "0")
sys.path.insert(0, str(Path(__file__).parent))
from report import print_table, write_report  # noqa: E402

TARGET = 60.0
VARIANTS = {"default (stride 3)": [], "stride 1": ["model.subsampling=1"],
            # the default model with the implementation that "auto" did not pick
            "default, scan LSTM": ["model.lstm_impl=scan"],
            "default, keras LSTM": ["model.lstm_impl=keras"]}


def measure(manifest: Path, overrides: list[str], batches: int, limit: int) -> dict:
    from speechrnn.config import load_pipeline_config
    from speechrnn.train import configure_threads

    cfg = load_pipeline_config(None, ["batch.batch_size=16", *overrides])
    configure_threads(cfg.train.intra_op_threads, cfg.train.inter_op_threads)
    from speechrnn.dataset import load_examples, make_dataset
    from speechrnn.features import FeatureExtractor
    from speechrnn.manifest import read_manifest
    from speechrnn.model import build_model
    from speechrnn.text import Alphabet
    from speechrnn.train import Steps, make_optimizer

    rows = read_manifest(manifest)[:limit]
    examples = load_examples(rows, FeatureExtractor(cfg.features), Alphabet(),
                             subsampling=cfg.model.stride)
    model = build_model(cfg.model, cfg.features.n_features, Alphabet())
    optimizer = make_optimizer(cfg, 100)
    optimizer.build(model.trainable_variables)
    steps = Steps(model, optimizer, cfg.features.n_features)
    data = iter(make_dataset(examples, cfg.batch, training=True).repeat())
    for _ in range(3):
        steps.train_batch(next(data))
    audio, start = 0.0, time.perf_counter()
    for _ in range(batches):
        batch = next(data)
        steps.train_batch(batch)
        audio += float(batch["feature_lengths"].numpy().sum()) / cfg.features.frames_per_second
    seconds = time.perf_counter() - start
    import tensorflow as tf

    on_gpu = "GPU" in getattr(model.trainable_variables[0].value, "device", "").upper()
    return {"lstm_impl": model.lstm_impl, "gpu": on_gpu, "device": "GPU" if on_gpu else "CPU",
            "gpus_visible": len(tf.config.list_physical_devices("GPU")),
            "audio_s_per_s": round(audio / seconds, 1), "batches": batches,
            "audio_seconds": round(audio, 1), "parameters": model.count_params(),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def run_variant(manifest: Path, name: str, args, code: Path | None = None) -> dict | None:
    """One variant in its own process: its result row, or None (its error printed).
    ``code``: a tree of another revision to run it with (this one's by default)."""
    script, env = Path(__file__).resolve(), dict(os.environ)
    if code is not None:
        script = code / "bench" / script.name
        env["PYTHONPATH"] = os.pathsep.join([str(code), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, str(script), "--manifest", str(manifest.resolve()),
                           "--batches", str(args.batches), "--limit", str(args.limit),
                           "--variant", name], capture_output=True, text=True, env=env,
                          cwd=Path.cwd())
    if proc.returncode != 0:
        print(proc.stderr[-3000:], file=sys.stderr)
        return None
    return {"model": name, **json.loads(proc.stdout.strip().splitlines()[-1])}


def revision_tree(rev: str, folder: Path) -> Path:
    """The files of git revision ``rev`` of this repository, extracted into ``folder``."""
    root = Path(__file__).resolve().parents[1]
    archive = subprocess.run(["git", "-C", str(root), "archive", "--format=tar", rev],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def default_manifest(corpora: Path) -> Path:
    from speechrnn.corpora import ImportOptions, import_corpus

    out = Path("data/bench/speechocean762")
    if not (out / "train.jsonl").exists():
        import_corpus("speechocean762", corpora / "speechocean762",
                      ImportOptions(out=out, progress=False))
    return out / "train.jsonl"


def training_arguments(doc: str, batches: int, name: str) -> argparse.ArgumentParser:
    """The options of a training benchmark: its input (``--manifest``, or speechocean762
    under ``--corpora``), ``--batches`` timed, ``--limit`` utterances, ``--json`` report."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--manifest", type=Path)
    parser.add_argument("--corpora", type=Path, default=Path(os.environ.get(
        "SPEECHRNN_CORPORA", Path(__file__).resolve().parents[2] / "shared" / "corpora")))
    parser.add_argument("--batches", type=int, default=batches)
    parser.add_argument("--limit", type=int, default=400, help="utterances to load")
    parser.add_argument("--json", type=Path, default=Path(f"bench/results/{name}.json"))
    return parser


def main(argv=None) -> int:
    parser = training_arguments(__doc__, 12, "train_speed")
    parser.add_argument("--against", metavar="REV",
                        help="also train the default model with git revision REV's code")
    parser.add_argument("--repeat", type=int, default=3,
                        help="with --against: runs of each, taken in turns (default: 3)")
    parser.add_argument("--variant", help=argparse.SUPPRESS)  # child process mode
    args = parser.parse_args(argv)

    if args.variant is not None:
        print(json.dumps(measure(args.manifest, VARIANTS[args.variant], args.batches,
                                 args.limit)))
        return 0
    manifest = args.manifest or default_manifest(args.corpora)
    results = []
    names = ["default (stride 3)", "stride 1"]
    for name in names:
        result = run_variant(manifest, name, args)
        if result is None:
            return 1
        results.append(result)
        if name == "default (stride 3)":  # then the implementation "auto" did not pick
            names.append("default, keras LSTM" if result["lstm_impl"] == "scan"
                         else "default, scan LSTM")
    default = results[0]["audio_s_per_s"]
    against = None
    if args.against:
        import tempfile

        # turn about, so that a machine whose speed drifts (a shared VM) slows both alike
        pairs = []
        with tempfile.TemporaryDirectory(prefix="speechrnn-rev-") as folder:
            code = revision_tree(args.against, Path(folder))
            for _ in range(args.repeat):
                old = run_variant(manifest, "default (stride 3)", args, code)
                new = run_variant(manifest, "default (stride 3)", args)
                if old is None or new is None:
                    return 1
                pairs.append((new["audio_s_per_s"], old["audio_s_per_s"]))
        ratios = sorted(n / o for n, o in pairs)
        median = ratios[len(ratios) // 2]
        results.append({**old, "model": f"default at {args.against}"})
        against = {"revision": args.against, "pairs_audio_s_per_s": pairs,
                   "speedup_each": [round(r, 2) for r in ratios],
                   "speedup": round(median, 2)}
    speed = {r["lstm_impl"]: r["audio_s_per_s"] for r in (results[0], results[2])}
    report = {"benchmark": "train_speed", "input": str(manifest), "batch_size": 16,
              "results": results, "target_audio_s_per_s": TARGET,
              "gpu": results[0]["gpu"], "default_lstm_impl": results[0]["lstm_impl"],
              "stride3_over_stride1": round(default / results[1]["audio_s_per_s"], 2),
              "keras_over_scan": round(speed["keras"] / speed["scan"], 2),
              "meets_target": default >= TARGET, "against": against}
    print(f"training speed, batch 16, on {manifest}")
    print_table([("model", "model", 22), ("lstm_impl", "lstm", 7), ("device", "device", 8),
                 ("parameters", "params", 12), ("audio_s_per_s", "audio-s/s", 12),
                 ("peak_rss_mb", "peak RSS MB", 13)], results)
    print(f"stride 3 / stride 1: {report['stride3_over_stride1']:.2f}x   "
          f"keras LSTM / scan LSTM: {report['keras_over_scan']:.2f}x   "
          f"(target: default >= {TARGET:.0f} audio-s/s)")
    if against:
        print(f"default model: {against['speedup']:.2f}x the speed of {args.against} (median "
              f"of {args.repeat} runs each, in turns: "
              f"{', '.join(f'{r:.2f}x' for r in against['speedup_each'])})")
    write_report(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

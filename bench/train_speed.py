"""Training speed: audio-seconds trained per wall-second at batch 16, and peak memory.

    python bench/train_speed.py [--manifest M | --corpora DIR] [--batches 12] [--json OUT]
                                [--against REV [--repeat N]] [--english CONFIG]

Rows, each in its own process so that each peak RSS is its own:

- the default model, features in memory (``batch.source: memory``);
- the same, streamed from feature shards (``batch.source: shards``; 5-minute shards built
  before the row, so the row times reading and parsing them, not extraction);
- its stride-1 variant (no time subsampling);
- the default model with the other LSTM implementation (``model.lstm_impl``: the default,
  ``auto``, is ``scan`` without a GPU and ``keras``, i.e. cuDNN, with one);
- the default model with its whole step (forward, dense CTC loss, gradients, update)
  compiled by XLA (``jit_compile``); XLA compiles once for each shape, so this row pads
  every batch to 16 items of the longest utterance's length.

Each row says which LSTM implementation ran and on which device (GPU when the weights lived
on one). Input: the first 400 utterances of the speechocean762 train set (real speech,
1.9-8 s), else a manifest you name. Each row trains ``--batches`` batches after 3 warm-up
batches (graph tracing), with the thread settings training uses, a new epoch's batches
after each epoch as training makes them (its end included); "input wait" is the share of
that time the loop waited for its next batch. Target: >= 60 audio-s/s for the default model
on 2 cores, streamed >= 0.95x in memory.

The default model runs ``--repeat`` times in memory and streamed, in turns (a shared VM's
speed drifts by more than the gap between them); its rows show the median run, and
streamed / in memory is the median of the pairs' ratios.

``--against REV`` also runs the default model with the code of git revision REV (that
revision's tree, extracted to a temporary folder, put first on the child's path; this
script times both), ``--repeat`` times in turns with this tree's: before and after a
change, in one run, on one machine; the speed-up is the median of the pairs' ratios.

``--english CONFIG`` (default ``pipelines/configs/english.yaml``): when its corpus is
prepared, the epochs its time budget holds at each measured speed of the default model
(training passes only: its per-epoch dev scoring comes on top).
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
TARGET_STREAMED = 0.95  # streamed / in memory
SHARD_MINUTES = 5.0
VARIANTS = {"default (stride 3)": {}, "default, streamed": {"source": "shards"},
            "stride 1": {"overrides": ["model.subsampling=1"]},
            # the default model with the implementation that "auto" did not pick
            "default, scan LSTM": {"overrides": ["model.lstm_impl=scan"]},
            "default, keras LSTM": {"overrides": ["model.lstm_impl=keras"]},
            "default, XLA step": {"xla": True}}


def shard_folder(manifest: Path, limit: int) -> Path:
    return manifest.resolve().parent / f"shards-{limit}"


def training_input(rows, cfg, source: str, shards: Path):
    """The first ``limit`` rows' features: in memory, or the shard set in ``shards``
    (built there when missing: the parent builds it before any row runs)."""
    from speechrnn.text import Alphabet

    if source == "shards":
        from speechrnn.shards import ShardSpec, build_shards

        spec = ShardSpec(cfg.features, Alphabet(), cfg.model.stride, SHARD_MINUTES)
        return build_shards(rows, shards, spec, progress=False)
    from speechrnn.dataset import load_examples
    from speechrnn.features import FeatureExtractor

    return load_examples(rows, FeatureExtractor(cfg.features), Alphabet(),
                         subsampling=cfg.model.stride)


def epochs_of_batches(data, cfg):
    """Training batches as training makes them: a new dataset for each epoch."""
    from speechrnn.dataset import make_dataset

    epoch = 0
    while True:
        yield from make_dataset(data, cfg.batch, training=True, epoch=epoch)
        epoch += 1


def xla_step(model, optimizer, batch_size: int, frames: int, labels: int):
    """The whole training step compiled by XLA, on batches padded to ``batch_size`` items
    of ``frames`` x ``labels`` (one shape, one compilation; a padding item has one frame,
    no labels and no weight). Dense labels: the fused CTC kernel that training uses has no
    XLA version; ``tf.nn.ctc_loss`` with dense labels is TensorFlow ops that XLA compiles."""
    import tensorflow as tf

    variables = model.trainable_variables

    @tf.function(jit_compile=True)
    def step(features, feature_lengths, label_ids, label_lengths, weights):
        with tf.GradientTape() as tape:
            log_probs = model(features, feature_lengths, training=True)
            losses = tf.nn.ctc_loss(label_ids, log_probs, label_lengths,
                                    model.output_lengths(feature_lengths),
                                    logits_time_major=False, blank_index=0)
            loss = tf.reduce_sum(losses * weights) / tf.reduce_sum(weights)
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    def train_batch(batch):
        n = batch["features"].shape[0]
        more = [[0, batch_size - n]]
        return step(tf.pad(batch["features"], more + [[0, frames - batch["features"].shape[1]],
                                                      [0, 0]]),
                    tf.pad(batch["feature_lengths"], more, constant_values=1),
                    tf.pad(batch["labels"], more + [[0, labels - batch["labels"].shape[1]]]),
                    tf.pad(batch["label_lengths"], more),
                    tf.concat([tf.ones([n]), tf.zeros([batch_size - n])], 0))

    return train_batch


def measure(manifest: Path, variant: dict, batches: int, limit: int,
            shards: Path | None = None) -> dict:
    """Train ``batches`` batches of the first ``limit`` rows of ``manifest`` as ``variant``
    says (``overrides`` of the default config, ``source``, ``xla``), after 3 warm-up
    batches; ``shards``: the shard folder (default: beside the manifest)."""
    from speechrnn.config import load_pipeline_config
    from speechrnn.train import configure_threads

    cfg = load_pipeline_config(None, ["batch.batch_size=16", *variant.get("overrides", [])])
    configure_threads(cfg.train.intra_op_threads, cfg.train.inter_op_threads)
    from speechrnn.manifest import read_manifest
    from speechrnn.model import build_model
    from speechrnn.steps import Steps, make_optimizer
    from speechrnn.text import Alphabet

    data = training_input(read_manifest(manifest)[:limit], cfg,
                         variant.get("source", "memory"), shards or shard_folder(manifest, limit))
    model = build_model(cfg.model, cfg.features.n_features, Alphabet())
    optimizer = make_optimizer(cfg, 100)
    optimizer.build(model.trainable_variables)
    batches_of = epochs_of_batches(data, cfg)
    if variant.get("xla"):
        train_batch = xla_step(model, optimizer, cfg.batch.batch_size,
                               max(len(f) for f in data.features),
                               max(len(y) for y in data.labels))
    else:
        train_batch = Steps(model, optimizer, cfg.features.n_features).train_batch
    for _ in range(3):
        train_batch(next(batches_of))
    audio, waited, start = 0.0, 0.0, time.perf_counter()
    for _ in range(batches):
        ready = time.perf_counter()
        batch = next(batches_of)
        waited += time.perf_counter() - ready
        train_batch(batch)
        audio += float(batch["feature_lengths"].numpy().sum()) / cfg.features.frames_per_second
    seconds = time.perf_counter() - start
    import tensorflow as tf

    on_gpu = "GPU" in getattr(model.trainable_variables[0].value, "device", "").upper()
    return {"lstm_impl": model.lstm_impl, "gpu": on_gpu, "device": "GPU" if on_gpu else "CPU",
            "gpus_visible": len(tf.config.list_physical_devices("GPU")),
            "audio_s_per_s": round(audio / seconds, 1), "batches": batches,
            "input_wait_pct": round(100 * waited / seconds, 1),
            "audio_seconds": round(audio, 1), "parameters": model.count_params(),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def run_variant(manifest: Path, name: str, args, code: Path | None = None) -> dict | None:
    """One row in its own process: its result, or None (its error printed). ``code``: the
    tree of another revision, whose ``speechrnn`` the process imports instead of this one's."""
    env = dict(os.environ)
    if code is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(code), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--manifest",
                           str(manifest.resolve()), "--batches", str(args.batches), "--limit",
                           str(args.limit), "--variant", name], capture_output=True,
                          text=True, env=env, cwd=Path.cwd())
    if proc.returncode != 0:
        print(proc.stderr[-3000:], file=sys.stderr)
        return None
    return {"model": name, **json.loads(proc.stdout.strip().splitlines()[-1])}


def median_run(runs: list[dict]) -> dict:
    """The run of median speed among ``runs`` of one row."""
    return sorted(runs, key=lambda r: r["audio_s_per_s"])[len(runs) // 2]


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


def english_epochs(config: Path, speeds: dict[str, float]) -> dict | None:
    """Epochs of ``config``'s training set that its time budget holds at each of ``speeds``
    (audio-s/s), training passes only; None when its corpus is not prepared."""
    from speechrnn.config import load_pipeline_config
    from speechrnn.manifest import read_manifest

    cfg = load_pipeline_config(config)
    manifests = cfg.data.training_manifests()
    if not all(p.exists() for p in manifests):
        print(f"{config}: corpus not prepared (no {manifests[0]}), so no epochs row: run "
              f"pipelines/run.py --config {config} --stages prepare --corpora DIR")
        return None
    seconds = sum(r.duration for p in manifests for r in read_manifest(p))
    budget = cfg.train.time_budget_min * 60
    return {"config": str(config), "train_hours": round(seconds / 3600, 2),
            "time_budget_min": cfg.train.time_budget_min,
            "epochs": {name: round(budget * speed / seconds, 1)
                       for name, speed in speeds.items()}}


def main(argv=None) -> int:
    parser = training_arguments(__doc__, 12, "train_speed")
    parser.add_argument("--against", metavar="REV",
                        help="also train the default model with git revision REV's code")
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs of the default model in memory and streamed (and with "
                        "--against, of REV's), in turns; rows show the median run (default: 3)")
    parser.add_argument("--english", type=Path,
                        default=Path(__file__).resolve().parents[1] / "pipelines" / "configs"
                        / "english.yaml", help="the recipe whose epochs to estimate")
    parser.add_argument("--variant", help=argparse.SUPPRESS)  # child process mode
    args = parser.parse_args(argv)

    if args.variant is not None:
        print(json.dumps(measure(args.manifest, VARIANTS[args.variant], args.batches,
                                 args.limit)))
        return 0
    manifest = args.manifest or default_manifest(args.corpora)
    from speechrnn.config import load_pipeline_config
    from speechrnn.manifest import read_manifest

    training_input(read_manifest(manifest)[:args.limit], load_pipeline_config(None),
                   "shards", shard_folder(manifest, args.limit))  # extracted before timing
    # in turns, so that a machine whose speed drifts (a shared VM) slows both alike
    runs = {"default (stride 3)": [], "default, streamed": []}
    for _ in range(args.repeat):
        for name, done in runs.items():
            result = run_variant(manifest, name, args)
            if result is None:
                return 1
            done.append(result)
    streamed_each = sorted(s["audio_s_per_s"] / m["audio_s_per_s"]
                           for m, s in zip(*runs.values()))
    results = [median_run(done) for done in runs.values()]
    names = ["stride 1", "default, keras LSTM" if results[0]["lstm_impl"] == "scan"
             else "default, scan LSTM", "default, XLA step"]
    for name in names:
        result = run_variant(manifest, name, args)
        if result is None:
            return 1
        results.append(result)
    row = {r["model"]: r for r in results}
    default = row["default (stride 3)"]["audio_s_per_s"]
    speeds = {"this code": default}
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
        speeds = {"this code": sorted(n for n, _ in pairs)[len(pairs) // 2],
                  args.against: sorted(o for _, o in pairs)[len(pairs) // 2]}
        against = {"revision": args.against, "pairs_audio_s_per_s": pairs,
                   "speedup_each": [round(r, 2) for r in ratios],
                   "speedup": round(median, 2)}
    other = row.get("default, keras LSTM") or row["default, scan LSTM"]
    lstm = {r["lstm_impl"]: r["audio_s_per_s"] for r in (row["default (stride 3)"], other)}
    streamed = round(streamed_each[len(streamed_each) // 2], 2)
    report = {"benchmark": "train_speed", "input": str(manifest), "batch_size": 16,
              "results": results, "target_audio_s_per_s": TARGET,
              "gpu": results[0]["gpu"], "default_lstm_impl": results[0]["lstm_impl"],
              "stride3_over_stride1": round(default / row["stride 1"]["audio_s_per_s"], 2),
              "keras_over_scan": round(lstm["keras"] / lstm["scan"], 2),
              "streamed_over_memory": streamed,
              "streamed_over_memory_each": [round(r, 2) for r in streamed_each],
              "xla_over_default": round(row["default, XLA step"]["audio_s_per_s"] / default, 2),
              "meets_target": default >= TARGET and streamed >= TARGET_STREAMED,
              "against": against, "english": english_epochs(args.english, speeds)}
    print(f"training speed, batch 16, on {manifest}")
    print_table([("model", "model", 22), ("lstm_impl", "lstm", 7), ("device", "device", 8),
                 ("parameters", "params", 12), ("audio_s_per_s", "audio-s/s", 12),
                 ("input_wait_pct", "input wait %", 13), ("peak_rss_mb", "peak RSS MB", 13)],
                results)
    print(f"streamed / in memory: {streamed:.2f}x (median of {args.repeat} pairs in turns: "
          f"{', '.join(f'{r:.2f}x' for r in streamed_each)})   stride 3 / stride 1: "
          f"{report['stride3_over_stride1']:.2f}x   keras LSTM / scan LSTM: "
          f"{report['keras_over_scan']:.2f}x   XLA / default: {report['xla_over_default']:.2f}x"
          f"   (targets: default >= {TARGET:.0f} audio-s/s, streamed >= {TARGET_STREAMED}x)")
    if against:
        print(f"default model: {against['speedup']:.2f}x the speed of {args.against} (median "
              f"of {args.repeat} runs each, in turns: "
              f"{', '.join(f'{r:.2f}x' for r in against['speedup_each'])})")
    if report["english"]:
        e = report["english"]
        print(f"{Path(e['config']).name}: {e['train_hours']} h of training audio, "
              f"{e['time_budget_min']} min budget: " + ", ".join(
                  f"{n} {v} epochs" for n, v in e["epochs"].items()) +
              " (training passes only)")
    write_report(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

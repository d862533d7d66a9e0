"""Scale-out: memory against corpus size, feature-shard extraction and multi-worker training.

    python bench/scale.py [--utterances 240] [--factor 8] [--json bench/results/scale.json]

On the synthetic corpus (espeak-ng/flite voices, built offline under data/bench/scale):

- peak RSS of a training process (one epoch of the default model) that streams its
  features from shards (``batch.source: shards``), on the corpus and on ``--factor`` times
  it (every training utterance listed that many times); the same with every feature in
  memory (``batch.source: memory``), for comparison. Target: shards 8x / 1x <= 1.3;
- feature-shard extraction speed (audio-s/s) of the larger corpus with 1 and 2 processes
  (one: in this process; two: spawned workers, whose start-up is part of the time);
- training speed (audio-s/s) of one epoch of the larger corpus with one process and with
  two local worker processes (``MultiWorkerMirroredStrategy`` on 127.0.0.1): on 2 CPU
  cores expect no speed-up; the row shows that the multi-worker path runs;
- whether TensorFlow saw a GPU.

Each training runs in a process of its own so that each peak RSS is its own. Prints a table
and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("SPEECHRNN_PROGRESS", "0")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from report import print_table, write_report  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WORK = Path("data/bench/scale")
TARGET_RSS_RATIO = 1.3

TRAIN_CHILD = """
import json, resource, sys
from speechrnn import pipeline
from speechrnn.config import load_pipeline_config
cfg = load_pipeline_config(sys.argv[1])
result = pipeline.train(cfg, fresh=True, track=False, progress=False)
print(json.dumps({"audio_s_per_s": result.history[-1]["train_audio_s_per_s"],
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def corpus(utterances: int, factor: int) -> dict[str, Path]:
    """The synthetic corpus (train + dev) and a copy of it whose train manifest lists every
    utterance ``factor`` times: {"x1": data.out, "x<factor>": data.out}."""
    from dataclasses import replace

    from speechrnn import pipeline
    from speechrnn.config import Config, DataConfig
    from speechrnn.manifest import read_manifest, write_manifest

    base = WORK / "x1"
    cfg = Config(data=DataConfig(kind="synth", out=str(base), synth_train=utterances,
                                 synth_dev=max(8, utterances // 12), synth_test=8))
    pipeline.prepare(cfg, progress=False)
    big = WORK / f"x{factor}"
    rows = read_manifest(cfg.data.manifest("train"))
    write_manifest(big / "train.jsonl", [replace(r, id=f"{r.id}-{k}") for k in range(factor)
                                         for r in rows])
    write_manifest(big / "dev.jsonl", read_manifest(cfg.data.manifest("dev")))
    write_manifest(big / "test.jsonl", read_manifest(cfg.data.manifest("test")))
    return {"x1": base, f"x{factor}": big}


def write_config(name: str, out: Path, source: str, **train) -> Path:
    import yaml

    path = WORK / "configs" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({
        "name": name,
        "data": {"kind": "synth", "out": str(out), "cache": "",
                 "shards": str(WORK / "shards" / out.name)},
        "batch": {"source": source},
        "train": {"epochs": 1, "workdir": str(WORK / "runs" / name), **train},
        "tracking": {"enabled": False}}))
    return path


def train_child(config: Path, extra: list[str] | None = None, env: dict | None = None):
    return subprocess.Popen([sys.executable, "-c", TRAIN_CHILD, str(config), *(extra or [])],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)


def finish(proc) -> dict:
    out, _ = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"a training process failed (exit {proc.returncode})")
    return json.loads(out.strip().splitlines()[-1])


def extraction_speed(out: Path, workers: int) -> dict:
    """Extract the training manifest's features into fresh shards (no feature cache)."""
    from speechrnn.manifest import read_manifest
    from speechrnn.shards import ShardSpec, build_shards

    rows = read_manifest(out / "train.jsonl")
    folder = WORK / "extract" / f"workers{workers}"
    shutil.rmtree(folder, ignore_errors=True)
    start = time.perf_counter()
    index = build_shards(rows, folder, ShardSpec(stride=3, shard_minutes=1.0),
                         workers=workers, progress=False)
    seconds = time.perf_counter() - start
    return {"case": f"extract shards, {out.name}, {workers} process{'es' if workers > 1 else ''}",
            "audio_s_per_s": round(index.seconds / seconds, 1),
            "audio_hours": round(index.hours, 3), "peak_rss_mb": "", "shards": len(index.files)}


def two_workers(config: Path) -> dict:
    env = {**os.environ}
    env.pop("TF_CONFIG", None)
    from speechrnn.distribute import local_workers

    cluster = local_workers(2)
    procs = []
    for i in (0, 1):
        env_i = {**env, "TF_CONFIG": json.dumps({"cluster": {"worker": cluster},
                                                 "task": {"type": "worker", "index": i}})}
        procs.append(train_child(config, env=env_i))
    results = [finish(p) for p in procs]
    return {**results[0], "peak_rss_mb": max(r["peak_rss_mb"] for r in results)}


def gpu_seen() -> bool:
    proc = subprocess.run([sys.executable, "-c", "import tensorflow as tf; "
                           "print(len(tf.config.list_physical_devices('GPU')))"],
                          capture_output=True, text=True)
    return proc.returncode == 0 and proc.stdout.strip().splitlines()[-1] != "0"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--utterances", type=int, default=240,
                        help="synthetic training utterances of the 1x corpus")
    parser.add_argument("--factor", type=int, default=8)
    parser.add_argument("--json", type=Path, default=Path("bench/results/scale.json"))
    args = parser.parse_args(argv)

    outs = corpus(args.utterances, args.factor)
    big = f"x{args.factor}"
    rows = []
    for source in ("shards", "memory"):
        for size, out in outs.items():
            config = write_config(f"{source}-{size}", out, source)
            if source == "shards":  # extracted before: the training process only streams
                from speechrnn import pipeline
                from speechrnn.config import load_pipeline_config

                pipeline.extract_features(load_pipeline_config(config), progress=False)
            result = finish(train_child(config))
            rows.append({"case": f"train, {source}, {size}", **result,
                         "peak_rss_mb": round(result["peak_rss_mb"])})
            print(f"{rows[-1]['case']}: {rows[-1]['peak_rss_mb']} MB peak RSS", flush=True)
    rss = {r["case"]: r["peak_rss_mb"] for r in rows}
    ratio = {s: round(rss[f"train, {s}, {big}"] / rss[f"train, {s}, x1"], 3)
             for s in ("shards", "memory")}
    for workers in (1, 2):  # on the larger corpus: process start-up is then a small part
        rows.append(extraction_speed(outs[big], workers))
    one = next(r for r in rows if r["case"] == f"train, shards, {big}")
    pair = two_workers(write_config(f"workers-{big}", outs[big], "shards"))
    rows.append({"case": f"train, shards, {big}, 2 local workers", **pair,
                 "peak_rss_mb": round(pair["peak_rss_mb"])})
    gpu = gpu_seen()
    for r in rows:
        r["audio_s_per_s"] = round(r["audio_s_per_s"], 1)
    report = {"benchmark": "scale", "utterances": args.utterances, "factor": args.factor,
              "rows": rows, "rss_ratio": ratio, "target_rss_ratio": TARGET_RSS_RATIO,
              "meets_target": ratio["shards"] <= TARGET_RSS_RATIO,
              "two_workers_over_one": round(pair["audio_s_per_s"] / one["audio_s_per_s"], 2),
              "gpu": gpu, "bench_peak_rss_mb": round(
                  resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}
    print()
    print_table([("case", "case", 34), ("audio_s_per_s", "audio-s/s", 12),
                 ("peak_rss_mb", "peak RSS MB", 14)], rows)
    print(f"peak RSS {big} / x1: shards {ratio['shards']:.2f} (target <= "
          f"{TARGET_RSS_RATIO}), memory {ratio['memory']:.2f};  2 workers / 1: "
          f"{report['two_workers_over_one']:.2f}x;  GPU: {'yes' if gpu else 'no'}")
    write_report(args.json, report)
    return 0 if report["meets_target"] else 1


if __name__ == "__main__":
    sys.exit(main())

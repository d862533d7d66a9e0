"""Where a training step's time goes: each part of the default model's step, timed alone.

    python bench/train_profile.py [--manifest M | --corpora DIR] [--batches 20] [--json OUT]

Parts, each compiled as training compiles it and run on the same batches (batch 16, the
first 400 utterances of the speechocean762 train set unless ``--manifest``): the input
pipeline (in memory), the network's forward pass, forward + CTC loss, forward + loss +
gradients (the backward pass is the difference), the optimizer's update, and the whole
step as training runs it. Milliseconds per batch after 4 warm-up batches.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("SPEECHRNN_PROGRESS", "0")
sys.path.insert(0, str(Path(__file__).parent))
from report import print_table, write_report  # noqa: E402
from train_speed import default_manifest, training_arguments  # noqa: E402

WARMUP = 4


def profile(manifest: Path, batches: int, limit: int) -> dict:
    from speechrnn.config import load_pipeline_config
    from speechrnn.train import configure_threads

    cfg = load_pipeline_config(None, ["batch.batch_size=16"])
    configure_threads(cfg.train.intra_op_threads, cfg.train.inter_op_threads)
    import tensorflow as tf

    from speechrnn.dataset import load_examples, make_dataset
    from speechrnn.features import FeatureExtractor
    from speechrnn.manifest import read_manifest
    from speechrnn.model import build_model
    from speechrnn.steps import Steps, ctc_losses, make_optimizer
    from speechrnn.text import Alphabet

    examples = load_examples(read_manifest(manifest)[:limit], FeatureExtractor(cfg.features),
                             Alphabet(), subsampling=cfg.model.stride)
    model = build_model(cfg.model, cfg.features.n_features, Alphabet())
    optimizer = make_optimizer(cfg, 100)
    optimizer.build(model.trainable_variables)
    steps = Steps(model, optimizer, cfg.features.n_features)
    data = iter(make_dataset(examples, cfg.batch, training=True).repeat())
    start = time.perf_counter()
    held = [next(data) for _ in range(WARMUP + batches)]
    input_ms = 1000 * (time.perf_counter() - start) / len(held)
    items = [{k: b[k] for k in ("features", "feature_lengths", "labels", "label_lengths")}
             for b in held]

    @tf.function(reduce_retracing=True)
    def forward(b):
        return model(b["features"], b["feature_lengths"], training=True)

    @tf.function(reduce_retracing=True)
    def loss(b):
        log_probs = model(b["features"], b["feature_lengths"], training=True)
        return tf.reduce_sum(ctc_losses(log_probs, model.output_lengths(b["feature_lengths"]),
                                        b["labels"], b["label_lengths"]))

    global_n = tf.constant(16.0)
    grads = steps.gradients(items[0], global_n)[1]
    parts = {"forward": lambda b, i: forward(b).numpy(),
             "forward + CTC loss": lambda b, i: loss(b).numpy(),
             "forward + loss + gradients": lambda b, i: steps.gradients(b, global_n)[0].numpy(),
             "optimizer update": lambda b, i: steps.apply(grads),
             "whole step (train_batch)": lambda b, i: steps.train_batch(held[i])}
    rows = [{"part": "input pipeline, in memory", "ms_per_batch": round(input_ms, 1)}]
    for name, run in parts.items():
        for i, b in enumerate(items[:WARMUP]):
            run(b, i)
        start = time.perf_counter()
        for i, b in enumerate(items[WARMUP:], WARMUP):
            run(b, i)
        rows.append({"part": name,
                     "ms_per_batch": round(1000 * (time.perf_counter() - start) / batches, 1)})
    ms = {r["part"]: r["ms_per_batch"] for r in rows}
    rows.insert(4, {"part": "backward pass (difference)", "ms_per_batch": round(
        ms["forward + loss + gradients"] - ms["forward + CTC loss"], 1)})
    audio = sum(float(b["feature_lengths"].numpy().sum()) for b in held[WARMUP:]) / \
        cfg.features.frames_per_second
    step_s = ms["whole step (train_batch)"] * batches / 1000
    for r in rows:
        r["share"] = round(100 * r["ms_per_batch"] / ms["whole step (train_batch)"], 1)
    return {"rows": rows, "audio_s_per_s": round(audio / step_s, 1)}


def main(argv=None) -> int:
    args = training_arguments(__doc__, 20, "train_profile").parse_args(argv)
    manifest = args.manifest or default_manifest(args.corpora)
    result = profile(manifest, args.batches, args.limit)
    print(f"one training step, default model, batch 16, on {manifest}")
    print_table([("part", "part", 30), ("ms_per_batch", "ms/batch", 10),
                 ("share", "% of step", 11)], result["rows"])
    print(f"training: {result['audio_s_per_s']:.1f} audio-s/s")
    write_report(args.json, {"benchmark": "train_profile", "input": str(manifest),
                             "batch_size": 16, **result})
    return 0


if __name__ == "__main__":
    sys.exit(main())

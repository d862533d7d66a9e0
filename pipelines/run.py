"""Run the whole pipeline for a config: prepare -> train -> evaluate -> transcribe.

    python pipelines/run.py [--config pipelines/configs/synth.yaml] [--corpora DIR]
                            [--set key.sub=value ...] [--stages prepare,train,...] [--fresh]

prepare: import or synthesise the corpus and print its statistics. train: train (or resume)
the model, tracked in MLflow and registered. evaluate: WER/CER on the test manifest,
greedy and beam search with the recipe's word LM (training transcripts and eval.lm_text),
its weight and word bonus chosen on dev when eval.tune_* list values to try, then saved with
the model as its default decoding (and registered again); the reports are logged to the
training run. transcribe: one held-out test file, with word timings. The
default config needs no network and no corpus: synthetic voices, held out by voice.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from speechrnn import pipeline
from speechrnn.config import load_pipeline_config
from speechrnn.errors import SpeechRNNError
from speechrnn.manifest import format_stats, manifest_stats, read_manifest
from speechrnn.tracking import experiment_name

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "synth.yaml"
STAGES = ("prepare", "train", "evaluate", "transcribe")


def stage(name: str) -> float:
    print(f"\n== {name}", flush=True)
    return time.time()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a config value (repeatable)")
    parser.add_argument("--sets", default="", help="overrides as one space-separated string "
                        "(for MLproject parameters)")
    parser.add_argument("--corpora", default=None,
                        help="folder holding the corpora (or SPEECHRNN_CORPORA)")
    parser.add_argument("--stages", default=",".join(STAGES),
                        help=f"comma-separated, from {', '.join(STAGES)}")
    parser.add_argument("--fresh", action="store_true", help="train from scratch")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = set(stages) - set(STAGES)
    if unknown:
        parser.error(f"unknown stages {sorted(unknown)}; choose from {', '.join(STAGES)}")
    try:
        cfg = load_pipeline_config(args.config, args.overrides + args.sets.split())
        return run(cfg, stages, args)
    except SpeechRNNError as err:
        print(f"run.py: error: {err}", file=sys.stderr)
        return 2


def run(cfg, stages: list[str], args) -> int:
    progress = False if args.quiet else None
    data = cfg.data
    started = time.time()

    if "prepare" in stages:
        t0 = stage(f"prepare {cfg.name}: {data.kind} -> {data.out}")
        result = pipeline.prepare(cfg, args.corpora or None, progress=progress)
        print(f"{'built' if result else 'already there'} ({time.time() - t0:.0f} s)")
        for split in ("train", "dev", "test"):
            print(format_stats(split, manifest_stats(read_manifest(data.manifest(split)))))
        for path, weight in data.training_sets()[1:]:
            stats = manifest_stats(read_manifest(path))
            print(f"also trained on {path} (weight {weight:g}): {stats['utterances']} "
                  f"utterances, {stats['hours']:.2f} h, {stats['speakers']} speakers")

    model_dir = cfg.model_dir
    if "train" in stages:
        t0 = stage("train")
        result = pipeline.train(cfg, fresh=args.fresh, progress=progress,
                                corpora=args.corpora)
        model_dir = result.model_dir
        print(f"trained in {(time.time() - t0) / 60:.1f} min: best dev WER "
              f"{100 * result.best_wer:.1f} % (epoch {result.best_epoch + 1}); {model_dir}")

    run_id = None
    if (model_dir / "mlflow.json").exists():
        run_id = json.loads((model_dir / "mlflow.json").read_text()).get("run_id")

    if "evaluate" in stages:
        stage(f"evaluate on {data.manifest('test')}")
        decodings = {"greedy": pipeline.recipe_decoding(cfg, "greedy"),
                     "beam": pipeline.recipe_decoding(cfg, "beam", args.corpora)}
        if cfg.eval.tuning and decodings["beam"].lm is not None:
            decodings["beam"], table = pipeline.tune_lm(
                model_dir, data.manifest("dev"), decodings["beam"], cfg.eval.tuning,
                run_id=run_id, out=model_dir.parent, progress=progress,
                speaker_cmvn=cfg.eval.speaker_cmvn)
            best = decodings["beam"].options
            print(f"LM weight {best.lm_weight:g}, word bonus {best.word_bonus:g}: chosen on "
                  f"dev among {len(table)} pairs (dev WER {100 * min(r['wer'] for r in table):.1f}"
                  f" %; table in {model_dir.parent / 'lm_tuning.tsv'})")
        if decodings["beam"].lm is not None:
            pipeline.bundle(cfg, decodings["beam"], run_id)
            print(f"beam {decodings['beam'].options.beam_width} + word LM saved with the model "
                  f"(decoding.json, lm.arpa): transcribe and serve decode that way"
                  + (" (registered again as a new version)" if run_id and cfg.tracking.enabled
                     else ""))
        for name in ("test", *cfg.eval.extra_sets):
            for decoding in decodings.values():
                tag = "" if name == "test" else f"-{name}"
                out = model_dir.parent / f"eval{tag}-{decoding.name.replace('_', '-')}"
                report = pipeline.evaluate(model_dir, data.manifest(name), decoding, out=out,
                                           run_id=run_id, name=name, progress=progress,
                                           speaker_cmvn=cfg.eval.speaker_cmvn)
                per = report.rates.per
                print(f"{name} ({decoding.describe()}): WER {100 * report.rates.wer:.1f} %  CER "
                      f"{100 * report.rates.cer:.1f} %  "
                      + (f"PER {100 * per:.1f} %  " if per is not None else "")
                      + f"({report.rates.utterances} utterances; report in {out})")

    if "transcribe" in stages:
        stage("transcribe one held-out test file")
        row = read_manifest(data.manifest("test"))[0]
        (result,) = pipeline.transcribe(model_dir, [row.audio], progress=False)
        print(f"file:       {row.audio}\nreference:  {row.text}\nhypothesis: {result.text}")
        print("words:      " + " ".join(f"{w.word}[{w.start:.2f}-{w.end:.2f}]"
                                        for w in result.words))

    print(f"\n== done in {(time.time() - started) / 60:.1f} min")
    if run_id:
        print(f"browse the run: .venv/bin/speechrnn ui, then open http://127.0.0.1:5000 "
              f"(experiment {experiment_name(cfg)}, run {run_id})")
        print(f"transcribe:     .venv/bin/speechrnn transcribe --model {model_dir} FILE...")
        print(f"serve:          .venv/bin/speechrnn serve --model {model_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

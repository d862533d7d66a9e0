"""A recipe end to end: prepare -> train -> evaluate -> transcribe, for one :class:`Config`.

What ``pipelines/run.py``, ``speechrnn run``, the MLproject's entry points and the
benchmarks run (:func:`run_recipe`), stage by stage:

- **prepare**: import or synthesise the corpus and print its statistics;
- **train**: train (or resume) the model, tracked in MLflow and registered;
- **evaluate**: WER/CER (and a phone model's PER) on the test manifest and
  ``eval.extra_sets``, greedy and with beam search + the recipe's word LM (training
  transcripts and ``eval.lm_text``); the LM weight and word bonus are chosen on dev when
  ``eval.tune_*`` list values to try, and that beam search is saved with the model as its
  default decoding (registered again). Reports go to the work directory and the training's
  MLflow run;
- **transcribe**: one held-out test file, with word timings.

Each stage prints what it did through ``say`` (``print`` by default).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import pipeline
from .config import Config, ConfigError
from .manifest import format_stats, manifest_stats, read_manifest
from .tracking import experiment_name

STAGES = ("prepare", "train", "evaluate", "transcribe")

__all__ = ["STAGES", "RecipeResult", "run_recipe"]


@dataclass
class RecipeResult:
    model_dir: Path
    run_id: str | None = None  # the training's MLflow run
    training: object = None  # a speechrnn.train.TrainResult, when the train stage ran
    # evaluate: set name ("test", extra sets) -> decoding name ("greedy", "beam_lm") -> Report
    reports: dict = field(default_factory=dict)
    transcript: object = None  # the transcribe stage's Transcript
    minutes: float = 0.0


def _print(text: str) -> None:
    print(text, flush=True)


def run_recipe(cfg: Config, stages: Sequence[str] = STAGES, corpora: str | None = None,
               fresh: bool = False, progress: bool | None = None,
               sets: Sequence[str] | None = None,
               say: Callable[[str], None] = _print) -> RecipeResult:
    """Run ``stages`` of the recipe ``cfg`` (see the module docstring). ``corpora``: the
    folder the corpora and LM text are found under. ``fresh``: train from scratch.
    ``sets``: the manifests the evaluate stage scores (None: test and
    ``eval.extra_sets``)."""
    unknown = set(stages) - set(STAGES)
    if unknown:
        raise ConfigError(f"unknown stages {sorted(unknown)}; choose from {', '.join(STAGES)}")
    started = time.time()
    result = RecipeResult(cfg.model_dir)
    if "prepare" in stages:
        prepare_stage(cfg, corpora, progress, say)
    if "train" in stages:
        result.training = train_stage(cfg, corpora, fresh, progress, say)
        result.model_dir = result.training.model_dir
    result.run_id = _run_id(result.model_dir) if cfg.tracking.enabled else None
    if "evaluate" in stages:
        result.reports = evaluate_stage(cfg, result.model_dir, result.run_id, corpora,
                                        progress, say, sets)
    if "transcribe" in stages:
        result.transcript = transcribe_stage(cfg, result.model_dir, say)
    result.minutes = (time.time() - started) / 60
    say(f"\n== done in {result.minutes:.1f} min")
    if result.run_id:
        say(f"browse the run: .venv/bin/speechrnn ui, then open http://127.0.0.1:5000 "
            f"(experiment {experiment_name(cfg)}, run {result.run_id})\n"
            f"transcribe:     .venv/bin/speechrnn transcribe --model {result.model_dir} FILE...\n"
            f"serve:          .venv/bin/speechrnn serve --model {result.model_dir}")
    return result


def _stage(say, name: str) -> float:
    say(f"\n== {name}")
    return time.time()


def _run_id(model_dir: Path) -> str | None:
    """The MLflow run a trained model was logged to (its ``mlflow.json``), if any."""
    info = Path(model_dir) / "mlflow.json"
    return json.loads(info.read_text()).get("run_id") if info.exists() else None


def prepare_stage(cfg: Config, corpora, progress, say) -> None:
    data = cfg.data
    t0 = _stage(say, f"prepare {cfg.name}: {data.kind} -> {data.out}")
    built = pipeline.prepare(cfg, corpora or None, progress=progress)
    say(f"{'built' if built else 'already there'} ({time.time() - t0:.0f} s)")
    for split in ("train", "dev", "test"):
        say(format_stats(split, manifest_stats(read_manifest(data.manifest(split)))))
    for path, weight in data.training_sets()[1:]:
        stats = manifest_stats(read_manifest(path))
        say(f"also trained on {path} (weight {weight:g}): {stats['utterances']} "
            f"utterances, {stats['hours']:.2f} h, {stats['speakers']} speakers")


def train_stage(cfg: Config, corpora, fresh: bool, progress, say):
    t0 = _stage(say, "train")
    result = pipeline.train(cfg, fresh=fresh, progress=progress, corpora=corpora)
    say(f"trained in {(time.time() - t0) / 60:.1f} min: best dev WER "
        f"{100 * result.best_wer:.1f} % (epoch {result.best_epoch + 1}); {result.model_dir}")
    return result


def recipe_decodings(cfg: Config, model_dir: Path, run_id, corpora, progress, say) -> dict:
    """Greedy, and beam search with the recipe's word LM: its weight and word bonus chosen
    on dev when the recipe lists values to try, then saved with the model."""
    decodings = {"greedy": pipeline.recipe_decoding(cfg, "greedy"),
                 "beam": pipeline.recipe_decoding(cfg, "beam", corpora)}
    if cfg.eval.tuning and decodings["beam"].lm is not None:
        decodings["beam"], table = pipeline.tune_lm(
            model_dir, cfg.data.manifest("dev"), decodings["beam"], cfg.eval.tuning,
            run_id=run_id, out=model_dir.parent, progress=progress,
            speaker_cmvn=cfg.eval.speaker_cmvn, tracking_uri=cfg.tracking.uri)
        best = decodings["beam"].options
        say(f"LM weight {best.lm_weight:g}, word bonus {best.word_bonus:g}: chosen on dev "
            f"among {len(table)} pairs (dev WER {100 * min(r['wer'] for r in table):.1f} %; "
            f"table in {model_dir.parent / 'lm_tuning.tsv'})")
    if decodings["beam"].lm is not None:
        pipeline.bundle(cfg, decodings["beam"], run_id)
        say(f"beam {decodings['beam'].options.beam_width} + word LM saved with the model "
            f"(inference.json, lm.arpa): transcribe and serve decode that way"
            + (" (registered again as a new version)" if run_id and cfg.tracking.enabled
               else ""))
    return decodings


def evaluate_stage(cfg: Config, model_dir: Path, run_id, corpora, progress, say,
                   sets: Sequence[str] | None = None) -> dict:
    """Score ``sets`` (None: test and ``eval.extra_sets``) with each of
    :func:`recipe_decodings`; the reports by set and decoding."""
    _stage(say, f"evaluate on {cfg.data.manifest('test')}")
    decodings = recipe_decodings(cfg, model_dir, run_id, corpora, progress, say)
    reports: dict = {}
    for name in sets if sets is not None else ("test", *cfg.eval.extra_sets):
        for decoding in decodings.values():
            tag = "" if name == "test" else f"-{name}"
            out = model_dir.parent / f"eval{tag}-{decoding.name.replace('_', '-')}"
            report = pipeline.evaluate(model_dir, cfg.data.manifest(name), decoding, out=out,
                                       run_id=run_id, name=name, progress=progress,
                                       speaker_cmvn=cfg.eval.speaker_cmvn,
                                       tracking_uri=cfg.tracking.uri)
            reports.setdefault(name, {})[decoding.name] = report
            per = report.rates.per
            say(f"{name} ({decoding.describe()}): WER {100 * report.rates.wer:.1f} %  CER "
                f"{100 * report.rates.cer:.1f} %  "
                + (f"PER {100 * per:.1f} %  " if per is not None else "")
                + f"({report.rates.utterances} utterances; report in {out})")
    return reports


def transcribe_stage(cfg: Config, model_dir: Path, say):
    _stage(say, "transcribe one held-out test file")
    row = read_manifest(cfg.data.manifest("test"))[0]
    (result,) = pipeline.transcribe(model_dir, [row.audio], progress=False)
    say(f"file:       {row.audio}\nreference:  {row.text}\nhypothesis: {result.text}")
    say("words:      " + " ".join(f"{w.word}[{w.start:.2f}-{w.end:.2f}]"
                                  for w in result.words))
    return result

"""The pipeline as a library: prepare -> train -> evaluate -> transcribe.

    from speechrnn import pipeline
    from speechrnn.config import load_pipeline_config

    cfg = load_pipeline_config("pipelines/configs/synth.yaml", ["train.epochs=5"])
    pipeline.prepare(cfg)                  # manifests: imported or synthesised, once
    result = pipeline.train(cfg)           # trains or resumes; tracked unless switched off
    report = pipeline.evaluate(result.model_dir, cfg.data.manifest("test"),
                               pipeline.recipe_decoding(cfg, "beam"))
    for t in pipeline.transcribe(result.model_dir, ["a.wav", "b.flac"]):
        print(t.source, t.text)

The ``speechrnn`` command, ``pipelines/run.py`` and ``bench/`` all call these functions.
Importing this module loads neither TensorFlow nor MLflow: each stage loads what it needs.
"""

from __future__ import annotations

import contextlib
import glob
import json
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from .audio import AUDIO_SUFFIXES, AudioError
from .checkpoint import latest_state
from .config import Config
from .corpora import prepare_data
from .decoding import Decoding
from .distribute import Cluster
from .errors import InputError
from .evaluate import ErrorRates, UtteranceScore, evaluate_model, search_lm_weights
from .files import atomic_write_text
from .inference import save_decoding
from .lexicon import recipe_targets
from .manifest import read_manifest
from .progress import progress_bar
from .report import write_report
from .tracking import experiment_name, make_tracker
from .vad import VadOptions
from .warmstart import check_first_stage

__all__ = ["Decoding", "Report", "bundle", "evaluate", "extract_features", "find_audio", "load",
           "prepare", "recipe_decoding", "train", "transcribe", "tune_lm"]


def prepare(cfg: Config, corpora: str | Path | None = None, force: bool = False,
            progress: bool | None = None):
    """Build the manifests ``cfg.data`` names (import a corpus, or synthesise one), unless
    they are already there and built with the same settings. Returns the import result,
    or None when nothing had to be built. ``corpora``: the folder that holds the corpora
    (else ``$SPEECHRNN_CORPORA``)."""

    return prepare_data(cfg.data, corpora, force=force, progress=progress,
                        ctc_frames_per_second=cfg.ctc_frames_per_second)


def extract_features(cfg: Config, workers: int | None = None, progress: bool | None = None,
             corpora: str | Path | None = None) -> dict:
    """Extract the features of the train and dev manifests (:func:`prepare` them first)
    into TFRecord shards under ``cfg.data.shard_dir()`` (``train``, ``dev``), in ``workers``
    processes (None: every core), unless current shards are there; what training with
    ``batch.source: shards`` streams. Returns ``{"train": ShardIndex, "dev": ShardIndex}``
    (:class:`speechrnn.shards.ShardIndex`: items, hours, files, skipped). Loads no
    TensorFlow. A phone model's lexicon (:func:`speechrnn.lexicon.recipe_lexicon`, its LM
    text under ``corpora``) spells the labels."""
    from .shards import config_shards

    alphabet, aux = recipe_targets(cfg, corpora, progress is not False)
    return config_shards(cfg, workers=workers, progress=progress, alphabet=alphabet, aux=aux)


def train(cfg: Config, fresh: bool = False, track: bool = True, progress: bool | None = None,
          tracker=None, corpora: str | Path | None = None):
    """Train (or resume) the model ``cfg`` describes; a :class:`speechrnn.train.TrainResult`.
    Tracked in MLflow when ``tracking.enabled`` and ``track`` (or into ``tracker``), by the
    chief alone when several workers train together. A first stage (``train.init_from``
    naming a recipe) is prepared and trained first unless it has finished or this stage
    has begun (``fresh`` starts this stage over, not that one)."""
    from .train import train as run

    begun = not fresh and latest_state(cfg.workdir) is not None  # resumes on its own
    stages = [] if begun else cfg.first_stages()  # the chain checked before anything trains
    if stages:
        first = stages[0]
        if not check_first_stage(cfg, first):
            print(f"first stage: {cfg.train.init_from} ({first.workdir})", flush=True)
            prepare(first, corpora, progress=progress)
            train(first, track=track, progress=progress, corpora=corpora)
            print(f"second stage: {cfg.name}, from the weights of {first.model_dir}",
                  flush=True)
    track = track and Cluster.from_env().is_chief  # the others never touch the store
    return run(cfg, tracker or make_tracker(cfg, enabled=track), fresh=fresh,
               progress=progress, corpora=corpora)


def recipe_decoding(cfg: Config, method: str = "beam",
                    corpora: str | Path | None = None) -> Decoding:
    """How a recipe's evaluate stage decodes: ``greedy``, or ``beam`` with the width, LM
    weight and word bonus of its ``eval`` section and its word LM
    (:func:`speechrnn.lm_build.recipe_lm`: the training transcripts and ``eval.lm_text``, or
    ``eval.lm_arpa``)."""
    return Decoding.for_recipe(cfg, method, corpora)


def tune_lm(model, manifest: str | Path, decoding: Decoding, pairs, *,
            run_id: str | None = None, out: str | Path | None = None,
            backend: str = "auto", progress: bool | None = None,
            speaker_cmvn: bool | None = None,
            tracking_uri: str | None = None) -> tuple[Decoding, list]:
    """The LM weight and word bonus of beam search chosen on ``manifest`` (dev, never
    test) among ``pairs``: ``decoding`` with the best of them, and the table of every pair
    tried. ``out``: the table is written there as ``lm_tuning.tsv``; ``run_id``: the chosen
    values are logged as metrics (``dev_tuned_lm_weight``, ``dev_tuned_word_bonus``) and
    the table as an artifact of that MLflow run (in the store ``tracking_uri``, else
    ``$MLFLOW_TRACKING_URI`` or the project's)."""

    transcriber = load(model, decoding, backend, speaker_cmvn=speaker_cmvn)
    options, table = search_lm_weights(transcriber, read_manifest(manifest), list(pairs), progress)
    files = []
    if out is not None:
        path = Path(out) / "lm_tuning.tsv"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, "lm_weight\tword_bonus\twer\tcer\n" + "".join(
            f"{r['lm_weight']:g}\t{r['word_bonus']:g}\t{r['wer']:.4f}\t{r['cer']:.4f}\n"
            for r in table))
        files.append(path)
    if run_id:
        from .tracking.runs import log_to_run

        log_to_run(run_id, {"dev_tuned_lm_weight": options.lm_weight,
                            "dev_tuned_word_bonus": options.word_bonus,
                            "dev_tuned_wer": min(r["wer"] for r in table)}, files, "evaluation",
                   tracking_uri)
    return replace(decoding, options=options), table


def bundle(cfg: Config, decoding: Decoding, run_id: str | None = None) -> list[Path]:
    """Make ``decoding`` (a recipe's beam search, LM and dev-tuned weights) the default of
    its trained model: written into the model directory
    (:func:`speechrnn.inference.save_decoding`: ``inference.json``, ``lm.arpa``), so that
    ``speechrnn transcribe`` and ``serve`` use it unasked. With ``run_id`` (tracking on),
    the model is logged to that run again, with it, and registered as a new version under
    the same name; ``mlflow.json`` then names that version. Returns the files written."""

    model_dir = cfg.model_dir
    files = save_decoding(model_dir, decoding)
    if run_id and cfg.tracking.enabled:
        from .tracking.runs import log_model_to_run

        info = log_model_to_run(run_id, model_dir,
                                cfg.tracking.register_as or experiment_name(cfg),
                                cfg.tracking.uri)
        atomic_write_text(model_dir / "mlflow.json", json.dumps({"run_id": run_id, **info}) +
                          "\n")
    return files


def load(model, decoding: Decoding | None = None, backend: str = "auto", vad: bool = True,
         speaker_cmvn: bool | None = None):
    """A :class:`speechrnn.transcribe.Transcriber` for a model directory, a
    ``runs:/<run_id>/model`` or ``models:/<name>/<version>`` URI, or a config (its trained
    model); a ready transcriber is returned as it is. ``decoding`` None: the model's own
    (``inference.json``), else greedy. ``vad=False``: decode every sound as speech
    (noise and tones too). ``speaker_cmvn``: evaluation normalises each utterance with its
    speaker's pooled statistics (None: as the model's recipe chose)."""
    from .transcribe import Transcriber, load_transcriber

    if isinstance(model, Transcriber):
        return model
    if isinstance(model, Config):
        model = model.model_dir
    common = {"backend": backend, "vad": VadOptions(enabled=vad), "speaker_cmvn": speaker_cmvn}
    if decoding is None:  # the model's own decoding (inference.json), else greedy
        return load_transcriber(model, **common)
    return load_transcriber(model, options=decoding.options, lm=decoding.lm, **common)


@dataclass
class Report:
    """An evaluation: corpus error rates, a score per utterance, and the files written."""

    model: str
    manifest: str
    decoding: Decoding
    backend: str
    rates: ErrorRates
    scores: list[UtteranceScore]
    files: list[Path] = field(default_factory=list)
    run_id: str | None = None
    speaker_cmvn: bool = False  # utterances normalised with their speaker's statistics

    def summary(self) -> dict:
        """What ``summary.json`` and ``speechrnn evaluate`` print."""
        out = {"model": self.model, "manifest": self.manifest,
               "decoder": self.decoding.options.method,
               "beam_width": self.decoding.options.beam_width,
               "lm": self.decoding.lm is not None, "backend": self.backend,
               "speaker_cmvn": self.speaker_cmvn, **self.rates.as_dict()}
        return {**out, "run_id": self.run_id} if self.run_id else out


def evaluate(model, manifest: str | Path, decoding: Decoding | None = None, *,
             out: str | Path | None = None, run_id: str | None = None,
             name: str | None = None, backend: str = "auto", vad: bool = True,
             progress: bool | None = None, speaker_cmvn: bool | None = None,
             tracking_uri: str | None = None) -> Report:
    """WER and CER of ``model`` (as :func:`load` takes it) on a manifest.

    ``out``: write the report there (utterances.csv, alignment.txt, word_errors.csv,
    summary.json). ``run_id``: also log the rates as ``<name>_<decoding>_<rate>`` metrics
    and the report as artifacts to that MLflow run (``name`` defaults to the manifest's).
    ``speaker_cmvn``: each utterance normalised with the statistics of all its speaker's
    utterances in the manifest (None: as the model's recipe chose, ``eval.speaker_cmvn``)."""

    transcriber = load(model, decoding, backend, vad, speaker_cmvn)
    decoding = Decoding(transcriber.options, transcriber.lm)
    rates, scores = evaluate_model(transcriber, read_manifest(manifest), progress=progress)
    report = Report(str(model.model_dir if isinstance(model, Config) else model),
                    str(manifest), decoding, transcriber.backend, rates, scores,
                    run_id=run_id, speaker_cmvn=transcriber.speaker_cmvn)
    if out is None and run_id:
        out = tempfile.mkdtemp(prefix="speechrnn-eval-")
    if out is not None:
        report.files = write_report(Path(out), report.summary(), scores)
    if run_id:
        from .tracking.runs import log_to_run

        tag = f"{name or Path(manifest).stem}_{decoding.name}"
        log_to_run(run_id, {f"{tag}_{k}": getattr(rates, k) for k in
                            ("wer", "cer", "substitutions", "deletions", "insertions", "per")
                            if getattr(rates, k) is not None},
                   report.files, f"evaluation/{tag}", tracking_uri)
    return report


def find_audio(paths: Iterable[str | Path]) -> tuple[list[Path], list[str]]:
    """Audio files named, found in folders (recursively) or matched by glob patterns; and
    a line for each path that gave none."""

    files, missing = [], []
    for p in map(str, paths):
        path = Path(p)
        if path.is_dir():
            found = sorted(f for f in path.rglob("*") if f.suffix.lower() in AUDIO_SUFFIXES)
            why = "no audio files in this folder"
        elif not path.exists() and any(c in p for c in "*?["):
            found = sorted(Path(f) for f in glob.glob(p, recursive=True) if Path(f).is_file())
            why = "no file matches this pattern"
        else:
            found, why = [path], ""  # a missing file is reported when it is read
        files += found
        if not found:
            missing.append(f"{p}: {why}")
    return files, missing


def transcribe(model, sources: Iterable, decoding: Decoding | None = None, *,
               backend: str = "auto", vad: bool = True, progress: bool | None = None,
               on_error: Callable[[AudioError], None] | None = None,
               speaker_cmvn: bool = False) -> Iterator:
    """Transcribe audio files (or bytes) one by one with ``model`` (as :func:`load` takes
    it), yielding a :class:`speechrnn.transcribe.Transcript` for each. An input that cannot
    be read is passed to ``on_error`` (default: one line on stderr) and skipped; the rest
    go on. Several inputs show a bar of files done; one long file a bar of its audio.
    ``speaker_cmvn``: the inputs are one speaker's; each is normalised with statistics
    pooled over all of them (:meth:`~speechrnn.transcribe.Transcriber.speaker_stats`: a
    first pass reads them all), which helps short clips most."""

    transcriber = load(model, decoding, backend, vad)
    sources = list(sources)
    single = len(sources) == 1
    stats = None
    if speaker_cmvn:
        with progress_bar(len(sources), "speaker statistics",
                          False if single else progress) as bar:
            def counted():
                for source in sources:
                    yield source
                    bar.update(1)

            with contextlib.suppress(InputError):  # nothing readable: each fails below
                stats = transcriber.speaker_stats(counted(), on_error=lambda err: None)
    with progress_bar(len(sources), "transcribing", False if single else progress) as bar:
        for source in sources:
            try:
                result = transcriber.transcribe(source, progress=progress if single else False,
                                                cmvn=stats)
            except AudioError as err:
                if on_error is None:
                    bar.write(f"speechrnn: error: {err}", file=sys.stderr)
                else:
                    on_error(err)
                bar.update(1)
                continue
            yield result
            bar.update(1)

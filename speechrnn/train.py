"""Training: CTC on a manifest, with checkpoints, resume, early stopping and tracking.

:func:`train` is the recipe, in named parts:

1. :func:`speechrnn.training_data.load_data`: features for the train and dev manifests
   (cached; bad items reported and skipped), each training manifest's utterances with its
   sampling weight (``data.train_weight``, ``data.corpora``'s ``weight``: drawn that many
   times an epoch on average), the mix printed once;
2. :func:`train_one_epoch`: the compiled steps of :mod:`speechrnn.steps` (Adam with a
   warm-up + cosine learning-rate schedule, annealed over the time budget when that ends
   training first, and global-norm gradient clipping); a batch whose loss or gradients are
   not finite is skipped, weights untouched; SIGINT/SIGTERM checkpoint and stop
   (:mod:`speechrnn.checkpoint`);
3. :func:`evaluate_epoch`: dev loss, WER and CER (greedy, or beam search with a word LM of
   the training transcripts: ``train.dev_decoder``), with the moving average of the weights
   when ``train.ema_decay`` is set; :func:`keep_if_best` keeps the best epoch by dev WER
   (then dev loss) as the model; :func:`stop_reason` stops after ``patience`` epochs
   without a better WER, or when the time budget is spent;
4. a checkpoint after every epoch; rerunning the same command resumes from it in the same
   MLflow run, with the batches the interrupted run would have seen (the epoch order
   depends only on the seed and the epoch);
5. :func:`finish`: the best model exported to ``<workdir>/model``, logged to MLflow and
   registered.

A fresh run may start from another model's weights (``train.init_from``,
:mod:`speechrnn.warmstart`): a model that does not fit is refused before any data is
loaded.

Faults it survives: a second training on the same work directory is refused at once (the
chief holds ``<workdir>/train.lock``: :class:`~speechrnn.checkpoint.TrainLock`); the
checkpoints, the ``best`` folder and the model are replaced whole (:mod:`speechrnn.files`),
so a kill leaves the previous ones usable, and a damaged last checkpoint falls back to the
one before; a full disk is a :class:`TrainError` naming the file; an MLflow store that
fails is retried and logged to later (:class:`speechrnn.tracking.Tracker`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .checkpoint import (
    Checkpointer,
    Interrupted,
    StopFlag,
    TrainError,
    TrainLock,
    TrainState,
    config_digest,
    disk_full,
    latest_state,
)
from .config import Config, dump_yaml, flatten
from .dataset import Examples, make_dataset
from .decoding import Decoding, beam_search, decode_text, greedy_batch
from .distribute import describe, is_chief, make_strategy
from .evaluate import ErrorRates, error_rates, phone_error_rate, score_utterances
from .files import atomic_write_text, replace_dir
from .inference import InferenceOptions
from .progress import progress_bar
from .report import plot_history, write_error_analysis, write_utterances, write_word_errors
from .steps import Schedule, Steps, make_optimizer
from .text import Alphabet
from .tracking import NullTracker, experiment_name
from .training_data import TrainingData, load_data, mix_tsv
from .warmstart import check_init_model, init_model_dir, start_from

log = logging.getLogger(__name__)

__all__ = ["Interrupted", "TrainError", "TrainResult", "train"]


def configure_threads(intra: int, inter: int) -> None:
    """Set TensorFlow's thread pools (before it starts; later calls only warn)."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
        tf.config.threading.set_inter_op_parallelism_threads(inter or os.cpu_count() or 2)
    except RuntimeError:
        log.info("TensorFlow already running; thread settings unchanged")


# --------------------------------------------------------------------------- dev scores


def dev_decoding(cfg: Config, corpora=None) -> Decoding:
    """How dev WER (model selection) decodes: ``train.dev_decoder``, with the recipe's beam
    options and word LM for beam search."""
    return Decoding.for_recipe(cfg, cfg.train.dev_decoder, corpora)


class DevScores(NamedTuple):
    loss: float  # mean CTC loss
    rates: ErrorRates  # as the dev decoding decodes
    table: list  # an UtteranceScore per utterance
    greedy: ErrorRates | None  # a character model's greedy rates beside beam search's
    per: float | None  # a phone model's phone error rate (best path, separators aside)


def evaluate_examples(steps: Steps, examples: Examples, cfg: Config, alphabet: Alphabet,
                      decoding: Decoding | None = None) -> DevScores:
    """Dev loss, WER/CER and an :class:`UtteranceScore` per utterance, decoded as
    ``decoding`` says; with beam search also the greedy rates of a character model. A phone
    model's words come from its lexicon search (:func:`speechrnn.decoding.decode_text`),
    and its best paths give the phone error rate against the transcripts' labels."""
    decoding = decoding or Decoding()
    chars = alphabet.units == "chars"
    greedy: list[str] = [""] * len(examples)
    beam = decoding.options.method == "beam"
    hyps = [""] * len(examples) if beam or not chars else greedy
    ref_units = [""] * len(examples)
    loss_sum = 0.0
    for batch in make_dataset(examples, cfg.batch, training=False):
        log_probs, losses = steps.evaluate(batch["features"], batch["feature_lengths"],
                                           batch["labels"], batch["label_lengths"])
        log_probs = log_probs.numpy()
        lengths = steps.model.output_lengths(batch["feature_lengths"]).numpy()
        labels, label_lengths = batch["labels"].numpy(), batch["label_lengths"].numpy()
        for j, (i, text) in enumerate(zip(batch["index"].numpy(),
                                          greedy_batch(log_probs, lengths, alphabet))):
            greedy[int(i)] = text
            if not chars:
                ref_units[int(i)] = alphabet.decode(labels[j, :label_lengths[j]])
                hyps[int(i)] = decode_text(log_probs[j, :lengths[j]], alphabet,
                                           decoding.options, decoding.lm)
            elif beam:
                hyps[int(i)] = beam_search(log_probs[j, :lengths[j]], alphabet,
                                           decoding.options, decoding.lm)
        loss_sum += float(np.sum(losses.numpy()))
    refs = [r.text for r in examples.rows]
    rates = error_rates(refs, hyps)
    return DevScores(
        loss_sum / len(examples), rates,
        score_utterances([r.id for r in examples.rows], refs, hyps),
        error_rates(refs, greedy) if beam and chars else None,
        None if chars else phone_error_rate(ref_units, greedy))


# --------------------------------------------------------------------------- the loop


@dataclass
class TrainResult:
    workdir: Path
    model_dir: Path
    run_id: str | None
    best_epoch: int
    best_wer: float
    history: list[dict]
    stop_reason: str
    model: dict = field(default_factory=dict)  # logged model: uri, registered name, version
    skipped: int = 0


@dataclass(kw_only=True)
class Job:
    """Everything one training run works with; built once by :func:`train`."""

    cfg: Config
    data: TrainingData
    model: object
    steps: Steps
    schedule: Schedule
    steps_per_epoch: int
    checkpoints: Checkpointer
    tracker: object
    decoding: Decoding
    progress: bool | None = None
    strategy: object = None  # tf.distribute strategy (the default one: a single device)
    chief: bool = True  # this process logs, checkpoints and exports
    runtime: dict = field(default_factory=dict)  # how it runs: strategy, replicas, LSTM
    lock: TrainLock | None = None  # the chief's hold on the work directory
    init_model: Path | None = None  # a fresh run starts from this model's weights

    @property
    def best_dir(self) -> Path:
        return self.cfg.workdir / "best"


def train_one_epoch(job: Job, state: TrainState, stop: StopFlag) -> dict:
    """Train the rest of epoch ``state.epoch`` (from batch ``state.step``); return its
    sums (loss, items, audio seconds, seconds, non-finite batches). On a stop signal the
    finished batches are checkpointed and :class:`Interrupted` is raised."""
    t, epoch = job.cfg.train, state.epoch
    part = state.partial or {"loss": 0.0, "items": 0, "audio": 0.0, "seconds": 0.0,
                             "nonfinite": 0}
    fps, consecutive_bad = job.cfg.features.frames_per_second, 0
    ds = make_dataset(job.data.train, job.cfg.batch, training=True, seed=t.seed, epoch=epoch)
    start = time.perf_counter()
    with progress_bar(job.steps_per_epoch, f"epoch {epoch + 1}/{t.epochs}", job.progress) as bar:
        bar.update(state.step)
        for batch in ds.skip(state.step):
            job.steps.optimizer.learning_rate.assign(job.schedule(
                epoch * job.steps_per_epoch + state.step,
                state.elapsed + time.perf_counter() - start))
            loss, finite = job.steps.train_batch(batch)
            n = int(batch["features"].shape[0])
            if finite:
                part["loss"] += loss * n
                part["items"] += n
                consecutive_bad = 0
            else:
                part["nonfinite"] += 1
                consecutive_bad += 1
                if consecutive_bad >= t.max_nonfinite:
                    raise TrainError(f"{consecutive_bad} batches in a row had a non-finite "
                                     "loss; lower train.learning_rate")
            part["audio"] += float(np.sum(batch["feature_lengths"].numpy())) / fps
            state.step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{part['loss'] / max(part['items'], 1):.3f}")
            if stop.requested:
                break
    seconds = time.perf_counter() - start
    part["seconds"] += seconds
    state.elapsed += seconds
    if stop.requested:
        state.partial = part
        job.checkpoints.save(job.model, job.steps.state_variables, state)
        raise Interrupted
    return part


def evaluate_epoch(job: Job, state: TrainState, part: dict) -> tuple[dict, bool]:
    """Score the epoch on dev (with the averaged weights, if any) and keep it if it is the
    best so far; return its metrics and whether it was kept."""
    with job.steps.averaged():  # dev scores and the kept model: averaged weights
        dev_loss, rates, table, greedy, per = evaluate_examples(
            job.steps, job.data.dev, job.cfg, job.data.alphabet, job.decoding)
        metrics = {
            "train_loss": part["loss"] / max(part["items"], 1), "dev_loss": dev_loss,
            "dev_wer": rates.wer, "dev_cer": rates.cer,
            "learning_rate": float(np.asarray(job.steps.optimizer.learning_rate)),
            "epoch_seconds": part["seconds"],
            "train_audio_s_per_s": part["audio"] / max(part["seconds"], 1e-9),
            "nonfinite_batches": part["nonfinite"],
        }
        if greedy is not None:
            metrics.update(dev_wer_greedy=greedy.wer, dev_cer_greedy=greedy.cer)
        if per is not None:
            metrics["dev_per"] = per
        better = keep_if_best(job, state, rates, dev_loss, table)
    state.history.append({"epoch": state.epoch, **metrics})
    return metrics, better


def keep_if_best(job: Job, state: TrainState, rates, dev_loss: float, table) -> bool:
    """Save the model in the ``best`` folder (with its dev transcripts and word errors)
    when its dev WER, then dev loss, beats every earlier epoch's."""
    better = rates.wer < state.best_wer - 1e-9 or (
        abs(rates.wer - state.best_wer) <= 1e-9 and dev_loss < state.best_loss)
    if not better:
        state.bad_epochs += 1
        return False
    if job.chief:
        save_best(job, state, rates, table)
    state.best_wer, state.best_loss, state.best_epoch = rates.wer, dev_loss, state.epoch
    state.bad_epochs = 0
    return True


def save_best(job: Job, state: TrainState, rates, table) -> None:
    """The model of this epoch in ``<workdir>/best``, with its dev transcripts and word
    errors; its dev error analysis logged (:func:`log_dev_errors`)."""
    from .model import save_model

    cfg, best = job.cfg, job.best_dir
    # the folder is replaced whole: a kill or a full disk leaves the previous best usable
    with disk_full(best, f"the previous best model in {best} is intact"), \
            replace_dir(best) as folder:
        save_model(folder, job.model, cfg.features, job.data.alphabet,
                   {"epoch": state.epoch, "dev_wer": rates.wer, "dev_cer": rates.cer,
                    "config": cfg.name}, atomic=False)
        # how it transcribes by default: the recipe's choices (the evaluate stage adds the
        # beam search and its LM)
        InferenceOptions(edge_pad_s=cfg.eval.edge_pad_s,
                         speaker_cmvn=cfg.eval.speaker_cmvn).save(folder)
        if cfg.features.cmvn == "global":
            shutil.copy(cfg.workdir / "cmvn.json", folder / "cmvn.json")
        write_utterances(folder / "dev_transcripts.csv", table)
        write_word_errors(folder / "dev_word_errors.csv", table)
    if table:
        log_dev_errors(job, table)


def log_dev_errors(job: Job, table) -> None:
    """The best epoch's dev error analysis (:func:`speechrnn.report.write_error_analysis`:
    the audio of the 20 worst utterances as 16 kHz WAV files, their table and the word
    errors by kind) in ``<workdir>/best_errors``, and in the MLflow run under ``errors/``;
    both replace the previous best epoch's (the folder whole, the run's ``errors/`` deleted
    first, see :meth:`~speechrnn.tracking.RunTracker.delete_artifacts`). Beside the best
    model, not in it: the exported and logged model does not carry audio. A file that
    cannot be read is listed with the reason; a folder that cannot be written is a
    warning: training goes on."""
    out = job.best_dir.with_name("best_errors")
    try:
        with replace_dir(out) as folder:
            write_error_analysis(folder, table, job.data.dev.rows)
    except (OSError, ValueError) as err:
        log.warning("dev error analysis not written to %s: %s", out, err)
        return
    job.tracker.delete_artifacts("errors")
    job.tracker.log_artifact(out, "errors")


def stop_reason(cfg: Config, state: TrainState) -> str:
    """Why training stops after this epoch ("" to go on): early stopping or the budget."""
    t = cfg.train
    if state.bad_epochs >= t.patience:
        return f"early stop: no better dev WER in {t.patience} epochs"
    if t.time_budget_min and state.elapsed >= 60 * t.time_budget_min:
        return f"time budget of {t.time_budget_min:g} min spent"
    return ""


def print_epoch(epoch: int, metrics: dict, better: bool) -> None:
    greedy = metrics.get("dev_wer_greedy")
    print(f"epoch {epoch + 1:3d}  loss {metrics['train_loss']:.3f}  dev loss "
          f"{metrics['dev_loss']:.3f}  dev WER {100 * metrics['dev_wer']:5.1f}%  CER "
          f"{100 * metrics['dev_cer']:5.1f}%"
          + (f" (greedy {100 * greedy:.1f}%)" if greedy is not None else "")
          + (f"  PER {100 * metrics['dev_per']:5.1f}%" if "dev_per" in metrics else "")
          + f"  {metrics['train_audio_s_per_s']:.0f} audio-s/s{'  *' if better else ''}",
          flush=True)


def start_tracking(job: Job, state: TrainState) -> None:
    """Start the MLflow run, or resume it: a new run gets the config, datasets and
    alphabet; a resumed one the finished epochs it missed (never one twice)."""
    cfg, tracker, data = job.cfg, job.tracker, job.data
    new = state.run_id is None
    state.run_id = tracker.start(state.run_id, cfg.tracking.run_name or cfg.name) or None
    # the epochs the run misses: after an interrupt, or when the store could not be reached
    tracker.log_history(state.history)
    if not new:
        return
    tracker.log_params(flatten(cfg))
    tracker.log_params({f"runtime.{k}": v for k, v in job.runtime.items()})
    rows = data.manifest_rows
    tracker.log_dataset(f"{cfg.name}-train", cfg.data.manifest("train"), rows["train"],
                        "training")
    tracker.log_dataset(f"{cfg.name}-dev", cfg.data.manifest("dev"), rows["dev"], "dev")
    tracker.log_text(dump_yaml(cfg), "config.yaml")
    tracker.log_text(data.alphabet.to_json() + "\n", "alphabet.json")
    if data.alphabet.units == "phones":  # where the spellings came from
        tracker.log_params({f"lexicon.{k}": v
                            for k, v in data.alphabet.lexicon.coverage().items()})
    if data.mix:
        tracker.log_text(mix_tsv(data.mix), "training_mix.tsv")
    tracker.set_tags({"workdir": str(cfg.workdir.resolve()), "config": cfg.name})
    if data.skipped:
        tracker.log_text("".join(f"{r.audio}\t{why}\n" for r, why in data.skipped),
                         "skipped_utterances.tsv")


def prepare_job(cfg: Config, tracker, fresh: bool, progress: bool | None,
                corpora=None) -> Job:
    """Threads, strategy, the work directory (locked by the chief: one training in it at a
    time), data, model, optimizer and compiled steps."""

    configure_threads(cfg.train.intra_op_threads, cfg.train.inter_op_threads)
    strategy = make_strategy(cfg)  # first: a multi-worker strategy starts the runtime
    chief = is_chief(strategy)  # the other workers only read the work directory
    lock = TrainLock(cfg.workdir).acquire() if chief else None
    try:
        return _build_job(cfg, tracker, fresh, progress, strategy, chief, lock, corpora)
    except BaseException:
        if lock is not None:
            lock.release()
        raise


def _build_job(cfg: Config, tracker, fresh: bool, progress: bool | None, strategy,
               chief: bool, lock: TrainLock | None, corpora=None) -> Job:
    import keras

    from .model import build_model

    keras.mixed_precision.set_global_policy(
        "mixed_float16" if cfg.train.mixed_precision else "float32")
    keras.utils.set_random_seed(cfg.train.seed)
    checkpoints = Checkpointer(cfg.workdir / "checkpoints", writer=chief)
    if fresh and chief:
        checkpoints.clear()
        shutil.rmtree(cfg.workdir / "best", ignore_errors=True)
    cfg.workdir.mkdir(parents=True, exist_ok=True)
    init_model = None
    if cfg.train.init_from and latest_state(cfg.workdir) is None:  # a fresh run
        init_model = init_model_dir(cfg, wait_minutes=0 if chief else 30)
        check_init_model(cfg, init_model)
    with disk_full(cfg.data.cache or cfg.workdir, "features cached so far are whole and "
                   f"the checkpoints and model in {cfg.workdir} are untouched"):
        data = load_data(cfg, progress, build=chief, corpora=corpora)
    with strategy.scope():
        model = build_model(cfg.model, cfg.features.n_features, data.alphabet)
    steps_per_epoch = data.steps_per_epoch(cfg.batch)
    with strategy.scope():
        optimizer = make_optimizer(cfg, steps_per_epoch, strategy.num_replicas_in_sync)
        optimizer.build(model.trainable_variables)
    steps = Steps(model, optimizer, cfg.features.n_features, cfg.train.ema_decay, strategy,
                  loss_scaling=cfg.train.mixed_precision)
    runtime = {**describe(strategy), "lstm_impl": getattr(model, "lstm_impl", "scan"),
               "mixed_precision": cfg.train.mixed_precision}
    return Job(cfg=cfg, data=data, model=model, steps=steps,
               schedule=Schedule.for_config(cfg, steps_per_epoch),
               steps_per_epoch=steps_per_epoch, checkpoints=checkpoints,
               tracker=tracker if chief else NullTracker(),
               decoding=dev_decoding(cfg, corpora), progress=progress, strategy=strategy,
               chief=chief, runtime=runtime, lock=lock, init_model=init_model)


def train(cfg: Config, tracker=None, fresh: bool = False, progress: bool | None = None,
          corpora=None) -> TrainResult:
    """Train (or resume training) the model ``cfg`` describes. See the module docstring.
    ``corpora``: the folder the recipe's LM text is found under (a phone model's lexicon
    covers it; else ``$SPEECHRNN_CORPORA``)."""

    job = prepare_job(cfg, tracker or NullTracker(), fresh, progress, corpora)
    try:
        return run_epochs(job)
    finally:
        import keras

        keras.mixed_precision.set_global_policy("float32")
        if job.lock is not None:
            job.lock.release()


def run_epochs(job: Job) -> TrainResult:
    """Resume or start, train epoch after epoch until a stop reason, then finish."""
    cfg = job.cfg
    if job.runtime.get("replicas", 1) > 1 or job.runtime.get("lstm_impl") != "scan":
        print("running on " + ", ".join(f"{k} {v}" for k, v in job.runtime.items()))
    digest = config_digest(cfg)
    state = job.checkpoints.restore(job.model, job.steps.state_variables, digest)
    if state is None:
        state = TrainState(config_digest=digest)
        if job.init_model is not None:  # every worker: assigned weights are not broadcast
            start_from(cfg, job.init_model, job.steps)
            job.runtime["init_model"] = str(job.init_model.resolve())
    else:
        print(f"resuming from {job.checkpoints.restored_from}: epoch {state.epoch + 1}"
              + (f", batch {state.step + 1}" if state.step else ""))
    start_tracking(job, state)
    try:
        with StopFlag() as stop:
            while not state.stop_reason and state.epoch < cfg.train.epochs:
                part = train_one_epoch(job, state, stop)
                metrics, better = evaluate_epoch(job, state, part)
                epoch = state.epoch
                state.epoch, state.step, state.partial = epoch + 1, 0, {}
                state.stop_reason = stop_reason(cfg, state)
                state.run_id = state.run_id or job.tracker.run_id or None  # started late
                # saved before logging: see start_tracking
                job.checkpoints.save(job.model, job.steps.state_variables, state)
                job.tracker.log_metrics(metrics, step=epoch)
                if job.chief:
                    print_epoch(epoch, metrics, better)
    except Interrupted:
        job.tracker.end("KILLED")
        raise
    return finish(job, state)


def finish(job: Job, state: TrainState) -> TrainResult:
    """Export the best epoch to ``<workdir>/model``; log curves, dev reports and the model
    to MLflow and register it (once, even when a finished run is started again)."""

    cfg, tracker = job.cfg, job.tracker
    if not state.stop_reason:
        state.stop_reason = f"{cfg.train.epochs} epochs done"
    best, final = job.best_dir, cfg.model_dir
    if not job.chief:  # the chief exports, logs and registers the model
        return TrainResult(cfg.workdir, final, state.run_id, state.best_epoch, state.best_wer,
                           state.history, state.stop_reason, {}, len(job.data.skipped))
    if not state.finished:
        with disk_full(final, f"the previous model in {final} is intact (the best epoch is "
                       f"in {best})"), replace_dir(final) as folder:
            shutil.copytree(best, folder, dirs_exist_ok=True)
        if state.history:
            import matplotlib.pyplot as plt

            figure = plot_history(state.history)
            tracker.log_figure(figure, "training_curves.png")
            plt.close(figure)
        for name in ("dev_transcripts.csv", "dev_word_errors.csv"):
            if (best / name).exists():  # a best epoch saved by an older version has no table
                tracker.log_artifact(best / name, "dev_transcripts")
        tracker.set_tags({"stop_reason": state.stop_reason, "best_epoch": state.best_epoch + 1})
        tracker.log_metrics({"best_dev_wer": state.best_wer}, step=state.best_epoch)
        info = tracker.log_model(final, cfg.tracking.register_as or experiment_name(cfg))
        state.run_id = state.run_id or tracker.run_id or None
        atomic_write_text(final / "mlflow.json",
                          json.dumps({"run_id": state.run_id, **info}) + "\n")
        state.finished = True
        job.checkpoints.save(job.model, job.steps.state_variables, state)
        tracker.end("FINISHED")
    info_path = final / "mlflow.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    print(f"{state.stop_reason}; best dev WER {100 * state.best_wer:.1f}% at epoch "
          f"{state.best_epoch + 1}; model in {final}")
    return TrainResult(cfg.workdir, final, state.run_id, state.best_epoch, state.best_wer,
                       state.history, state.stop_reason, info, len(job.data.skipped))

"""Training: CTC on a manifest, with checkpoints, resume, early stopping and tracking.

:func:`train` is the recipe, in named parts:

1. :func:`load_data`: features for the train and dev manifests (cached; bad items reported
   and skipped), each training manifest's utterances with its sampling weight
   (``data.train_weight``, ``data.corpora``'s ``weight``: drawn that many times an epoch
   on average), the mix printed once;
2. :func:`train_one_epoch`: Adam with a warm-up + cosine learning-rate schedule
   (:class:`Schedule`, annealed over the time budget when that ends training first) and
   global-norm gradient clipping (:class:`Steps`); a batch whose loss or gradients are not
   finite is skipped, weights untouched; SIGINT/SIGTERM checkpoint and stop
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

A fresh run may start from another model's weights (``train.init_from``: a model, or a
recipe whose model :func:`speechrnn.pipeline.train` trains first): :func:`check_init_model`
refuses one that does not fit before any data is loaded, :func:`start_from` loads it.

Faults it survives: a second training on the same work directory is refused at once (the
chief holds ``<workdir>/train.lock``: :class:`~speechrnn.checkpoint.TrainLock`); the
checkpoints, the ``best`` folder and the model are replaced whole (:mod:`speechrnn.files`),
so a kill leaves the previous ones usable, and a damaged last checkpoint falls back to the
one before; a full disk is a :class:`TrainError` naming the file; an MLflow store that
fails is retried and logged to later (:class:`speechrnn.tracking.Tracker`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass, field, replace
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
    finished,
    latest_state,
)
from .config import Config, ConfigError, dump_yaml, flatten
from .dataset import Examples, load_examples, make_dataset
from .decoding import Decoding, beam_search, decode_text, greedy_batch
from .errors import InputError, NotFoundError
from .evaluate import ErrorRates, error_rates, phone_error_rate, score_utterances
from .features import CMVN, FeatureExtractor
from .files import atomic_write_text, replace_dir
from .lexicon import recipe_targets
from .manifest import read_manifest
from .progress import progress_bar
from .report import write_error_analysis, write_utterances, write_word_errors
from .text import Alphabet

log = logging.getLogger(__name__)

__all__ = ["Interrupted", "Schedule", "Steps", "TrainError", "TrainResult", "train"]


def configure_threads(intra: int, inter: int) -> None:
    """Set TensorFlow's thread pools (before it starts; later calls only warn)."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
        tf.config.threading.set_inter_op_parallelism_threads(inter or os.cpu_count() or 2)
    except RuntimeError:
        log.info("TensorFlow already running; thread settings unchanged")


# --------------------------------------------------------------------------- data


@dataclass
class TrainingData:
    train: Examples  # or, with batch.source shards, a shards.ShardIndex (streamed)
    dev: Examples
    alphabet: Alphabet
    manifest_rows: dict[str, list] = field(default_factory=dict)  # as read: train, dev
    mix: list[dict] = field(default_factory=list)  # the training manifests: training_mix

    @property
    def skipped(self) -> list:
        return self.train.skipped + self.dev.skipped

    def steps_per_epoch(self, batch) -> int:
        """Training batches per epoch under ``batch`` (a BatchConfig), counted from the
        items' lengths (see :func:`speechrnn.dataset.count_batches`)."""
        from .dataset import count_batches

        return count_batches(self.train, batch)


def _extractor(cfg: Config, train_rows) -> FeatureExtractor:
    """The feature extractor; with global CMVN, statistics of the training set (computed
    once, kept in the work directory)."""
    cache = cfg.data.cache or None
    if cfg.features.cmvn != "global":
        return FeatureExtractor(cfg.features, cache)
    stats = cfg.workdir / "cmvn.json"
    if cfg.features.cmvn_stats:
        CMVN.load(cfg.features.cmvn_stats).save(stats)
    elif not stats.exists():
        raw = FeatureExtractor(replace(cfg.features, cmvn="none"), cache)
        CMVN.compute(raw(r.audio, *r.segment) for r in train_rows).save(stats)
    return FeatureExtractor(cfg.features, cache, cmvn=CMVN.load(stats))


def training_mix(sets: list[tuple[Path, float, list]]) -> list[dict]:
    """What an epoch is made of: per training manifest (``(path, weight, rows)``) its
    utterances and hours (as listed: skipped rows included), weight, and share of an
    epoch's audio (hours times weight, over all manifests)."""
    mix = [{"manifest": str(path), "utterances": len(rows),
            "hours": sum(max(float(r.duration), 0.0) for r in rows) / 3600, "weight": weight}
           for path, weight, rows in sets]
    total = sum(m["hours"] * m["weight"] for m in mix)
    for m in mix:
        m["share"] = m["hours"] * m["weight"] / total if total > 0 else 0.0
    return mix


def format_mix(mix: list[dict]) -> str:
    """:func:`training_mix` as a table (one line per manifest, then the epoch's total)."""
    width = max([len("manifest"), *(len(m["manifest"]) for m in mix)])
    lines = [f"  {'manifest':<{width}}  utterances    hours  weight   share"]
    lines += [f"  {m['manifest']:<{width}}  {m['utterances']:10d}  {m['hours']:7.3f}  "
              f"{m['weight']:6.2f}  {100 * m['share']:5.1f} %" for m in mix]
    items = sum(m["utterances"] * m["weight"] for m in mix)
    hours = sum(m["hours"] * m["weight"] for m in mix)
    lines.append(f"  {'an epoch':<{width}}  {items:10.0f}  {hours:7.3f}")
    return "\n".join(lines)


def mix_tsv(mix: list[dict]) -> str:
    """:func:`training_mix` as tab-separated values (logged with the run)."""
    keys = ("manifest", "utterances", "hours", "weight", "share")
    return "\t".join(keys) + "\n" + "".join(
        "\t".join(f"{m[k]:.6g}" if isinstance(m[k], float) else str(m[k]) for k in keys)
        + "\n" for m in mix)


def load_data(cfg: Config, progress: bool | None = None, build: bool = True,
              wait_minutes: float = 120.0, corpora=None) -> TrainingData:
    """Features and labels of the training manifests and the dev manifest; unusable
    utterances are reported (one line each) and skipped.

    With ``batch.source: shards`` the features are extracted (on every core) into shard
    sets under ``data.shard_dir()`` when missing or stale; the training set is then
    streamed from its shards and the dev set, small, is read from its shards into memory.
    ``build=False`` (a worker that is not the chief): wait for the chief's shards instead.

    Each training item carries the sampling weight of its manifest
    (:meth:`~speechrnn.config.DataConfig.training_sets`; ``weights`` of the training
    Examples or ShardIndex, None when every weight is 1.0). The mix (:func:`training_mix`)
    is printed once, by the chief. Labels are in the recipe's units
    (:func:`speechrnn.lexicon.recipe_targets`: a phone model's lexicon covers the training
    and dev transcripts and ``eval.lm_text``, found under ``corpora``).
    """
    alphabet, aux = recipe_targets(cfg, corpora, progress=build)
    sets = [(path, weight, read_manifest(path)) for path, weight in cfg.data.training_sets()]
    train_rows = [row for _, _, rows in sets for row in rows]
    weights = np.concatenate([np.full(len(rows), weight, np.float64)
                              for _, weight, rows in sets]) if sets else np.zeros(0)
    if np.all(weights == 1.0):
        weights = None  # every item once an epoch: the unweighted epochs, batch for batch
    mix = training_mix(sets)
    if build:
        print("training mix (an epoch's audio):\n" + format_mix(mix), flush=True)
    dev_rows = read_manifest(cfg.data.manifest("dev"))
    rows = {"train": train_rows, "dev": dev_rows}
    if cfg.batch.source == "shards":
        from .dataset import load_shards
        from .shards import config_shards

        shards = config_shards(cfg, rows, progress=progress, alphabet=alphabet, build=build,
                               aux=aux)
        waited = time.monotonic()
        while shards is None:  # the chief extracts them (on a shared file system)
            if time.monotonic() - waited > 60 * wait_minutes:
                raise TrainError(f"no current feature shards in {cfg.data.shard_dir()} after "
                                 f"{wait_minutes:g} min: is the chief extracting them there? "
                                 "(speechrnn data features --config ... makes them)")
            print(f"waiting for the chief's feature shards in {cfg.data.shard_dir()}",
                  flush=True)
            time.sleep(15)
            shards = config_shards(cfg, rows, alphabet=alphabet, build=False, aux=aux)
        if cfg.features.cmvn == "global":  # what the model is exported with
            shards["train"].cmvn.save(cfg.workdir / "cmvn.json")
        data = TrainingData(shards["train"].weigh(weights), load_shards(shards["dev"]),
                            alphabet, rows, mix)
    else:
        load = {"extractor": _extractor(cfg, train_rows), "alphabet": alphabet,
                "subsampling": cfg.model.stride, "workers": cfg.batch.workers,
                "progress": progress}
        data = TrainingData(load_examples(train_rows, desc="train features", weights=weights,
                                          aux=aux, **load),
                            load_examples(dev_rows, desc="dev features", **load), alphabet,
                            rows, mix)
    for row, why in data.skipped:
        print(f"skipped {row.audio}: {why}")
    if not len(data.train) or not len(data.dev):
        raise TrainError("no usable utterances in the train or dev manifest")
    return data


# --------------------------------------------------------------------------- optimisation


@dataclass(frozen=True)
class Schedule:
    """Learning rate: linear warm-up from a tenth of the peak over ``warmup_epochs``, then
    cosine decay to ``min_lr_ratio`` of it. Progress is the larger of the fraction of steps
    done and, with a time budget, the fraction of the budget spent: a run cut short by its
    budget still anneals instead of stopping at the peak rate."""

    peak: float
    warmup_steps: int
    total_steps: int
    min_ratio: float
    budget_seconds: float = 0.0

    @classmethod
    def for_config(cls, cfg: Config, steps_per_epoch: int) -> Schedule:
        t = cfg.train
        total = max(1, t.epochs * steps_per_epoch)
        return cls(t.learning_rate, min(total - 1, int(t.warmup_epochs * steps_per_epoch)),
                   total, t.min_lr_ratio, 60.0 * t.time_budget_min)

    def __call__(self, step: int, elapsed: float = 0.0) -> float:
        if step < self.warmup_steps:
            return self.peak * (0.1 + 0.9 * step / self.warmup_steps)
        progress = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
        if self.budget_seconds:
            progress = max(progress, elapsed / self.budget_seconds)
        cosine = 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
        return self.peak * (self.min_ratio + (1.0 - self.min_ratio) * cosine)


def make_optimizer(cfg: Config, steps_per_epoch: int, replicas: int = 1):
    """Adam with global-norm clipping; its rate is set from :class:`Schedule` each step.
    With ``train.mixed_precision``, wrapped in dynamic loss scaling.

    With ``replicas`` > 1 each replica applies an equal share (1/replicas) of the summed
    gradient and Keras clips each share before summing them: clipping the shares at
    ``grad_clip / replicas`` is clipping the whole gradient at ``grad_clip``."""
    import keras

    schedule = Schedule.for_config(cfg, steps_per_epoch)
    adam = keras.optimizers.Adam(learning_rate=schedule(0),
                                 global_clipnorm=cfg.train.grad_clip / replicas)
    return keras.optimizers.LossScaleOptimizer(adam) if cfg.train.mixed_precision else adam


def ctc_losses(log_probs, output_lengths, labels, label_lengths):
    """Each item's CTC loss (blank 0) over its own output and label lengths.

    The labels go to TensorFlow as a SparseTensor of each item's first ``label_lengths``
    labels: that runs the fused C++ CTC kernel (cuDNN's on a GPU), which computes the loss
    and its gradient in one pass. Dense labels would run ``ctc_loss_dense``, a forward and
    a backward recursion of TensorFlow ops, several times slower on a CPU."""
    import tensorflow as tf

    valid = tf.where(tf.sequence_mask(label_lengths, tf.shape(labels)[1]))
    sparse = tf.SparseTensor(valid, tf.cast(tf.gather_nd(labels, valid), tf.int32),
                             tf.shape(labels, out_type=tf.int64))
    return tf.nn.ctc_loss(labels=sparse, logits=log_probs, label_length=None,
                          logit_length=output_lengths, logits_time_major=False,
                          blank_index=0)


class Steps:
    """The compiled training and evaluation steps of one model.

    With ``ema_decay`` > 0 an exponential moving average of the weights follows training
    (decay ``min(ema_decay, (1 + step) / (10 + step))``, so early steps are not dominated by
    the initial weights); :meth:`averaged` puts it in the model for evaluation and export.
    """

    def __init__(self, model, optimizer, n_features: int, ema_decay: float = 0.0,
                 strategy=None, loss_scaling: bool = False):
        import tensorflow as tf

        self.strategy = strategy = strategy or tf.distribute.get_strategy()
        self.model, self.optimizer = model, optimizer
        with strategy.scope():
            self.ema = [tf.Variable(v, trainable=False) for v in model.trainable_variables] \
                if ema_decay else []
        spec = [tf.TensorSpec([None, None, n_features], tf.float32),
                tf.TensorSpec([None], tf.int32), tf.TensorSpec([None, None], tf.int32),
                tf.TensorSpec([None], tf.int32)]
        variables = model.trainable_variables

        def losses(log_probs, feature_lengths, labels, label_lengths):
            return ctc_losses(log_probs, model.output_lengths(feature_lengths), labels,
                              label_lengths)

        aux_weight = model.config.aux_ctc.weight \
            if getattr(model, "aux_head", None) is not None else 0.0

        def replica_gradients(batch, global_n):
            """One replica's share: its items' summed loss over the global batch size (with
            an auxiliary head: (1 - w) x the main CTC loss + w x the auxiliary one)."""
            with tf.GradientTape() as tape:
                if aux_weight:
                    log_probs, aux_probs = model(batch["features"], batch["feature_lengths"],
                                                 training=True, aux=True)
                else:
                    log_probs = model(batch["features"], batch["feature_lengths"],
                                      training=True)
                item_losses = losses(log_probs, batch["feature_lengths"], batch["labels"],
                                     batch["label_lengths"])
                if aux_weight:
                    item_losses = (1.0 - aux_weight) * item_losses + aux_weight * losses(
                        aux_probs, batch["feature_lengths"], batch["aux_labels"],
                        batch["aux_label_lengths"])
                if "weight" in batch:  # fill-up copies (weight 0) of a split batch
                    item_losses *= batch["weight"]
                loss = tf.reduce_sum(item_losses) / global_n
                scaled = optimizer.scale_loss(loss) if loss_scaling else loss
            return loss, tape.gradient(scaled, variables)

        @tf.function(reduce_retracing=True)
        def gradients(batch, global_n):
            loss, grads = strategy.run(replica_gradients, args=(batch, global_n))
            loss = strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None)
            grads = [strategy.reduce(tf.distribute.ReduceOp.SUM, g, axis=None) for g in grads]
            finite = tf.math.is_finite(loss)
            if not loss_scaling:  # overflowing scaled gradients are the loss scaler's business
                finite &= tf.math.is_finite(tf.linalg.global_norm(grads))
            return loss, grads, finite

        replicas = strategy.num_replicas_in_sync

        @tf.function(reduce_retracing=True)
        def apply(grads):
            if replicas == 1:
                optimizer.apply_gradients(zip(grads, variables))
            else:  # Keras sums the replicas' gradients: each brings its share of the total
                strategy.run(lambda g: optimizer.apply_gradients(zip(g, variables)),
                             args=([g / replicas for g in grads],))
            if self.ema:
                step = tf.cast(optimizer.iterations, tf.float32)
                decay = tf.minimum(ema_decay, (1.0 + step) / (10.0 + step))
                for average, v in zip(self.ema, variables):
                    average.assign(decay * average + (1.0 - decay) * v)

        @tf.function(input_signature=spec, reduce_retracing=True)
        def evaluate(features, feature_lengths, labels, label_lengths):
            log_probs = model(features, feature_lengths, training=False)
            return log_probs, losses(log_probs, feature_lengths, labels, label_lengths)

        self.gradients, self.apply, self.evaluate = gradients, apply, evaluate

    def reset_average(self) -> None:
        """Start the moving average at the current weights (after they were loaded)."""
        for average, weight in zip(self.ema, self.model.trainable_variables):
            average.assign(weight)

    @property
    def state_variables(self) -> list:
        """What a checkpoint keeps besides the weights."""
        return list(self.optimizer.variables) + self.ema

    @contextlib.contextmanager
    def averaged(self):
        """The averaged weights in the model for the ``with`` block (no-op without EMA)."""
        if not self.ema:
            yield
            return
        current = [v.numpy() for v in self.model.trainable_variables]
        for v, average in zip(self.model.trainable_variables, self.ema):
            v.assign(average)
        try:
            yield
        finally:
            for v, value in zip(self.model.trainable_variables, current):
                v.assign(value)

    def train_batch(self, batch) -> tuple[float, bool]:
        """One step on a global batch, shared out among the replicas; weights are left
        alone when its loss or gradients are not finite. Returns (mean loss, finite)."""
        import tensorflow as tf

        from .distribute import split_batch

        keys = ("features", "feature_lengths", "labels", "label_lengths")
        if getattr(self.model, "aux_head", None) is not None:  # the auxiliary labels
            keys += ("aux_labels", "aux_label_lengths")
        items = {k: batch[k] for k in keys}
        global_n = tf.constant(float(batch["features"].shape[0]))
        loss, grads, finite = self.gradients(split_batch(self.strategy, items), global_n)
        if bool(finite):
            self.apply(grads)
        return float(loss), bool(finite)


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


@dataclass
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
                    "config": cfg.name, "edge_pad_s": cfg.eval.edge_pad_s,
                    "speaker_cmvn": cfg.eval.speaker_cmvn}, atomic=False)
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
    from .distribute import is_chief, make_strategy

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

    from .distribute import describe
    from .model import build_model
    from .tracking import NullTracker

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
    return Job(cfg, data, model, steps, Schedule.for_config(cfg, steps_per_epoch),
               steps_per_epoch, checkpoints, tracker if chief else NullTracker(),
               dev_decoding(cfg, corpora), progress, strategy, chief, runtime, lock,
               init_model)


def train(cfg: Config, tracker=None, fresh: bool = False, progress: bool | None = None,
          corpora=None) -> TrainResult:
    """Train (or resume training) the model ``cfg`` describes. See the module docstring.
    ``corpora``: the folder the recipe's LM text is found under (a phone model's lexicon
    covers it; else ``$SPEECHRNN_CORPORA``)."""
    from .tracking import NullTracker

    job = prepare_job(cfg, tracker or NullTracker(), fresh, progress, corpora)
    try:
        return run_epochs(job)
    finally:
        import keras

        keras.mixed_precision.set_global_policy("float32")
        if job.lock is not None:
            job.lock.release()


def check_first_stage(cfg: Config, first: Config) -> bool:
    """Whether the recipe ``first`` (``cfg``'s ``train.init_from``) has finished, once it
    is sure to fit: the same network and features as ``cfg``, and, when finished, trained
    with the settings its YAML holds now. Raises :class:`ConfigError` otherwise."""
    from .model_dir import network_differences

    differ = network_differences(cfg.model, cfg.features, first.model, first.features)
    if differ:
        raise ConfigError(f"train.init_from {cfg.train.init_from}: that recipe trains "
                          f"another network (this config vs that one: {'; '.join(differ)})")
    if not finished(first.workdir):
        return False
    try:
        current = config_digest(first)
    except FileNotFoundError:  # its manifests are gone: nothing to compare with
        return True
    if latest_state(first.workdir).config_digest != current:
        raise ConfigError(f"train.init_from {cfg.train.init_from}: the model in "
                          f"{first.model_dir} was trained with other settings than that file "
                          f"holds now; train it again (python pipelines/run.py --config "
                          f"{cfg.train.init_from} --stages prepare,train --fresh)")
    return True


def init_model_dir(cfg: Config, wait_minutes: float = 0.0) -> Path:
    """The model directory ``train.init_from`` names; a recipe's YAML names the model that
    recipe trains, which must have finished (:func:`speechrnn.pipeline.train` sees to it;
    ``wait_minutes``: how long a worker waits for the chief to export it)."""
    from .model_dir import resolve_model

    source = cfg.train.init_from
    first = cfg.first_stage()
    if first is None:
        try:
            return resolve_model(source, cfg.tracking.uri)
        except (OSError, ValueError) as err:
            raise NotFoundError(f"train.init_from {source}: {err}") from None
    waited = time.monotonic()
    while not finished(first.workdir):
        if time.monotonic() - waited >= 60 * wait_minutes:
            raise NotFoundError(f"train.init_from {source}: its model ({first.model_dir}) "
                                f"is not trained yet; train it first (python pipelines/"
                                f"run.py --config {source} --stages prepare,train)")
        time.sleep(15)
    return first.model_dir


def check_init_model(cfg: Config, path: Path) -> None:
    """Refuse a starting model that does not fit ``cfg``, before any data is loaded."""
    from .model_dir import read_model_dir

    differ = read_model_dir(path).differences(cfg.model, cfg.features)
    if differ:
        raise ConfigError(f"train.init_from {cfg.train.init_from} ({path}): not the network "
                          f"this config trains (this config vs that model: {'; '.join(differ)})")
    if cfg.features.cmvn == "global" and not cfg.features.cmvn_stats:
        raise ConfigError(f"train.init_from {cfg.train.init_from}: with features.cmvn: global, "
                          "set features.cmvn_stats to the first model's cmvn.json, so that both "
                          "stages normalise their features alike")


def start_from(job: Job) -> None:
    """Put the weights of ``job.init_model`` into a fresh run's network and set the moving
    average to them."""
    from .model import load_model, transfer_weights

    path = job.init_model
    try:
        source = load_model(path, lstm_impl=job.model.lstm_impl)[0]
        transfer_weights(source, job.model)
    except (OSError, ValueError) as err:
        raise InputError(f"train.init_from {job.cfg.train.init_from} ({path}): cannot load "
                         f"its weights: {err}") from None
    job.steps.reset_average()
    job.runtime["init_model"] = str(path.resolve())
    print(f"starting from the weights of {path}")


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
            start_from(job)
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
    import json

    from .tracking import experiment_name

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

            from .report import plot_history

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

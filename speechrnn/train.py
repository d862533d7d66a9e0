"""Training: CTC on a manifest, with checkpoints, resume, early stopping and tracking.

``train(cfg)`` runs the whole job:

1. features for the train and dev manifests (cached; bad items reported and skipped);
2. epochs of Adam with a warm-up + cosine learning-rate schedule (annealed over the time
   budget when that ends training first) and global-norm gradient clipping; an optional
   moving average of the weights is what dev scores and the kept model use; a batch whose
   loss or gradients are not finite is skipped, weights untouched;
3. after each epoch: dev loss, dev WER and CER (greedy, or beam search with a word LM of the
   training transcripts: ``train.dev_decoder``); the best epoch by dev WER (then dev
   loss) is kept as the model; training stops early after ``patience`` epochs without a
   better WER, or when the time budget is spent;
4. a checkpoint (weights, optimizer, progress, the MLflow run id) after every epoch and on
   SIGINT/SIGTERM; rerunning the same command resumes from it in the same MLflow run, with
   the batches the interrupted run would have seen (the epoch order depends only on the
   seed and the epoch);
5. the best model exported to ``<workdir>/model`` and logged to MLflow, registered.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import shutil
import signal
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from .config import Config, dump_yaml, flatten
from .corpora import training_manifests
from .dataset import Examples, load_examples, make_dataset
from .decoding import DecodingOptions, beam_search, greedy_batch
from .evaluate import error_rates, score_utterances, write_utterances, write_word_errors
from .features import CMVN, FeatureExtractor
from .lm import WordLM
from .manifest import read_manifest
from .progress import progress_bar
from .text import Alphabet

log = logging.getLogger(__name__)


class TrainError(RuntimeError):
    """Training cannot go on; the message says why and what to do."""


class Interrupted(Exception):
    """SIGINT/SIGTERM: a checkpoint was written; rerunning resumes."""


def configure_threads(intra: int, inter: int) -> None:
    """Set TensorFlow's thread pools (before it starts; later calls only warn)."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
        tf.config.threading.set_inter_op_parallelism_threads(inter or os.cpu_count() or 2)
    except RuntimeError:
        log.info("TensorFlow already running; thread settings unchanged")


@dataclass
class TrainState:
    epoch: int = 0  # next epoch to run
    step: int = 0  # batches of that epoch already trained (after an interrupt)
    partial: dict = field(default_factory=dict)  # sums of the unfinished epoch
    best_wer: float = math.inf
    best_loss: float = math.inf
    best_epoch: int = -1
    bad_epochs: int = 0
    elapsed: float = 0.0  # training seconds, all sessions together
    history: list[dict] = field(default_factory=list)
    run_id: str | None = None
    config_digest: str = ""
    stop_reason: str = ""
    finished: bool = False


class Checkpointer:
    """``<dir>/last``: weights, optimizer (and weight-average) variables and state,
    replaced atomically."""

    def __init__(self, directory: Path):
        self.dir = Path(directory)

    def save(self, model, variables, state: TrainState) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f".tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        model.save_weights(tmp / "model.weights.h5")
        np.savez(tmp / "optimizer.npz", *[v.numpy() for v in variables])
        (tmp / "state.json").write_text(json.dumps(asdict(state), indent=1))
        last, old = self.dir / "last", self.dir / "old"
        shutil.rmtree(old, ignore_errors=True)
        if last.exists():
            last.rename(old)
        tmp.rename(last)
        shutil.rmtree(old, ignore_errors=True)

    def restore(self, model, variables, digest: str) -> TrainState | None:
        """The saved state, weights and optimizer, if any; refuses another config's run."""
        for name in ("last", "old"):  # "old" survives a crash between the two renames
            path = self.dir / name
            if (path / "state.json").exists():
                state = TrainState(**json.loads((path / "state.json").read_text()))
                if state.config_digest != digest:
                    raise TrainError(f"{self.dir.parent} holds a run of a different "
                                     "configuration; pass --fresh to start over, or set "
                                     "train.workdir to another folder")
                model.load_weights(path / "model.weights.h5")
                with np.load(path / "optimizer.npz") as saved:
                    values = [saved[f"arr_{i}"] for i in range(len(saved.files))]
                if len(values) != len(variables):
                    raise TrainError(f"{path}: optimizer state does not match the model")
                for var, value in zip(variables, values):
                    var.assign(value)
                return state
        return None

    def clear(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


class StopFlag:
    """Turns SIGINT/SIGTERM into a flag checked between batches."""

    def __init__(self):
        self.requested = False
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        if self.requested:  # a second signal: stop now
            raise KeyboardInterrupt
        self.requested = True
        log.warning("signal %s: finishing this batch, then checkpointing", signum)

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def config_digest(cfg: Config) -> str:
    """What must not change under a resumed run: the settings (tracking, evaluation, budget and
    thread settings may) and the train and dev manifests' contents."""
    keep = {k: v for k, v in flatten(cfg).items()
            if not k.startswith(("tracking.", "eval.", "train.time_budget", "train.epochs",
                                 "train.patience", "train.workdir", "train.intra",
                                 "train.inter", "batch.workers", "data.cache"))}
    h = hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode())
    for path in (*training_manifests(cfg.data), _manifest(cfg, cfg.data.dev)):
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def workdir_for(cfg: Config) -> Path:
    return Path(cfg.train.workdir or Path("runs") / cfg.name)


def _manifest(cfg: Config, split: str) -> Path:
    return Path(cfg.data.out) / f"{split}.{cfg.data.format}"


def _extractor(cfg: Config, workdir: Path, train_rows) -> FeatureExtractor:
    cache = cfg.data.cache or None
    if cfg.features.cmvn != "global":
        return FeatureExtractor(cfg.features, cache)
    stats = workdir / "cmvn.json"
    if cfg.features.cmvn_stats:
        CMVN.load(cfg.features.cmvn_stats).save(stats)
    elif not stats.exists():
        raw = FeatureExtractor(replace(cfg.features, cmvn="none"), cache)
        CMVN.compute(raw(r.audio, *r.segment) for r in train_rows).save(stats)
    return FeatureExtractor(cfg.features, cache, cmvn=CMVN.load(stats))


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


def make_optimizer(cfg: Config, steps_per_epoch: int):
    """Adam with global-norm clipping; its rate is set from :class:`Schedule` each step."""
    import keras

    schedule = Schedule.for_config(cfg, steps_per_epoch)
    return keras.optimizers.Adam(learning_rate=schedule(0), global_clipnorm=cfg.train.grad_clip)


class Steps:
    """The compiled training and evaluation steps of one model.

    With ``ema_decay`` > 0 an exponential moving average of the weights follows training
    (decay ``min(ema_decay, (1 + step) / (10 + step))``, so early steps are not dominated by
    the initial weights); :meth:`averaged` puts it in the model for evaluation and export.
    """

    def __init__(self, model, optimizer, n_features: int, ema_decay: float = 0.0):
        import tensorflow as tf

        self.model, self.optimizer = model, optimizer
        self.ema = [tf.Variable(v, trainable=False) for v in model.trainable_variables] \
            if ema_decay else []
        spec = [tf.TensorSpec([None, None, n_features], tf.float32),
                tf.TensorSpec([None], tf.int32), tf.TensorSpec([None, None], tf.int32),
                tf.TensorSpec([None], tf.int32)]
        variables = model.trainable_variables

        def losses(log_probs, feature_lengths, labels, label_lengths):
            return tf.nn.ctc_loss(labels=labels, logits=log_probs, label_length=label_lengths,
                                  logit_length=model.output_lengths(feature_lengths),
                                  logits_time_major=False, blank_index=0)

        @tf.function(input_signature=spec, reduce_retracing=True)
        def gradients(features, feature_lengths, labels, label_lengths):
            with tf.GradientTape() as tape:
                log_probs = model(features, feature_lengths, training=True)
                loss = tf.reduce_mean(losses(log_probs, feature_lengths, labels, label_lengths))
            grads = tape.gradient(loss, variables)
            finite = tf.math.is_finite(loss) & tf.math.is_finite(tf.linalg.global_norm(grads))
            return loss, grads, finite

        @tf.function(reduce_retracing=True)
        def apply(grads):
            optimizer.apply_gradients(zip(grads, variables))
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
        loss, grads, finite = self.gradients(batch["features"], batch["feature_lengths"],
                                             batch["labels"], batch["label_lengths"])
        if bool(finite):
            self.apply(grads)
        return float(loss), bool(finite)


def dev_lm(cfg: Config, train_rows) -> WordLM | None:
    """The word LM that beam-search dev decoding uses (None for greedy)."""
    if cfg.train.dev_decoder != "beam":
        return None
    return WordLM.from_texts([r.text for r in train_rows], order=cfg.eval.lm_order)


def evaluate_examples(steps: Steps, examples: Examples, cfg: Config, alphabet: Alphabet,
                      lm: WordLM | None = None):
    """Dev loss, WER/CER and an :class:`UtteranceScore` per utterance, decoded as
    ``train.dev_decoder`` says; with beam search also the greedy rates (else None)."""
    greedy: list[str] = [""] * len(examples)
    hyps = greedy
    beam = cfg.train.dev_decoder == "beam"
    if beam:
        hyps = [""] * len(examples)
        e = cfg.eval
        options = DecodingOptions("beam", e.beam_width, e.lm_weight, e.word_bonus)
    loss_sum = 0.0
    for batch in make_dataset(examples, cfg.batch, training=False):
        log_probs, losses = steps.evaluate(batch["features"], batch["feature_lengths"],
                                           batch["labels"], batch["label_lengths"])
        log_probs = log_probs.numpy()
        lengths = steps.model.output_lengths(batch["feature_lengths"]).numpy()
        for j, (i, text) in enumerate(zip(batch["index"].numpy(),
                                          greedy_batch(log_probs, lengths, alphabet))):
            greedy[int(i)] = text
            if beam:
                hyps[int(i)] = beam_search(log_probs[j, :lengths[j]], alphabet, options, lm)
        loss_sum += float(np.sum(losses.numpy()))
    refs = [r.text for r in examples.rows]
    rates = error_rates(refs, hyps)
    return loss_sum / len(examples), rates, score_utterances(
        [r.id for r in examples.rows], refs, hyps), error_rates(refs, greedy) if beam else None


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


def _start_tracking(cfg, tracker, state, train_rows, dev_rows, alphabet, workdir, skipped):
    new = state.run_id is None
    state.run_id = tracker.start(state.run_id, cfg.tracking.run_name or cfg.name) or None
    if new:
        tracker.log_params(flatten(cfg))
        tracker.log_dataset(f"{cfg.name}-train", _manifest(cfg, cfg.data.train), train_rows,
                            "training")
        tracker.log_dataset(f"{cfg.name}-dev", _manifest(cfg, cfg.data.dev), dev_rows, "dev")
        tracker.log_text(dump_yaml(cfg), "config.yaml")
        tracker.log_text(alphabet.to_json() + "\n", "alphabet.json")
        tracker.set_tags({"workdir": str(workdir.resolve()), "config": cfg.name})
        if skipped:
            tracker.log_text("".join(f"{r.audio}\t{why}\n" for r, why in skipped),
                             "skipped_utterances.tsv")
    else:  # after a crash: log the finished epochs MLflow missed, never one twice
        logged = tracker.logged_steps("dev_wer")
        for h in state.history:
            if h["epoch"] not in logged:
                tracker.log_metrics({k: v for k, v in h.items() if k != "epoch"}, h["epoch"])


def train(cfg: Config, tracker=None, fresh: bool = False,
          progress: bool | None = None) -> TrainResult:
    """Train (or resume training) the model ``cfg`` describes. See the module docstring."""
    import keras

    from .model import build_model, save_model
    from .tracking import NullTracker

    configure_threads(cfg.train.intra_op_threads, cfg.train.inter_op_threads)
    keras.utils.set_random_seed(cfg.train.seed)
    tracker = tracker or NullTracker()
    workdir = workdir_for(cfg)
    checkpoints = Checkpointer(workdir / "checkpoints")
    if fresh:
        checkpoints.clear()
        shutil.rmtree(workdir / "best", ignore_errors=True)
    workdir.mkdir(parents=True, exist_ok=True)
    alphabet = Alphabet()
    train_rows = [row for path in training_manifests(cfg.data) for row in read_manifest(path)]
    dev_rows = read_manifest(_manifest(cfg, cfg.data.dev))
    extractor = _extractor(cfg, workdir, train_rows)
    stride = cfg.model.subsampling if cfg.model.front_end else 1
    load = {"extractor": extractor, "alphabet": alphabet, "subsampling": stride,
            "workers": cfg.batch.workers, "progress": progress}
    train_ex = load_examples(train_rows, desc="train features", **load)
    dev_ex = load_examples(dev_rows, desc="dev features", **load)
    skipped = train_ex.skipped + dev_ex.skipped
    for row, why in skipped:
        print(f"skipped {row.audio}: {why}")
    if not len(train_ex) or not len(dev_ex):
        raise TrainError("no usable utterances in the train or dev manifest")

    model = build_model(cfg.model, cfg.features.n_features, alphabet)
    steps_per_epoch = sum(1 for _ in make_dataset(train_ex, cfg.batch, training=True))
    optimizer = make_optimizer(cfg, steps_per_epoch)
    schedule = Schedule.for_config(cfg, steps_per_epoch)
    optimizer.build(model.trainable_variables)
    digest = config_digest(cfg)
    steps = Steps(model, optimizer, cfg.features.n_features, cfg.train.ema_decay)
    state = checkpoints.restore(model, steps.state_variables, digest)
    if state is None:
        state = TrainState(config_digest=digest)
    else:
        print(f"resuming from {checkpoints.dir / 'last'}: epoch {state.epoch + 1}"
              + (f", batch {state.step + 1}" if state.step else ""))
    _start_tracking(cfg, tracker, state, train_rows, dev_rows, alphabet, workdir, skipped)
    lm = dev_lm(cfg, train_ex.rows)
    fps = cfg.features.frames_per_second
    t = cfg.train
    consecutive_bad = 0
    try:
        with StopFlag() as stop:
            while not state.stop_reason and state.epoch < t.epochs:
                epoch = state.epoch
                part = state.partial or {"loss": 0.0, "items": 0, "audio": 0.0, "seconds": 0.0,
                                         "nonfinite": 0}
                ds = make_dataset(train_ex, cfg.batch, training=True, seed=t.seed, epoch=epoch)
                bar = progress_bar(steps_per_epoch, f"epoch {epoch + 1}/{t.epochs}", progress)
                bar.update(state.step)
                start = time.perf_counter()
                for batch in ds.skip(state.step):
                    optimizer.learning_rate.assign(schedule(
                        epoch * steps_per_epoch + state.step,
                        state.elapsed + time.perf_counter() - start))
                    loss, finite = steps.train_batch(batch)
                    n = int(batch["features"].shape[0])
                    if finite:
                        part["loss"] += loss * n
                        part["items"] += n
                        consecutive_bad = 0
                    else:
                        part["nonfinite"] += 1
                        consecutive_bad += 1
                        if consecutive_bad >= t.max_nonfinite:
                            raise TrainError(f"{consecutive_bad} batches in a row had a "
                                             "non-finite loss; lower train.learning_rate")
                    part["audio"] += float(np.sum(batch["feature_lengths"].numpy())) / fps
                    state.step += 1
                    bar.update(1)
                    bar.set_postfix(loss=f"{part['loss'] / max(part['items'], 1):.3f}")
                    if stop.requested:
                        part["seconds"] += time.perf_counter() - start
                        state.elapsed += time.perf_counter() - start
                        state.partial = part
                        checkpoints.save(model, steps.state_variables, state)
                        bar.close()
                        raise Interrupted
                bar.close()
                seconds = time.perf_counter() - start
                part["seconds"] += seconds
                state.elapsed += seconds
                with steps.averaged():  # dev scores and the kept model: averaged weights
                    dev_loss, rates, table, greedy = evaluate_examples(steps, dev_ex, cfg,
                                                                       alphabet, lm)
                    lr = float(keras.ops.convert_to_numpy(
                        optimizer.learning_rate if not callable(optimizer.learning_rate)
                        else optimizer.learning_rate(optimizer.iterations)))
                    metrics = {
                        "train_loss": part["loss"] / max(part["items"], 1), "dev_loss": dev_loss,
                        "dev_wer": rates.wer, "dev_cer": rates.cer, "learning_rate": lr,
                        "epoch_seconds": part["seconds"],
                        "train_audio_s_per_s": part["audio"] / max(part["seconds"], 1e-9),
                        "nonfinite_batches": part["nonfinite"],
                    }
                    if greedy is not None:
                        metrics.update(dev_wer_greedy=greedy.wer, dev_cer_greedy=greedy.cer)
                    state.history.append({"epoch": epoch, **metrics})
                    better = rates.wer < state.best_wer - 1e-9 or (
                        abs(rates.wer - state.best_wer) <= 1e-9 and dev_loss < state.best_loss)
                    if better:
                        best = workdir / "best"
                        shutil.rmtree(best, ignore_errors=True)
                        save_model(best, model, cfg.features, alphabet,
                                   {"epoch": epoch, "dev_wer": rates.wer, "dev_cer": rates.cer,
                                    "config": cfg.name})
                        if cfg.features.cmvn == "global":
                            shutil.copy(workdir / "cmvn.json", best / "cmvn.json")
                        write_utterances(best / "dev_transcripts.csv", table)
                        write_word_errors(best / "dev_word_errors.csv", table)
                        state.best_wer, state.best_loss = rates.wer, dev_loss
                        state.best_epoch = epoch
                        state.bad_epochs = 0
                    else:
                        state.bad_epochs += 1
                state.epoch, state.step, state.partial = epoch + 1, 0, {}
                if state.bad_epochs >= t.patience:
                    state.stop_reason = f"early stop: no better dev WER in {t.patience} epochs"
                elif t.time_budget_min and state.elapsed >= 60 * t.time_budget_min:
                    state.stop_reason = f"time budget of {t.time_budget_min:g} min spent"
                # saved before logging: see _start_tracking
                checkpoints.save(model, steps.state_variables, state)
                tracker.log_metrics(metrics, step=epoch)
                print(f"epoch {epoch + 1:3d}  loss {metrics['train_loss']:.3f}  dev loss "
                      f"{dev_loss:.3f}  dev WER {100 * rates.wer:5.1f}%  CER "
                      f"{100 * rates.cer:5.1f}%"
                      + (f" (greedy {100 * greedy.wer:.1f}%)" if greedy is not None else "")
                      + f"  {metrics['train_audio_s_per_s']:.0f} audio-s/s"
                      f"{'  *' if better else ''}", flush=True)
    except Interrupted:
        tracker.end("KILLED")
        raise
    return _finish(cfg, tracker, state, workdir, checkpoints, model, steps, len(skipped))


def _finish(cfg, tracker, state, workdir, checkpoints, model, steps, skipped):
    from .tracking import plot_history

    if not state.stop_reason:
        state.stop_reason = f"{cfg.train.epochs} epochs done"
    best, final = workdir / "best", workdir / "model"
    if not state.finished:
        shutil.rmtree(final, ignore_errors=True)
        shutil.copytree(best, final)
        info = {}
        if state.history:
            fig = plot_history(state.history)
            tracker.log_figure(fig, "training_curves.png")
            import matplotlib.pyplot as plt

            plt.close(fig)
        for name in ("dev_transcripts.csv", "dev_word_errors.csv"):
            if (best / name).exists():  # a best epoch saved by an older version has no table
                tracker.log_artifact(best / name, "dev_transcripts")
        tracker.set_tags({"stop_reason": state.stop_reason, "best_epoch": state.best_epoch + 1})
        tracker.log_metrics({"best_dev_wer": state.best_wer}, step=state.best_epoch)
        info = tracker.log_model(final, cfg.tracking.register_as or experiment_name(cfg))
        (final / "mlflow.json").write_text(json.dumps({"run_id": state.run_id, **info}) + "\n")
        state.finished = True
        checkpoints.save(model, steps.state_variables, state)
        tracker.end("FINISHED")
    info_path = final / "mlflow.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    print(f"{state.stop_reason}; best dev WER {100 * state.best_wer:.1f}% at epoch "
          f"{state.best_epoch + 1}; model in {final}")
    return TrainResult(workdir, final, state.run_id, state.best_epoch, state.best_wer,
                       state.history, state.stop_reason, info, skipped)


def experiment_name(cfg: Config) -> str:
    return cfg.tracking.experiment or f"speechrnn-{cfg.name}"

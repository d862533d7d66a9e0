"""One training step and one evaluation step of a model, compiled: the CTC loss (with an
auxiliary head's beside it), Adam with global-norm clipping and the learning-rate
schedule, the moving average of the weights, and the share of each replica under a
``tf.distribute`` strategy.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

from .config import Config
from .distribute import split_batch

__all__ = ["Schedule", "Steps", "ctc_losses", "make_optimizer"]


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
        self.ema_decay, self.loss_scaling = ema_decay, loss_scaling
        self.variables = model.trainable_variables
        self.replicas = strategy.num_replicas_in_sync
        # with an auxiliary head: loss = (1 - w) x the main CTC loss + w x the auxiliary one
        self.aux_weight = model.config.aux_ctc.weight \
            if getattr(model, "aux_head", None) is not None else 0.0
        with strategy.scope():
            self.ema = [tf.Variable(v, trainable=False) for v in self.variables] \
                if ema_decay else []
        spec = [tf.TensorSpec([None, None, n_features], tf.float32),
                tf.TensorSpec([None], tf.int32), tf.TensorSpec([None, None], tf.int32),
                tf.TensorSpec([None], tf.int32)]
        self.gradients = tf.function(self._gradients, reduce_retracing=True)
        self.apply = tf.function(self._apply, reduce_retracing=True)
        self.evaluate = tf.function(self._evaluate, input_signature=spec,
                                    reduce_retracing=True)

    def _losses(self, log_probs, feature_lengths, labels, label_lengths):
        return ctc_losses(log_probs, self.model.output_lengths(feature_lengths), labels,
                          label_lengths)

    def _replica_gradients(self, batch, global_n):
        """One replica's share: its items' summed loss over the global batch size."""
        import tensorflow as tf

        model, features, lengths = self.model, batch["features"], batch["feature_lengths"]
        with tf.GradientTape() as tape:
            if self.aux_weight:
                log_probs, aux_probs = model(features, lengths, training=True, aux=True)
            else:
                log_probs = model(features, lengths, training=True)
            item_losses = self._losses(log_probs, lengths, batch["labels"],
                                       batch["label_lengths"])
            if self.aux_weight:
                w = self.aux_weight
                item_losses = (1.0 - w) * item_losses + w * self._losses(
                    aux_probs, lengths, batch["aux_labels"], batch["aux_label_lengths"])
            if "weight" in batch:  # fill-up copies (weight 0) of a split batch
                item_losses *= batch["weight"]
            loss = tf.reduce_sum(item_losses) / global_n
            scaled = self.optimizer.scale_loss(loss) if self.loss_scaling else loss
        return loss, tape.gradient(scaled, self.variables)

    def _gradients(self, batch, global_n):
        """The global batch's mean loss, summed gradients, and whether both are finite."""
        import tensorflow as tf

        strategy, sum_ = self.strategy, tf.distribute.ReduceOp.SUM
        loss, grads = strategy.run(self._replica_gradients, args=(batch, global_n))
        loss = strategy.reduce(sum_, loss, axis=None)
        grads = [strategy.reduce(sum_, g, axis=None) for g in grads]
        finite = tf.math.is_finite(loss)
        if not self.loss_scaling:  # overflowing scaled gradients are the loss scaler's business
            finite &= tf.math.is_finite(tf.linalg.global_norm(grads))
        return loss, grads, finite

    def _apply(self, grads):
        """One optimizer step with ``grads``, then the moving average."""
        import tensorflow as tf

        optimizer, variables, replicas = self.optimizer, self.variables, self.replicas
        if replicas == 1:
            optimizer.apply_gradients(zip(grads, variables))
        else:  # Keras sums the replicas' gradients: each brings its share of the total
            self.strategy.run(lambda g: optimizer.apply_gradients(zip(g, variables)),
                              args=([g / replicas for g in grads],))
        if self.ema:
            step = tf.cast(optimizer.iterations, tf.float32)
            decay = tf.minimum(self.ema_decay, (1.0 + step) / (10.0 + step))
            for average, v in zip(self.ema, variables):
                average.assign(decay * average + (1.0 - decay) * v)

    def _evaluate(self, features, feature_lengths, labels, label_lengths):
        log_probs = self.model(features, feature_lengths, training=False)
        return log_probs, self._losses(log_probs, feature_lengths, labels, label_lengths)

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

        keys = ("features", "feature_lengths", "labels", "label_lengths")
        if getattr(self.model, "aux_head", None) is not None:  # the auxiliary labels
            keys += ("aux_labels", "aux_label_lengths")
        items = {k: batch[k] for k in keys}
        global_n = tf.constant(float(batch["features"].shape[0]))
        loss, grads, finite = self.gradients(split_batch(self.strategy, items), global_n)
        if bool(finite):
            self.apply(grads)
        return float(loss), bool(finite)

"""The compiled training step: CTC loss, non-finite batches, mixed precision, the weight
average, the learning-rate schedule."""

from pathlib import Path

import numpy as np
import pytest


def test_nonfinite_batch_leaves_weights_alone(corpus, tmp_path):
    import tensorflow as tf

    from speechrnn.config import Config, ModelConfig
    from speechrnn.model import build_model
    from speechrnn.steps import Steps, make_optimizer
    from speechrnn.text import Alphabet

    cfg = Config(model=ModelConfig(conv_filters=8, lstm_layers=1, lstm_units=4))
    model = build_model(cfg.model, 39, Alphabet())
    optimizer = make_optimizer(cfg, 10)
    optimizer.build(model.trainable_variables)
    steps = Steps(model, optimizer, 39)
    before = [w.copy() for w in model.get_weights()]
    x = np.random.default_rng(0).standard_normal((2, 30, 39)).astype(np.float32)
    x[0, 3, 4] = np.nan
    batch = {"features": tf.constant(x), "feature_lengths": tf.constant([30, 30]),
             "labels": tf.constant([[1, 2], [3, 0]]), "label_lengths": tf.constant([2, 1])}
    loss, finite = steps.train_batch(batch)
    assert not finite and not np.isfinite(loss)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))
    x[0, 3, 4] = 0.0
    loss, finite = steps.train_batch({**batch, "features": tf.constant(x)})
    assert finite and np.isfinite(loss)
    assert not all(np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))


def test_ctc_losses_are_tensorflows_dense_ctc_loss_and_its_gradient():
    """The sparse-label C++ kernel gives the loss and gradient of the dense reference, each
    item over its own output and label lengths (padding in either changes nothing)."""
    import tensorflow as tf

    from speechrnn.steps import ctc_losses

    rng = np.random.default_rng(0)
    log_probs = tf.nn.log_softmax(tf.constant(rng.normal(0, 3, (6, 80, 29)), tf.float32))
    output_lengths = tf.constant([80, 60, 45, 80, 33, 70])
    label_lengths = tf.constant([10, 20, 5, 30, 1, 12])
    labels = np.zeros((6, 30), np.int32)
    for i, n in enumerate(label_lengths.numpy()):
        labels[i, :n] = rng.integers(1, 29, n)
    padded = np.concatenate([labels, rng.integers(1, 29, (6, 7))], axis=1)  # junk padding
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(log_probs)
        fast = ctc_losses(log_probs, output_lengths, tf.constant(padded), label_lengths)
        dense = tf.nn.ctc_loss(tf.constant(labels), log_probs, label_lengths, output_lengths,
                               logits_time_major=False, blank_index=0)
    np.testing.assert_allclose(fast.numpy(), dense.numpy(), rtol=1e-6)
    np.testing.assert_allclose(tape.gradient(fast, log_probs).numpy(),
                               tape.gradient(dense, log_probs).numpy(), atol=1e-3)
    # frames past an item's output length get no gradient
    grad = tape.gradient(fast, log_probs).numpy()
    assert not grad[2, 45:].any() and not grad[4, 33:].any()


def test_mixed_precision_step_scales_the_loss_and_keeps_float32_weights():
    """train.mixed_precision: float16 compute, float32 weights, a dynamic loss scale; the
    step trains and its loss is the float32 step's within float16 rounding."""
    import keras
    import tensorflow as tf

    from speechrnn.config import Config, ModelConfig, TrainConfig
    from speechrnn.model import build_model
    from speechrnn.steps import Steps, make_optimizer
    from speechrnn.text import Alphabet

    rng = np.random.default_rng(0)
    batch = {"features": tf.constant(rng.standard_normal((2, 30, 39)).astype(np.float32)),
             "feature_lengths": tf.constant([30, 24]), "labels": tf.constant([[1, 2], [3, 0]]),
             "label_lengths": tf.constant([2, 1])}
    small = ModelConfig(conv_filters=8, lstm_layers=1, lstm_units=4, dropout=0.0)
    keras.utils.set_random_seed(0)
    start = build_model(small, 39, Alphabet()).get_weights()
    losses = {}
    for mixed in (False, True):
        cfg = Config(model=small, train=TrainConfig(mixed_precision=mixed))
        keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
        try:
            model = build_model(cfg.model, 39, Alphabet())
            model.set_weights(start)
            optimizer = make_optimizer(cfg, 10)
            optimizer.build(model.trainable_variables)
            steps = Steps(model, optimizer, 39, loss_scaling=mixed)
            losses[mixed], finite = steps.train_batch(batch)
            for _ in range(40):  # an overflowing scaled step is skipped and the scale halved
                if not all(np.array_equal(a, b) for a, b in zip(start, model.get_weights())):
                    break
                steps.train_batch(batch)
        finally:
            keras.mixed_precision.set_global_policy("float32")
        assert finite and all(w.dtype == np.float32 for w in model.get_weights())
        assert not all(np.array_equal(a, b) for a, b in zip(start, model.get_weights()))
        assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer) == mixed
    assert losses[True] == pytest.approx(losses[False], rel=1e-2)


def test_weight_average_follows_training_and_is_swapped_in_for_evaluation():
    import tensorflow as tf

    from speechrnn.checkpoint import Checkpointer, TrainState
    from speechrnn.config import Config, ModelConfig, TrainConfig
    from speechrnn.model import build_model
    from speechrnn.steps import Steps, make_optimizer
    from speechrnn.text import Alphabet

    cfg = Config(model=ModelConfig(conv_filters=8, lstm_layers=1, lstm_units=4),
                 train=TrainConfig(ema_decay=0.9))
    model = build_model(cfg.model, 39, Alphabet())
    optimizer = make_optimizer(cfg, 10)
    optimizer.build(model.trainable_variables)
    steps = Steps(model, optimizer, 39, ema_decay=0.9)
    x = np.random.default_rng(0).standard_normal((2, 30, 39)).astype(np.float32)
    batch = {"features": tf.constant(x), "feature_lengths": tf.constant([30, 30]),
             "labels": tf.constant([[1, 2], [3, 0]]), "label_lengths": tf.constant([2, 1])}
    for _ in range(3):
        steps.train_batch(batch)
    live = [v.numpy().copy() for v in model.trainable_variables]
    with steps.averaged():
        averaged = [v.numpy().copy() for v in model.trainable_variables]
    assert not all(np.allclose(a, b) for a, b in zip(live, averaged))  # the average lags
    assert all(np.array_equal(a, v.numpy()) for a, v in zip(live, model.trainable_variables))
    assert len(steps.state_variables) == len(optimizer.variables) + len(live)
    # the average survives a checkpoint
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        Checkpointer(Path(tmp)).save(model, steps.state_variables, TrainState(config_digest="d"))
        for v in steps.ema:
            v.assign(tf.zeros_like(v))
        Checkpointer(Path(tmp)).restore(model, steps.state_variables, "d")
    with steps.averaged():
        assert all(np.allclose(a, v.numpy()) for a, v in zip(averaged, model.trainable_variables))


def test_schedule_warms_up_then_anneals_by_steps_or_budget():
    from speechrnn.steps import Schedule

    s = Schedule(peak=1e-3, warmup_steps=10, total_steps=110, min_ratio=0.05)
    assert s(0) == pytest.approx(1e-4) and s(10) == pytest.approx(1e-3)
    assert s(60) == pytest.approx(0.525e-3) and s(110) == pytest.approx(0.05e-3)
    assert s(500) == pytest.approx(0.05e-3)
    budget = Schedule(1e-3, 10, 110, 0.05, budget_seconds=100.0)
    assert budget(20, elapsed=10.0) == pytest.approx(s(20))  # steps lead
    assert budget(20, elapsed=100.0) == pytest.approx(0.05e-3)  # budget spent: annealed
    assert budget(20, elapsed=50.0) == pytest.approx(0.525e-3)

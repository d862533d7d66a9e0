"""Peer: the keras.io "Automatic Speech Recognition using CTC" recipe, re-implemented.

The recipe (Bouadjenek and Huynh, keras.io, 2021; sources in bench/README.md) is a
DeepSpeech2-like model: the magnitude spectrogram (STFT, 256-sample frames every 160
samples, 384-point FFT, square-rooted, each frame normalised to zero mean and unit variance
over its frequencies) -> Conv2D 32 x [11, 41] stride [2, 2] -> BatchNorm -> ReLU ->
Conv2D 32 x [11, 21] stride [1, 2] -> BatchNorm -> ReLU -> 5 x bidirectional GRU-512
(dropout 0.5 between) -> Dense 1024 + ReLU + dropout 0.5 -> softmax over characters plus
blank; CTC loss; Adam at 1e-4, batch 32, no schedule, no clipping; greedy decoding.

What differs, and why: audio is read at 16 kHz (the recipe's LJSpeech is 22.05 kHz), so
a frame is 16 ms every 10 ms; the characters are speechrnn's alphabet; the CTC loss and the
decoder use each item's true length (the recipe uses the padded length, which lets padding
change results: this can only help the peer); batches come from speechrnn's length-bucketed
pipeline. Training is held to a wall-clock budget (the time our model trained):
``bench/compare.py`` runs it.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import layers  # noqa: E402

from speechrnn.audio import SAMPLE_RATE, load_audio  # noqa: E402
from speechrnn.text import Alphabet  # noqa: E402

FRAME_LENGTH, FRAME_STEP, FFT_LENGTH = 256, 160, 384
SUBSAMPLING = 2  # the two strided convolutions' time stride
FRAME_SECONDS = SUBSAMPLING * FRAME_STEP / SAMPLE_RATE  # one output frame
N_FEATURES = FFT_LENGTH // 2 + 1  # 193


def spectrogram(audio: np.ndarray) -> np.ndarray:
    """The recipe's features: (frames, 193) float32."""
    audio = np.asarray(audio, np.float32)
    if len(audio) < FRAME_LENGTH:
        audio = np.pad(audio, (0, FRAME_LENGTH - len(audio)))
    spec = tf.abs(tf.signal.stft(audio, FRAME_LENGTH, FRAME_STEP, FFT_LENGTH)) ** 0.5
    mean = tf.reduce_mean(spec, axis=1, keepdims=True)
    std = tf.math.reduce_std(spec, axis=1, keepdims=True)
    return ((spec - mean) / (std + 1e-10)).numpy().astype(np.float32)


class Spectrogram:
    """A feature extractor with speechrnn's interface (``extractor(path, offset, end)``),
    so the recipe's features go through speechrnn's example loading and batching."""

    def __call__(self, path, offset: float = 0.0, end: float | None = None) -> np.ndarray:
        return spectrogram(load_audio(path, SAMPLE_RATE, offset, end))


@dataclass(frozen=True)
class RecipeConfig:
    rnn_layers: int = 5
    rnn_units: int = 512
    learning_rate: float = 1e-4
    batch_size: int = 32
    seed: int = 0


def build_network(vocab_size: int, cfg: RecipeConfig) -> keras.Model:
    """The recipe's layers, outputting logits (softmax + CTC == log_softmax + CTC)."""
    inputs = layers.Input((None, N_FEATURES), name="input")
    x = layers.Reshape((-1, N_FEATURES, 1), name="expand_dim")(inputs)
    x = layers.Conv2D(32, [11, 41], strides=[2, 2], padding="same", use_bias=False,
                      name="conv_1")(x)
    x = layers.BatchNormalization(name="conv_1_bn")(x)
    x = layers.ReLU(name="conv_1_relu")(x)
    x = layers.Conv2D(32, [11, 21], strides=[1, 2], padding="same", use_bias=False,
                      name="conv_2")(x)
    x = layers.BatchNormalization(name="conv_2_bn")(x)
    x = layers.ReLU(name="conv_2_relu")(x)
    x = layers.Reshape((-1, x.shape[-2] * x.shape[-1]))(x)
    for i in range(1, cfg.rnn_layers + 1):
        gru = layers.GRU(cfg.rnn_units, activation="tanh", recurrent_activation="sigmoid",
                         return_sequences=True, reset_after=True, name=f"gru_{i}")
        x = layers.Bidirectional(gru, merge_mode="concat", name=f"bidirectional_{i}")(x)
        if i < cfg.rnn_layers:
            x = layers.Dropout(0.5)(x)
    x = layers.Dense(2 * cfg.rnn_units, name="dense_1")(x)
    x = layers.ReLU(name="dense_1_relu")(x)
    x = layers.Dropout(0.5)(x)
    outputs = layers.Dense(vocab_size, name="logits")(x)
    return keras.Model(inputs, outputs, name="DeepSpeech_2")


class DeepSpeech2(keras.Model):
    """``model(features, lengths)`` -> log-probabilities, and ``output_lengths``: the
    interface of speechrnn's acoustic model, so speechrnn's training step and decoders
    serve the peer unchanged."""

    def __init__(self, vocab_size: int, cfg: RecipeConfig = RecipeConfig(), **kwargs):
        super().__init__(**kwargs)
        self.net = build_network(vocab_size, cfg)
        self._infer = tf.function(lambda x: tf.nn.log_softmax(self.net(x, training=False)),
                                  input_signature=[tf.TensorSpec([None, None, N_FEATURES])])

    def call(self, features, lengths=None, training=False):
        return tf.nn.log_softmax(self.net(features, training=training))

    @staticmethod
    def output_lengths(lengths):
        return (lengths + 1) // 2  # conv_1's time stride 2, "same" padding

    def predict_log_probs(self, features: np.ndarray) -> np.ndarray:
        return self._infer(tf.constant(features[None]))[0].numpy()


def train_for(model: DeepSpeech2, examples, cfg: RecipeConfig, seconds: float,
              progress: bool | None = None) -> dict:
    """Train on ``examples`` (speechrnn ``Examples`` of spectrograms) for ``seconds`` of
    wall-clock training time, checked after every batch. Returns what was done."""
    from speechrnn.config import BatchConfig
    from speechrnn.dataset import make_dataset
    from speechrnn.progress import progress_bar
    from speechrnn.steps import Steps

    optimizer = keras.optimizers.Adam(learning_rate=cfg.learning_rate)
    steps = Steps(model, optimizer, N_FEATURES)
    batches = BatchConfig(batch_size=cfg.batch_size)
    frames_per_second = SAMPLE_RATE / FRAME_STEP
    done = {"batches": 0, "epochs": 0.0, "audio_seconds": 0.0, "train_seconds": 0.0,
            "loss": float("nan"), "nonfinite_batches": 0}
    n_batches = sum(1 for _ in make_dataset(examples, batches, training=True))
    bar = progress_bar(int(seconds), "train (s)", progress)
    epoch, said = 0, 0.0
    while done["train_seconds"] < seconds:
        for batch in make_dataset(examples, batches, training=True, seed=cfg.seed, epoch=epoch):
            start = time.perf_counter()
            loss, finite = steps.train_batch(batch)
            elapsed = time.perf_counter() - start
            done["train_seconds"] += elapsed
            done["batches"] += 1
            done["nonfinite_batches"] += not finite
            if finite:
                done["loss"] = loss
            done["audio_seconds"] += float(np.sum(batch["feature_lengths"])) / frames_per_second
            bar.update(min(int(done["train_seconds"]), bar.total) - bar.n)
            bar.set_postfix(loss=f"{done['loss']:.2f}")
            if bar.disable and done["train_seconds"] - said >= 60:
                said = done["train_seconds"]
                print(f"  {said / 60:.0f} of {seconds / 60:.1f} min: {done['batches']} batches, "
                      f"loss {done['loss']:.2f}", flush=True)
            if done["train_seconds"] >= seconds:
                break
        epoch += 1
    bar.close()
    done["epochs"] = done["batches"] / n_batches
    done["train_audio_s_per_s"] = done["audio_seconds"] / max(done["train_seconds"], 1e-9)
    return done


def save(model: DeepSpeech2, alphabet: Alphabet, cfg: RecipeConfig, path: Path, info: dict):
    path.mkdir(parents=True, exist_ok=True)
    model.net.save_weights(path / "model.weights.h5")
    alphabet.save(path / "alphabet.json")
    (path / "recipe.json").write_text(json.dumps({"config": cfg.__dict__, **info}, indent=1))


def load(path: Path) -> tuple[DeepSpeech2, Alphabet]:
    alphabet = Alphabet.load(path / "alphabet.json")
    cfg = RecipeConfig(**json.loads((path / "recipe.json").read_text())["config"])
    model = DeepSpeech2(alphabet.size, cfg)
    model.net.load_weights(path / "model.weights.h5")
    return model, alphabet

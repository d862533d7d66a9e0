"""The acoustic model: Conv1D subsampling front end, bidirectional LSTM stack, CTC head.

``model(features, lengths)`` maps padded features (B, T, F) and their true lengths (B,)
to per-frame log-probabilities (B, T', vocab) over the alphabet plus blank (index 0);
``model.output_lengths(lengths)`` gives each item's valid T'. Padding never changes a
result: features beyond each length are zeroed, the front end pads each side by a fixed
``kernel // 2`` frames (so frame alignment does not depend on the batch's padded length),
and the backward LSTM reads each sequence reversed within its own length.

Each LSTM direction has one of two implementations (``ModelConfig.lstm_impl``), with the
same weights (kernel, recurrent kernel, bias; gates i, f, c, o) and results:

- ``scan``: :class:`LSTM`, a ``tf.scan`` loop: the fastest on CPU;
- ``keras``: ``keras.layers.LSTM``, which TensorFlow runs as one cuDNN kernel on a GPU.

``auto`` takes ``keras`` when TensorFlow sees a GPU, else ``scan``. The weights file's
layout differs between them, so ``model.json`` records the one a model was saved with
(``lstm_impl``; none: ``scan``) and :func:`load_network` builds that one, then moves the
weights (:func:`transfer_weights`) to the implementation asked for.

Under the ``mixed_float16`` Keras dtype policy the network computes in float16 and the
CTC head and log-softmax in float32: the log-probabilities are always float32.

A trained model is saved as a directory (:func:`save_model`, which replaces it whole):
``model.weights.h5``, ``model.json`` (model and feature configuration), ``alphabet.json``
and, when ONNX is installed, ``model.onnx`` (see :mod:`speechrnn.export`).
:func:`load_network` rebuilds the network from that configuration and loads the weights: no
pickled code.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from .config import FeatureConfig, ModelConfig, from_dict
from .export import export_onnx, onnx_available
from .files import check_space, replace_dir
from .lexicon import units_size
from .model_dir import FORMAT_VERSION, read_model_dir
from .text import Alphabet


class LSTM(layers.Layer):
    """An LSTM whose input projections are computed for all frames in one matrix product.

    Same weights, gate order (i, f, c, o) and results as ``keras.layers.LSTM`` (so weights
    can move to a standard Keras LSTM for export), but the time loop (``tf.scan``) only does
    the recurrent product: about 2x faster to train on CPU than Keras' generic loop. Its
    gradient is written out (:func:`recurrence`) rather than derived by TensorFlow.
    """

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        u = self.units
        self.kernel = self.add_weight(shape=(input_shape[-1], 4 * u), name="kernel",
                                      initializer="glorot_uniform")
        self.recurrent_kernel = self.add_weight(shape=(u, 4 * u), name="recurrent_kernel",
                                                initializer="orthogonal")

        def forget_bias_one(shape, dtype=None):  # Keras' unit_forget_bias
            return tf.concat([tf.zeros([u]), tf.ones([u]), tf.zeros([2 * u])], 0)

        self.bias = self.add_weight(shape=(4 * u,), name="bias", initializer=forget_bias_one)

    def call(self, x):
        # the variables stay float32 under mixed precision; compute in the input's dtype
        kernel, recurrent, bias = (tf.cast(w, x.dtype) for w in
                                   (self.kernel, self.recurrent_kernel, self.bias))
        projected = tf.einsum("btf,fg->tbg", x, kernel) + bias  # (T, B, 4u)
        return tf.transpose(recurrence(projected, recurrent), [1, 0, 2])


@tf.custom_gradient
def recurrence(projected, recurrent):
    """The LSTM's time loop: hidden states (T, B, u) from the input projections
    ``projected`` (T, B, 4u, bias included) and the recurrent kernel (u, 4u), from zero
    states.

    The gradient is the LSTM's backward recurrence written out: the forward loop keeps each
    step's gates and cell, the backward loop carries (dh, dc) back through time with one
    matrix product a step, and the recurrent kernel's gradient is one product over all
    steps afterwards. TensorFlow's own gradient of the loop replays every forward op in
    reverse and accumulates that kernel's gradient step by step, about twice the work."""
    zeros = tf.zeros(tf.stack([tf.shape(projected)[1], tf.shape(recurrent)[0]]),
                     projected.dtype)  # (B, u)

    def step(state, z_x):
        h, c, _ = state
        i, f, g, o = tf.split(z_x + tf.matmul(h, recurrent), 4, axis=1)
        i, f, g, o = tf.sigmoid(i), tf.sigmoid(f), tf.tanh(g), tf.sigmoid(o)
        c = f * c + i * g
        return o * tf.tanh(c), c, tf.concat([i, f, g, o], axis=1)

    h, c, gates = tf.scan(step, projected, initializer=(zeros, zeros, projected[0] * 0))

    def gradient(dh_out):
        previous = lambda seq: tf.concat([zeros[None], seq[:-1]], 0)  # noqa: E731
        transposed = tf.transpose(recurrent)

        def back(carry, step_in):
            dh_next, dc_next, _ = carry
            dh_t, gates_t, c_t, c_prev = step_in
            i, f, g, o = tf.split(gates_t, 4, axis=1)
            dh = dh_t + dh_next
            tanh_c = tf.tanh(c_t)
            dc = dc_next + dh * o * (1 - tanh_c * tanh_c)
            dz = tf.concat([dc * g * i * (1 - i), dc * c_prev * f * (1 - f),
                            dc * i * (1 - g * g), dh * tanh_c * o * (1 - o)], axis=1)
            return tf.matmul(dz, transposed), dc * f, dz

        _, _, dz = tf.scan(back, (dh_out, gates, c, previous(c)),
                           initializer=(zeros, zeros, gates[0] * 0), reverse=True)
        return dz, tf.einsum("tbu,tbg->ug", previous(h), dz)

    return h, gradient


LSTM_IMPLS = ("scan", "keras")


def lstm_weights(layer) -> tuple:
    """(kernel (in, 4u), recurrent kernel (u, 4u), bias (4u,)) of one LSTM direction, gates
    in Keras' order i, f, c, o: a :class:`LSTM` or a ``keras.layers.LSTM`` (its cell)."""
    cell = layer.cell if isinstance(layer, layers.LSTM) else layer
    return cell.kernel, cell.recurrent_kernel, cell.bias


class BiLSTM(layers.Layer):
    """Bidirectional LSTM over a padded batch, exact for every item's valid length.

    The forward LSTM never sees the padding before a valid frame; the backward one runs over
    each sequence reversed within its own length (``tf.reverse_sequence``), so padding comes
    last for it too. This needs no mask: Keras' masked RNN path measured about 1.6x slower
    on CPU. The two directions are independent ops, which TensorFlow runs in parallel.

    ``impl="keras"``: each direction is a ``keras.layers.LSTM`` (tanh, sigmoid, bias, no
    recurrent dropout, not unrolled): on a GPU, Keras runs it as cuDNN's LSTM kernel over
    the whole padded length. With no mask that is exact here too, since the padding of both
    directions comes after every valid frame.
    """

    def __init__(self, units: int, impl: str = "scan", **kwargs):
        super().__init__(**kwargs)
        if impl not in LSTM_IMPLS:
            raise ValueError(f"lstm impl must be one of {LSTM_IMPLS}, not {impl!r}")
        self.impl = impl
        if impl == "scan":
            self.forward_lstm = LSTM(units, name="forward")
            self.backward_lstm = LSTM(units, name="backward")
        else:
            self.forward_lstm = layers.LSTM(units, return_sequences=True, name="forward")
            self.backward_lstm = layers.LSTM(units, return_sequences=True, name="backward")

    def direction_weights(self) -> tuple[tuple, tuple]:
        """:func:`lstm_weights` of the forward and the backward direction."""
        return lstm_weights(self.forward_lstm), lstm_weights(self.backward_lstm)

    def call(self, x, lengths):
        forward = self.forward_lstm(x)
        reverse = tf.reverse_sequence(x, lengths, seq_axis=1, batch_axis=0)
        backward = tf.reverse_sequence(self.backward_lstm(reverse), lengths, seq_axis=1,
                                       batch_axis=0)
        return tf.concat([forward, backward], axis=-1)


class AcousticModel(keras.Model):
    """The network. ``lstm_impl``: ``scan`` or ``keras`` (None: ``config``'s, with ``auto``
    decided on this machine)."""

    def __init__(self, config: ModelConfig, n_features: int, vocab_size: int,
                 lstm_impl: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.lstm_impl = resolve_lstm_impl(config, lstm_impl)
        self.n_features = n_features
        self.vocab_size = vocab_size
        self.stride = config.stride
        self.front = None
        if config.front_end:
            k = config.conv_kernel
            self.front = [
                layers.ZeroPadding1D((k // 2, k // 2), name="pad"),
                layers.Conv1D(config.conv_filters, k, strides=self.stride, padding="valid",
                              activation="relu", name="conv"),
            ]
        self.lstms = [BiLSTM(config.lstm_units, self.lstm_impl, name=f"blstm{i}")
                      for i in range(config.lstm_layers)]
        self.norms = [layers.LayerNormalization(name=f"norm{i}") if config.norm == "layer"
                      else None for i in range(config.lstm_layers)]
        self.dropout = layers.Dropout(config.dropout)
        # float32 under mixed precision too: the log-softmax and the CTC loss need its range
        self.head = layers.Dense(vocab_size, name="ctc_head", dtype="float32")
        aux = config.aux_ctc
        self.aux_head = layers.Dense(units_size(aux.units), name="aux_ctc_head",
                                     dtype="float32") if aux.units else None

    def output_lengths(self, lengths):
        """Valid output frames for input lengths (``ModelConfig.output_frames``)."""
        return self.config.output_frames(tf.cast(lengths, tf.int32))

    def call(self, features, lengths, training=False, aux=False):
        """Log-probabilities of the main head; ``aux`` (a model with ``aux_ctc``): those of
        the auxiliary head too, as a pair (main, auxiliary)."""
        valid = tf.sequence_mask(lengths, tf.shape(features)[1], dtype=features.dtype)
        x = features * valid[:, :, tf.newaxis]  # whatever lies in the padding is ignored
        if self.front is not None:
            for layer in self.front:
                x = layer(x)
        out_lengths = self.output_lengths(lengths)
        lower = None
        for depth, (lstm, norm) in enumerate(zip(self.lstms, self.norms), 1):
            x = lstm(x, out_lengths)
            if norm is not None:
                x = norm(x)
            x = self.dropout(x, training=training)
            if self.aux_head is not None and depth == self.config.aux_ctc.layer:
                lower = x
        main = tf.nn.log_softmax(tf.cast(self.head(x), tf.float32), axis=-1)
        if not aux:
            return main
        return main, tf.nn.log_softmax(tf.cast(self.aux_head(lower), tf.float32), axis=-1)

    def predict_log_probs(self, features, lengths):
        """Compiled inference (eager ``tf.scan`` would loop in Python, ~50x slower)."""
        if not hasattr(self, "_predict"):
            spec = [tf.TensorSpec([None, None, self.n_features], tf.float32),
                    tf.TensorSpec([None], tf.int32)]
            self._predict = tf.function(lambda f, n: self(f, n, training=False),
                                        input_signature=spec, reduce_retracing=True)
        return self._predict(tf.convert_to_tensor(features, tf.float32),
                             tf.convert_to_tensor(lengths, tf.int32))

    def build_for_inference(self) -> AcousticModel:
        """Create the weights (the auxiliary head's too) by running one tiny batch."""
        self(np.zeros((1, 8, self.n_features), np.float32), np.array([8], np.int32),
             aux=self.aux_head is not None)
        return self


def resolve_lstm_impl(config: ModelConfig, lstm_impl: str | None = None) -> str:
    """``scan`` or ``keras``: ``lstm_impl`` when given, else ``config.lstm_impl``; ``auto``
    is ``keras`` when TensorFlow sees a GPU, else ``scan``. A bad value: ConfigError."""
    if lstm_impl is not None:
        config = replace(config, lstm_impl=lstm_impl)  # validates it
    return config.resolved_lstm_impl()


def build_model(config: ModelConfig, n_features: int, alphabet: Alphabet,
                lstm_impl: str | None = None) -> AcousticModel:
    """A built network (``lstm_impl`` None: ``config.lstm_impl``, ``auto`` resolved)."""
    return AcousticModel(config, n_features, alphabet.size, lstm_impl).build_for_inference()


def transfer_weights(src: keras.Model, dst: keras.Model) -> keras.Model:
    """Copy the weights of built model ``src`` into built model ``dst`` of the same
    configuration, whatever LSTM implementation either has (their weights come in the same
    order, names and shapes); returns ``dst``."""
    source, target = src.weights, dst.weights
    if len(source) != len(target):
        raise ValueError(f"cannot copy {len(source)} weights into {len(target)}: "
                         "not the same network")
    for a, b in zip(source, target):
        if a.name != b.name or tuple(a.shape) != tuple(b.shape):
            raise ValueError(f"weight {a.path} {tuple(a.shape)} does not match "
                             f"{b.path} {tuple(b.shape)}: not the same network")
    for a, b in zip(source, target):
        b.assign(a.value)
    return dst


def save_model(path: str | Path, model: AcousticModel, features: FeatureConfig,
               alphabet: Alphabet, extra: dict | None = None, atomic: bool = True) -> Path:
    """Write the model directory: weights, configuration, alphabet (and ONNX). ``atomic``:
    written beside ``path``, which it then replaces whole (a kill or a full disk midway
    leaves the previous model there, usable); False: the files are written into ``path``
    (a folder the caller replaces as a whole)."""
    path = Path(path)
    if atomic:
        with replace_dir(path) as folder:
            save_model(folder, model, features, alphabet, extra, atomic=False)
        return path
    onnx = onnx_available()
    weight_bytes = sum(int(np.prod(w.shape)) * np.dtype(w.dtype).itemsize
                       for w in model.weights)
    # HDF5 can crash the process on a full disk: say so before it writes
    check_space(path, (2 if onnx else 1) * weight_bytes + 2**20)
    path.mkdir(parents=True, exist_ok=True)
    model.save_weights(path / "model.weights.h5")
    meta = {"format_version": FORMAT_VERSION, "model": asdict(model.config),
            "lstm_impl": model.lstm_impl, "features": asdict(features),
            "n_features": model.n_features, **(extra or {})}
    (path / "model.json").write_text(json.dumps(meta, indent=2) + "\n")
    alphabet.save(path / "alphabet.json")
    if onnx:
        export_onnx(model, path / "model.onnx")
    return path


def load_network(path: str | Path, lstm_impl: str | None = None
               ) -> tuple[AcousticModel, FeatureConfig, Alphabet, dict]:
    """Rebuild a model directory written by :func:`save_model`, with the LSTM
    implementation ``lstm_impl`` (``scan``, ``keras`` or ``auto``; None: ``auto``, decided
    on this machine). The weights load into the implementation they were saved from, then
    move to the one asked for."""
    files = read_model_dir(path)
    config = from_dict(ModelConfig, files.meta["model"])
    wanted = resolve_lstm_impl(config, lstm_impl or "auto")
    model = build_model(config, files.meta["n_features"], files.alphabet, files.lstm_impl)
    model.load_weights(files.weights)
    if wanted != model.lstm_impl:
        model = transfer_weights(model, build_model(config, files.meta["n_features"],
                                                    files.alphabet, wanted))
    return model, files.features, files.alphabet, files.meta

"""ONNX export of the acoustic network, and an ONNX Runtime runner with the model's API.

The graph is written op by op from the trained weights (no converter): masking, the
Conv1D front end (``Conv`` with fixed padding and stride), each bidirectional layer as one
fused ONNX ``LSTM`` op whose ``sequence_lens`` makes the backward direction read each item
reversed within its own length (exactly as :class:`speechrnn.model.BiLSTM`, with either
LSTM implementation), layer norm, the dense CTC head and a log-softmax. Inputs
``features`` (B, T, F) float32 and ``lengths`` (B,) int32; outputs ``log_probs``
(B, T', vocab) and ``out_lengths`` (B,).

Keras keeps LSTM gates in the order (i, f, c, o), ONNX in (i, o, f, c): the kernels are
reordered on the way.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from .files import atomic_write_bytes

OPSET = 17  # LayerNormalization


def _gates_to_onnx(w: np.ndarray) -> np.ndarray:
    """Keras (..., 4u) in i, f, c, o -> ONNX (4u, ...) in i, o, f, c."""
    i, f, c, o = np.split(np.asarray(w), 4, axis=-1)
    return np.concatenate([i, o, f, c], axis=-1).T


class _Graph:
    """ONNX nodes and initializers, added in order; every value is named after its node."""

    def __init__(self):
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes, self.inits = [], []

    def const(self, name, value, dtype=np.float32) -> str:
        self.inits.append(self.numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def node(self, op, inputs, name, **attrs) -> str:
        self.nodes.append(self.helper.make_node(op, inputs, [name], name=name, **attrs))
        return name


def _masked_features(g: _Graph) -> str:
    """The features with the padding zeroed: features * (arange(T) < lengths)."""
    from onnx import TensorProto

    shape = g.node("Shape", ["features"], "feat_shape")
    t = g.node("Gather", [shape, g.const("one_i", 1, np.int64)], "feat_T", axis=0)
    steps = g.node("Range", [g.const("zero_i", 0, np.int64), t,
                             g.const("step_i", 1, np.int64)], "steps")
    lengths64 = g.node("Cast", ["lengths"], "lengths64", to=TensorProto.INT64)
    valid = g.node("Less", [g.node("Unsqueeze", [steps, g.const("ax0", [0], np.int64)],
                                   "steps_row"),
                            g.node("Unsqueeze", [lengths64, g.const("ax1", [1], np.int64)],
                                   "len_col")], "valid")
    mask = g.node("Unsqueeze", [g.node("Cast", [valid], "valid_f", to=TensorProto.FLOAT),
                                g.const("ax2", [2], np.int64)], "mask")
    return g.node("Mul", ["features", mask], "masked")


def _front_end(g: _Graph, model, x: str) -> str:
    """The Conv1D front end (if any); the sequence comes out time-major (T', B, C)."""
    if model.front is None:
        return g.node("Transpose", [x], "seq_in", perm=[1, 0, 2])
    kernel, bias = (w.numpy() for w in model.front[1].weights)  # (k, in, out), (out,)
    k = kernel.shape[0]
    x = g.node("Transpose", [x], "conv_in", perm=[0, 2, 1])  # (B, F, T)
    x = g.node("Conv", [x, g.const("conv_w", kernel.transpose(2, 1, 0)),
                        g.const("conv_b", bias)],
               "conv", kernel_shape=[k], strides=[model.stride], pads=[k // 2, k // 2])
    x = g.node("Relu", [x], "conv_relu")
    return g.node("Transpose", [x], "seq_in", perm=[2, 0, 1])  # (T', B, C)


def _bilstm(g: _Graph, i: int, blstm, norm, x: str, out_len: str) -> str:
    """BiLSTM layer ``i`` as one fused bidirectional ``LSTM`` op, then its layer norm."""
    u = blstm.forward_lstm.units
    w, r, b = [], [], []
    for weights in blstm.direction_weights():  # either LSTM implementation
        kernel, recurrent, bias = (v.numpy() for v in weights)
        w.append(_gates_to_onnx(kernel))
        r.append(_gates_to_onnx(recurrent))
        b.append(np.concatenate([_gates_to_onnx(bias), np.zeros(4 * u)]))
    y = g.node("LSTM", [x, g.const(f"W{i}", w), g.const(f"R{i}", r), g.const(f"B{i}", b),
                        out_len], f"lstm{i}", direction="bidirectional", hidden_size=u)
    y = g.node("Transpose", [y], f"lstm{i}_t", perm=[0, 2, 1, 3])  # (T, B, 2, u)
    x = g.node("Reshape", [y, g.const(f"shape{i}", [0, 0, 2 * u], np.int64)], f"lstm{i}_out")
    if norm is None:
        return x
    return g.node("LayerNormalization", [x, g.const(f"gamma{i}", norm.gamma.numpy()),
                                         g.const(f"beta{i}", norm.beta.numpy())],
                  f"norm{i}", axis=-1, epsilon=float(norm.epsilon))


def build_onnx(model):
    """The ONNX ``ModelProto`` of a built :class:`~speechrnn.model.AcousticModel`."""
    import onnx
    from onnx import TensorProto, helper

    g = _Graph()
    x = _front_end(g, model, _masked_features(g))
    # ceil(lengths / stride), as ModelConfig.output_frames computes it
    stride = g.const("stride", model.stride, np.int32)
    out_len = g.node("Div", [g.node("Add", ["lengths", g.const("stride_m1", model.stride - 1,
                                                               np.int32)], "len_plus"),
                             stride], "out_lengths")
    for i, (blstm, norm) in enumerate(zip(model.lstms, model.norms)):
        x = _bilstm(g, i, blstm, norm, x, out_len)
    head_w, head_b = (v.numpy() for v in model.head.weights)
    x = g.node("Add", [g.node("MatMul", [x, g.const("head_w", head_w)], "head_mm"),
                       g.const("head_b", head_b)], "logits")
    x = g.node("LogSoftmax", [x], "log_probs_t", axis=-1)
    g.node("Transpose", [x], "log_probs", perm=[1, 0, 2])
    graph = helper.make_graph(
        g.nodes, "speechrnn",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT,
                                       ["batch", "frames", model.n_features]),
         helper.make_tensor_value_info("lengths", TensorProto.INT32, ["batch"])],
        [helper.make_tensor_value_info("log_probs", TensorProto.FLOAT,
                                       ["batch", "out_frames", model.vocab_size]),
         helper.make_tensor_value_info("out_lengths", TensorProto.INT32, ["batch"])],
        g.inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="speechrnn")
    proto.ir_version = 8  # readable by every ONNX Runtime since 1.10
    onnx.checker.check_model(proto)
    return proto


def export_onnx(model, path: str | Path) -> Path:
    """Write the network to ``path`` (``model.onnx`` in a model directory)."""
    path = Path(path)
    atomic_write_bytes(path, build_onnx(model).SerializeToString())
    return path


def onnx_available() -> bool:
    """Can this environment write ONNX models (the ``onnx`` package)?"""
    return importlib.util.find_spec("onnx") is not None


def onnxruntime_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


class OnnxNetwork:
    """The exported network under ONNX Runtime, with the Keras model's inference API."""

    def __init__(self, model: str | Path | bytes, threads: int = 0):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        source = model if isinstance(model, bytes) else str(model)
        self.session = ort.InferenceSession(source, options,
                                            providers=["CPUExecutionProvider"])

    def predict_log_probs(self, features, lengths) -> np.ndarray:
        log_probs, _ = self.session.run(None, {
            "features": np.asarray(features, np.float32),
            "lengths": np.asarray(lengths, np.int32)})
        return log_probs

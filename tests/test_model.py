import json

import h5py
import keras
import numpy as np
import pytest

from speechrnn.config import ConfigError, FeatureConfig, ModelConfig
from speechrnn.model import (
    build_model,
    load_network,
    lstm_weights,
    resolve_lstm_impl,
    save_model,
    transfer_weights,
)
from speechrnn.text import Alphabet

SMALL = ModelConfig(conv_filters=16, lstm_layers=2, lstm_units=8, dropout=0.0)
TINY = ModelConfig(conv_filters=16, lstm_layers=2, lstm_units=24, dropout=0.0)


def test_output_shape_lengths_and_log_probs():
    model = build_model(SMALL, 39, Alphabet())
    x = np.random.default_rng(0).standard_normal((2, 100, 39)).astype(np.float32)
    out = model(x, np.array([100, 61], np.int32)).numpy()
    assert out.shape == (2, 34, 29)
    np.testing.assert_allclose(np.exp(out).sum(-1), 1.0, rtol=1e-5)
    assert model.output_lengths(np.array([100, 61, 1])).numpy().tolist() == [34, 21, 1]
    plain = build_model(ModelConfig(front_end=False, subsampling=1, lstm_layers=1,
                                    lstm_units=4), 39, Alphabet())
    assert plain(x, np.array([100, 61], np.int32)).shape == (2, 100, 29)


@pytest.mark.parametrize("stride,impl", [(1, "scan"), (2, "scan"), (3, "scan"), (4, "scan"),
                                         (1, "keras"), (3, "keras")])
def test_padding_never_changes_a_result(stride, impl):
    model = build_model(ModelConfig(subsampling=stride, conv_filters=16, lstm_layers=2,
                                    lstm_units=8, lstm_impl=impl), 39, Alphabet())
    assert model.lstm_impl == impl
    rng = np.random.default_rng(stride)
    a = rng.standard_normal((1, 77, 39)).astype(np.float32)
    alone = model(a, np.array([77], np.int32)).numpy()[0]
    n = len(alone)
    garbage = rng.standard_normal((1, 40, 39)).astype(np.float32) * 5
    padded = np.concatenate([a, garbage], axis=1)
    other = rng.standard_normal((1, 117, 39)).astype(np.float32)
    batch = model(np.concatenate([padded, other]), np.array([77, 117], np.int32)).numpy()
    np.testing.assert_allclose(batch[0, :n], alone, atol=1e-5)


def test_save_and_load_round_trip(tmp_path):
    model = build_model(SMALL, 39, Alphabet())
    x = np.random.default_rng(1).standard_normal((1, 50, 39)).astype(np.float32)
    before = model(x, np.array([50], np.int32)).numpy()
    save_model(tmp_path / "m", model, FeatureConfig(), Alphabet(), {"dev_wer": 0.1})
    loaded, features, alphabet, meta = load_network(tmp_path / "m")
    np.testing.assert_array_equal(loaded(x, np.array([50], np.int32)).numpy(), before)
    assert features == FeatureConfig() and alphabet == Alphabet() and meta["dev_wer"] == 0.1
    assert {p.name for p in (tmp_path / "m").iterdir()} == {
        "model.weights.h5", "model.json", "alphabet.json", "model.onnx"}
    with pytest.raises(FileNotFoundError, match="not a speechrnn model directory"):
        load_network(tmp_path)


@pytest.mark.parametrize("kwargs,message", [
    ({"subsampling": 5}, "1-4"), ({"front_end": False}, "front_end"),
    ({"conv_kernel": 4}, "odd"), ({"norm": "batch"}, "layer|none"), ({"dropout": 1.0}, "dropout"),
    ({"lstm_impl": "cudnn"}, "auto|scan|keras"),
])
def test_bad_model_config(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ModelConfig(**kwargs)


# ---------------------------------------------------------------- LSTM implementations


def padded_batch(seed: int = 0):
    """Items of 37, 20, 5 and 1 frames padded to 40, with garbage in the padding."""
    rng = np.random.default_rng(seed)
    lengths = np.array([37, 20, 5, 1], np.int32)
    x = rng.standard_normal((4, 40, 39)).astype(np.float32)
    x[np.arange(40)[None, :] >= lengths[:, None]] = 5.0
    return x, lengths


def sharpen(model, seed: int = 0):
    """Larger weights than the initialiser: sharper outputs, larger differences."""
    rng = np.random.default_rng(seed)
    model.set_weights([w + rng.normal(0, 0.1, w.shape).astype(w.dtype)
                       for w in model.get_weights()])
    return model


def assert_valid_frames_close(model, actual, expected, lengths, atol):
    assert actual.dtype == np.float32 and expected.dtype == np.float32
    for i, n in enumerate(model.output_lengths(lengths).numpy()):
        np.testing.assert_allclose(actual[i, :n], expected[i, :n], atol=atol, rtol=0)


def test_scan_and_keras_lstms_give_the_same_log_probs():
    scan = sharpen(build_model(TINY, 39, Alphabet(), lstm_impl="scan"))
    keras_model = transfer_weights(scan, build_model(TINY, 39, Alphabet(), lstm_impl="keras"))
    assert (scan.lstm_impl, keras_model.lstm_impl) == ("scan", "keras")
    blstm = keras_model.lstms[0]
    assert isinstance(blstm.forward_lstm, keras.layers.LSTM)
    assert blstm.forward_lstm.use_cudnn == "auto" and not blstm.forward_lstm.unroll
    for a, b in zip(lstm_weights(scan.lstms[1].backward_lstm),
                    lstm_weights(keras_model.lstms[1].backward_lstm)):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    x, lengths = padded_batch()
    expected = scan.predict_log_probs(x, lengths).numpy()
    assert_valid_frames_close(scan, keras_model.predict_log_probs(x, lengths).numpy(),
                              expected, lengths, atol=1e-5)
    assert_valid_frames_close(scan, keras_model(x, lengths).numpy(), expected, lengths,
                              atol=1e-5)  # eager too
    with pytest.raises(ValueError, match="not the same network"):
        transfer_weights(scan, build_model(SMALL, 39, Alphabet(), lstm_impl="keras"))


def test_scan_lstms_written_out_gradient_is_the_keras_lstms_autodiff():
    """The scan LSTM's backward recurrence (model.recurrence) gives, through the whole
    network and a padded batch, the weight gradients TensorFlow derives for Keras' LSTM."""
    import tensorflow as tf

    scan = sharpen(build_model(TINY, 39, Alphabet(), lstm_impl="scan"))
    keras_model = transfer_weights(scan, build_model(TINY, 39, Alphabet(), lstm_impl="keras"))
    x, lengths = padded_batch()
    weights = np.random.default_rng(1).normal(size=(x.shape[0], 1, 1)).astype(np.float32)

    def gradients(model):
        with tf.GradientTape() as tape:
            out = model(x, lengths, training=True)
            valid = tf.sequence_mask(model.output_lengths(lengths), tf.shape(out)[1])
            loss = tf.reduce_sum(tf.where(valid[..., None], out * weights, 0.0))
        return [(v.path, g.numpy()) for v, g in
                zip(model.trainable_variables, tape.gradient(loss, model.trainable_variables))]

    mine, reference = gradients(scan), gradients(keras_model)
    assert len(mine) == len(reference)
    for (name, a), (_, b) in zip(mine, reference, strict=True):
        scale = np.abs(b).max()
        assert a.shape == b.shape and scale > 0, name
        assert np.abs(a - b).max() <= 1e-4 * scale, name


@pytest.mark.parametrize("saved,loaded", [("scan", "keras"), ("keras", "scan")])
def test_a_model_moves_between_lstm_impls(tmp_path, saved, loaded):
    model = sharpen(build_model(TINY, 39, Alphabet(), lstm_impl=saved))
    x, lengths = padded_batch(1)
    before = model.predict_log_probs(x, lengths).numpy()
    save_model(tmp_path / "m", model, FeatureConfig(), Alphabet())
    assert json.loads((tmp_path / "m" / "model.json").read_text())["lstm_impl"] == saved
    for impl in (saved, loaded):
        other, *_ = load_network(tmp_path / "m", lstm_impl=impl)
        assert other.lstm_impl == impl
        assert_valid_frames_close(model, other.predict_log_probs(x, lengths).numpy(), before,
                                  lengths, atol=1e-5)
    assert load_network(tmp_path / "m")[0].lstm_impl == ModelConfig().resolved_lstm_impl()
    with pytest.raises(ConfigError, match="auto|scan|keras"):
        load_network(tmp_path / "m", lstm_impl="cudnn")


def test_scan_weights_file_layout_is_unchanged(tmp_path):
    """Directories written before ``lstm_impl`` existed (no key in model.json) load."""
    config = ModelConfig(conv_filters=16, lstm_layers=1, lstm_units=16, dropout=0.0)
    model = build_model(config, 39, Alphabet(), lstm_impl="scan")
    save_model(tmp_path / "m", model, FeatureConfig(), Alphabet())
    with h5py.File(tmp_path / "m" / "model.weights.h5") as f:
        names = set()
        f.visititems(lambda name, obj: names.add(name) if isinstance(obj, h5py.Dataset)
                     else None)
    lstm = [f"layers/bi_lstm/{d}_lstm/vars/{i}" for d in ("forward", "backward")
            for i in range(3)]
    assert names == {"front/conv1d/vars/0", "front/conv1d/vars/1", "head/vars/0",
                     "head/vars/1", "layers/layer_normalization/vars/0",
                     "layers/layer_normalization/vars/1", *lstm}
    meta_path = tmp_path / "m" / "model.json"
    meta = json.loads(meta_path.read_text())
    del meta["lstm_impl"], meta["model"]["lstm_impl"]
    meta_path.write_text(json.dumps(meta))
    x, lengths = padded_batch(2)
    before = model.predict_log_probs(x, lengths).numpy()
    for impl in ("scan", "keras"):
        loaded, *_ = load_network(tmp_path / "m", lstm_impl=impl)
        assert_valid_frames_close(model, loaded.predict_log_probs(x, lengths).numpy(), before,
                                  lengths, atol=1e-5)


def test_lstm_impl_resolves():
    import tensorflow as tf

    here = "keras" if tf.config.list_physical_devices("GPU") else "scan"
    assert ModelConfig().lstm_impl == "auto" and ModelConfig().resolved_lstm_impl() == here
    assert ModelConfig(lstm_impl="keras").resolved_lstm_impl() == "keras"
    assert ModelConfig(lstm_impl="scan").resolved_lstm_impl() == "scan"
    assert resolve_lstm_impl(ModelConfig(lstm_impl="keras")) == "keras"
    assert resolve_lstm_impl(ModelConfig(lstm_impl="keras"), "auto") == here
    assert resolve_lstm_impl(ModelConfig(), "scan") == "scan"
    with pytest.raises(ConfigError, match="auto|scan|keras"):
        resolve_lstm_impl(ModelConfig(), "cudnn")


@pytest.mark.parametrize("impl", ["scan", "keras"])
def test_mixed_precision_computes_float16_returns_float32(impl):
    reference = build_model(TINY, 39, Alphabet(), lstm_impl=impl)
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        mixed = transfer_weights(reference, build_model(TINY, 39, Alphabet(), lstm_impl=impl))
        assert mixed.lstms[0].forward_lstm.compute_dtype == "float16"
        assert all(w.dtype == "float32" for w in mixed.weights)
        x, lengths = padded_batch(3)
        out = mixed.predict_log_probs(x, lengths).numpy()
        eager = mixed(x, lengths).numpy()
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert np.isfinite(out).all() and np.isfinite(eager).all()
    expected = reference.predict_log_probs(x, lengths).numpy()
    assert_valid_frames_close(reference, out, expected, lengths, atol=1e-2)
    assert_valid_frames_close(reference, eager, expected, lengths, atol=1e-2)
    assert not np.array_equal(out, expected)  # float16 did the work


def test_a_failed_save_leaves_the_previous_model_whole(tmp_path, monkeypatch):
    """A full disk (or a kill) while the ONNX file is written: the model directory is the
    previous one, whole, and no temporary folder is left beside it."""
    import errno
    import os

    import speechrnn.export as export

    model = build_model(SMALL, 39, Alphabet())
    save_model(tmp_path / "m", model, FeatureConfig(), Alphabet(), {"dev_wer": 0.1})

    def full(path, data):
        path.write_bytes(data[:10])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(export, "atomic_write_bytes", full)
    with pytest.raises(OSError) as err:
        save_model(tmp_path / "m", model, FeatureConfig(), Alphabet(), {"dev_wer": 0.2})
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(tmp_path / "m")
    assert load_network(tmp_path / "m")[3]["dev_wer"] == 0.1
    assert os.listdir(tmp_path) == ["m"]


def test_an_auxiliary_head_reads_a_lower_layer_and_inference_leaves_it_out(tmp_path):
    """aux_ctc: phones from BiLSTM layer 1 under a character head; the saved model (weights
    and ONNX) answers with the main head alone, as a model without one would."""
    from speechrnn.config import AuxCTCConfig
    from speechrnn.export import onnxruntime_available
    from speechrnn.lexicon import PHONES

    config = ModelConfig(conv_filters=16, lstm_layers=2, lstm_units=8, dropout=0.0,
                         aux_ctc=AuxCTCConfig(units="phones", layer=1, weight=0.3))
    model = build_model(config, 39, Alphabet())
    x = np.random.default_rng(2).standard_normal((2, 60, 39)).astype(np.float32)
    n = np.array([60, 45], np.int32)
    main, aux = (t.numpy() for t in model(x, n, aux=True))
    assert main.shape == (2, 20, 29) and aux.shape == (2, 20, len(PHONES) + 2)
    np.testing.assert_allclose(np.exp(aux).sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(model(x, n).numpy(), main)
    # the auxiliary head reads layer 1: changing layer 2's weights leaves it alone
    blstm2 = model.get_layer("blstm1")
    blstm2.set_weights([w * 0.5 for w in blstm2.get_weights()])
    np.testing.assert_allclose(model(x, n, aux=True)[1].numpy(), aux, atol=1e-6)
    save_model(tmp_path / "m", model, FeatureConfig(), Alphabet())
    loaded = load_network(tmp_path / "m")[0]
    np.testing.assert_allclose(loaded(x, n).numpy(), model(x, n).numpy(), atol=1e-6)
    if onnxruntime_available() and (tmp_path / "m" / "model.onnx").exists():
        from speechrnn.export import OnnxNetwork

        onnx_out = OnnxNetwork(tmp_path / "m" / "model.onnx").predict_log_probs(x, n)
        assert np.asarray(onnx_out).shape[-1] == 29


@pytest.mark.parametrize("aux", [dict(units="chars"), dict(units="phones", layer=3),
                                 dict(units="phones", weight=1.0)])
def test_an_auxiliary_head_is_checked(aux):
    from speechrnn.config import AuxCTCConfig

    with pytest.raises(ConfigError, match="aux_ctc"):
        ModelConfig(lstm_layers=2, aux_ctc=AuxCTCConfig(**aux))

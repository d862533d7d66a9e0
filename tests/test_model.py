import numpy as np
import pytest

from speechrnn.config import ConfigError, FeatureConfig, ModelConfig
from speechrnn.model import build_model, load_model, save_model
from speechrnn.text import Alphabet

SMALL = ModelConfig(conv_filters=16, lstm_layers=2, lstm_units=8, dropout=0.0)


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


@pytest.mark.parametrize("stride", [1, 2, 3, 4])
def test_padding_never_changes_a_result(stride):
    model = build_model(ModelConfig(subsampling=stride, conv_filters=16, lstm_layers=2,
                                    lstm_units=8), 39, Alphabet())
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
    loaded, features, alphabet, meta = load_model(tmp_path / "m")
    np.testing.assert_array_equal(loaded(x, np.array([50], np.int32)).numpy(), before)
    assert features == FeatureConfig() and alphabet == Alphabet() and meta["dev_wer"] == 0.1
    assert {p.name for p in (tmp_path / "m").iterdir()} == {
        "model.weights.h5", "model.json", "alphabet.json", "model.onnx"}
    with pytest.raises(FileNotFoundError, match="not a speechrnn model directory"):
        load_model(tmp_path)


@pytest.mark.parametrize("kwargs,message", [
    ({"subsampling": 5}, "1-4"), ({"front_end": False}, "front_end"),
    ({"conv_kernel": 4}, "odd"), ({"norm": "batch"}, "layer|none"), ({"dropout": 1.0}, "dropout"),
])
def test_bad_model_config(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ModelConfig(**kwargs)

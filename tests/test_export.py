"""ONNX export: the same log-probabilities and text as Keras, on real audio."""

import numpy as np
import pytest
from conftest import corpora_root

from speechrnn.audio import load_audio
from speechrnn.config import FeatureConfig, ModelConfig
from speechrnn.decoding import greedy_batch
from speechrnn.export import OnnxNetwork, build_onnx
from speechrnn.features import FeatureExtractor
from speechrnn.manifest import read_manifest
from speechrnn.model import build_model
from speechrnn.text import Alphabet


def speech(synth_corpus) -> list[np.ndarray]:
    """FSDD recordings when the corpora are here, else the synthetic test voices."""
    fsdd = corpora_root() / "fsdd" / "recordings"
    paths = sorted(fsdd.glob("*.wav"))[::300] if fsdd.is_dir() else \
        [r.audio for r in read_manifest(synth_corpus / "test.jsonl")]
    return [load_audio(p) for p in paths]


def batch(audios):
    feats = [FeatureExtractor(FeatureConfig()).from_audio(a) for a in audios]
    lengths = np.array([len(f) for f in feats], np.int32)
    x = np.zeros((len(feats), lengths.max(), feats[0].shape[1]), np.float32)
    for i, f in enumerate(feats):
        x[i, :len(f)] = f
    x[0, lengths[0]:] = 7.0  # whatever lies in the padding must not matter
    return x, lengths


@pytest.mark.parametrize("config", [
    ModelConfig(),  # the default: stride-3 front end, 3 x BiLSTM-224, layer norm
    ModelConfig(front_end=False, subsampling=1, lstm_layers=2, lstm_units=32, norm="none"),
    ModelConfig(subsampling=2, conv_kernel=3, lstm_layers=1, lstm_units=48),
    # each direction a keras.layers.LSTM (cuDNN on a GPU) instead of the tf.scan LSTM
    ModelConfig(lstm_layers=2, lstm_units=64, lstm_impl="keras"),
], ids=["default", "no-front-end", "stride-2", "keras-lstm"])
def test_onnx_matches_keras(config, synth_corpus):
    alphabet = Alphabet()
    model = build_model(config, 39, alphabet)
    assert model.lstm_impl == config.resolved_lstm_impl()
    rng = np.random.default_rng(0)  # larger weights than the initialiser: sharper outputs
    model.set_weights([w + rng.normal(0, 0.1, w.shape).astype(w.dtype)
                       for w in model.get_weights()])
    x, lengths = batch(speech(synth_corpus))
    keras_out = model.predict_log_probs(x, lengths).numpy()
    onnx_out = OnnxNetwork(build_onnx(model).SerializeToString()).predict_log_probs(x, lengths)
    out_lengths = model.output_lengths(lengths).numpy()
    for i, n in enumerate(out_lengths):
        np.testing.assert_allclose(onnx_out[i, :n], keras_out[i, :n], atol=1e-4)
    texts = greedy_batch(keras_out, out_lengths, alphabet)
    assert texts == greedy_batch(onnx_out, out_lengths, alphabet)
    assert any(texts)  # not all blank: the comparison says something

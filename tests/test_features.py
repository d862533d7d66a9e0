import threading

import numpy as np
import pytest
from conftest import tone, write

from speechrnn.audio import AudioError
from speechrnn.config import FeatureConfig
from speechrnn.features import (
    CMVN,
    FeatureCache,
    FeatureExtractor,
    mfcc,
    utterance_cmvn,
    vtlp_matrix,
)


def noise(seconds, seed=0):
    return (np.random.default_rng(seed).standard_normal(int(16000 * seconds)) * 0.1).astype(
        np.float32)


def test_one_second_is_about_100_frames():
    feats = mfcc(noise(1.0))
    assert feats.shape == (101, 39) and feats.dtype == np.float32
    assert mfcc(noise(1.0), FeatureConfig(deltas=0, n_mfcc=20)).shape == (101, 20)
    assert mfcc(noise(1.0), FeatureConfig(hop_ms=20, win_ms=40)).shape == (51, 39)


def test_tiny_and_silent_inputs_give_finite_frames():
    assert mfcc(noise(0.005)).shape == (1, 39)
    silent = mfcc(np.zeros(8000, np.float32))
    assert np.isfinite(silent).all()
    assert np.isfinite(utterance_cmvn(silent)).all()


def test_features_track_the_signal():
    a, b = mfcc(tone(1.0, freq=300)), mfcc(tone(1.0, freq=3000))
    assert np.abs(a[20:80, :13].mean(0) - b[20:80, :13].mean(0)).max() > 5


def test_utterance_cmvn():
    x = utterance_cmvn(mfcc(noise(2.0)))
    np.testing.assert_allclose(x.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(x.std(0), 1, atol=1e-3)


def test_vtlp_matrix_moves_formants_as_a_shorter_or_longer_vocal_tract():
    cfg = FeatureConfig(fmax=3800.0)
    np.testing.assert_allclose(vtlp_matrix(cfg, 1.0), np.eye(cfg.n_features), atol=1e-6)
    for alpha in (0.9, 1.1):
        source = mfcc(tone(1.0, freq=1200.0), cfg)[20:80]
        moved = mfcc(tone(1.0, freq=1200.0 / alpha), cfg)[20:80]  # where alpha puts it
        elsewhere = mfcc(tone(1.0, freq=1200.0 * alpha), cfg)[20:80]
        warped = source @ vtlp_matrix(cfg, alpha)
        statics = slice(0, cfg.n_mfcc)
        to_moved = np.abs(warped - moved)[:, statics].mean()
        assert to_moved < 0.5 * np.abs(source - moved)[:, statics].mean()
        assert to_moved < 0.5 * np.abs(warped - elsewhere)[:, statics].mean()
    assert vtlp_matrix(FeatureConfig(deltas=0), 1.1).shape == (13, 13)


def test_global_cmvn_compute_save_load(tmp_path):
    arrays = [mfcc(noise(1.0, s)) for s in range(3)]
    stats = CMVN.compute(arrays)
    all_frames = np.concatenate(arrays)
    np.testing.assert_allclose(stats.mean, all_frames.mean(0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(stats.std, all_frames.std(0), rtol=1e-3)
    stats.save(tmp_path / "cmvn.json")
    cfg = FeatureConfig(cmvn="global", cmvn_stats=str(tmp_path / "cmvn.json"))
    out = FeatureExtractor(cfg).from_audio(noise(1.0, 0))
    np.testing.assert_allclose(out, (arrays[0] - stats.mean) / stats.std, atol=1e-4)
    with pytest.raises(ValueError, match="cmvn_stats"):
        FeatureExtractor(FeatureConfig(cmvn="global"))


def test_cache_hits_and_keys(tmp_path):
    wav = write(tmp_path / "a.wav", noise(1.0))
    fx = FeatureExtractor(cache_dir=tmp_path / "cache")
    first = fx.raw(wav)
    entries = list((tmp_path / "cache").rglob("*.npy"))
    assert len(entries) == 1
    np.testing.assert_array_equal(fx.raw(wav), first)
    # same content elsewhere: same key; other content or config or segment: another key
    twin = write(tmp_path / "b.wav", noise(1.0))
    cfg = FeatureConfig()
    assert FeatureCache.key(wav, cfg) == FeatureCache.key(twin, cfg)
    assert FeatureCache.key(wav, cfg) != FeatureCache.key(wav, FeatureConfig(n_mfcc=20))
    assert FeatureCache.key(wav, cfg) != FeatureCache.key(wav, cfg, 0.5, None)
    # normalisation is applied after the cache: changing it reuses the entry
    assert FeatureCache.key(wav, cfg) == FeatureCache.key(wav, FeatureConfig(cmvn="none"))
    write(tmp_path / "a.wav", noise(1.0, seed=9))
    assert not np.array_equal(fx.raw(wav), first)


def test_damaged_entry_is_recomputed(tmp_path):
    wav = write(tmp_path / "a.wav", noise(1.0))
    fx = FeatureExtractor(cache_dir=tmp_path / "cache")
    good = fx.raw(wav)
    (entry,) = (tmp_path / "cache").rglob("*.npy")
    entry.write_bytes(entry.read_bytes()[:100])  # half-written
    np.testing.assert_array_equal(fx.raw(wav), good)
    np.testing.assert_array_equal(np.load(entry), good)  # rewritten whole


def test_cache_under_concurrent_writers_and_readers(tmp_path):
    wav = write(tmp_path / "a.wav", noise(3.0))
    expected = FeatureExtractor().raw(wav)
    cache = FeatureCache(tmp_path / "cache")
    key = FeatureCache.key(wav, FeatureConfig())
    seen, errors = [], []

    def writer():
        for _ in range(30):
            cache.put(key, expected)

    def reader():
        for _ in range(200):
            got = cache.get(key)
            if got is not None:
                seen.append(got.shape)
                if not np.array_equal(got, expected):
                    errors.append("partial entry read")

    threads = [threading.Thread(target=f) for f in (writer, writer, reader, reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and seen
    assert not list((tmp_path / "cache").rglob(".tmp-*"))


def test_bad_audio_raises_audio_error(tmp_path):
    fx = FeatureExtractor(cache_dir=tmp_path / "cache")
    with pytest.raises(AudioError, match="missing.wav"):
        fx(tmp_path / "missing.wav")
    (tmp_path / "t.wav").write_text("text")
    with pytest.raises(AudioError, match="not a readable audio file"):
        fx(tmp_path / "t.wav")


def test_real_speech_frames(corpora):
    flac = sorted((corpora / "speechocean762" / "audio").rglob("*.flac"))[0]
    fx = FeatureExtractor()
    from speechrnn.audio import audio_duration

    feats = fx(flac)
    assert abs(len(feats) - audio_duration(flac) * 100) <= 2
    assert np.isfinite(feats).all()

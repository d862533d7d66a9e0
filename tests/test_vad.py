"""Voice activity: generated non-speech holds no speech, real and synthetic speech does,
and the transcriber gives no words for noise."""

import subprocess

import numpy as np
import pytest
from conftest import non_speech_signals, talkative_model

from speechrnn.audio import load_audio
from speechrnn.vad import VadOptions, overlaps, speech_mask, speech_regions


@pytest.mark.parametrize("name", sorted(non_speech_signals(1.0)))
def test_non_speech_has_no_speech_regions(name):
    audio = non_speech_signals(10.0)[name]
    assert speech_regions(audio, 16000) == [], name


def espeak(text: str, tmp_path) -> np.ndarray:
    path = tmp_path / "say.wav"
    subprocess.run(["espeak-ng", "-w", str(path), text], check=True)
    return load_audio(path)


def test_speech_is_found_where_it_is(tmp_path, needs_espeak):
    speech = espeak("seven three one, the quick brown fox", tmp_path)
    quiet = np.zeros(16000 * 3, np.float32)
    noise = non_speech_signals(3.0)["white noise"]
    audio = np.concatenate([quiet, speech, noise])
    regions = speech_regions(audio, 16000)
    start, end = 3.0, 3.0 + len(speech) / 16000
    assert regions and regions[0][0] >= start - 0.5 and regions[-1][1] <= end + 0.5
    assert overlaps(regions, start + 0.5, start + 0.6) and not overlaps(regions, 0.0, 2.0)
    assert speech_mask(speech, 16000).mean() > 0.8
    assert speech_regions(audio, 16000, VadOptions(min_voiced=1.01)) == []
    for n in (3, 17, 29, 31, 100):  # one flag a 10 ms hop, whatever the length
        assert len(speech_mask(speech[:160 * n], 16000)) == n + 1


def test_real_recordings_are_speech(corpora):
    files = sorted((corpora / "fsdd").rglob("*.wav"))[:20] + \
        sorted((corpora / "speechocean762").rglob("*.flac"))[:10]
    shares = [speech_mask(load_audio(f), 16000).mean() for f in files]
    assert min(shares) > 0.5 and np.mean(shares) > 0.8
    # the shortest single digits, trimmed tight (a window longer than the clip)
    short = sorted((corpora / "fsdd").rglob("*.wav"), key=lambda f: f.stat().st_size)[:20]
    assert all(speech_regions(load_audio(f), 16000) for f in short)


def test_transcriber_gives_no_words_for_noise(trained, tmp_path, needs_espeak):
    import speechrnn

    path = talkative_model(trained, tmp_path)
    model, deaf = speechrnn.load_model(path), speechrnn.load_model(
        path, vad=VadOptions(enabled=False))
    for name, audio in non_speech_signals(5.0).items():
        assert deaf.transcribe(audio, sample_rate=16000).text != "" or name in (
            "silence", "quiet noise")
        assert model.transcribe(audio, sample_rate=16000).text == "", name
    speech = espeak("seven three one", tmp_path)
    assert model.transcribe(speech, sample_rate=16000).text == \
        deaf.transcribe(speech, sample_rate=16000).text != ""
    # speech then noise: the words over the noise are dropped
    noise = non_speech_signals(6.0)["white noise"]
    mixed = model.transcribe(np.concatenate([speech, noise]), sample_rate=16000)
    end = len(speech) / 16000
    assert mixed.words and all(w.start <= end + 0.4 for w in mixed.words)

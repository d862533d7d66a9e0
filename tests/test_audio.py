import io

import numpy as np
import pytest
import soundfile as sf
from conftest import bad_files, tone, write

from speechrnn.audio import SAMPLE_RATE, AudioError, audio_duration, audio_info, load_audio


@pytest.mark.parametrize("suffix,fmt,subtype", [
    ("wav", "WAV", "PCM_16"), ("wav", "WAV", "PCM_24"), ("wav", "WAV", "FLOAT"),
    ("flac", "FLAC", "PCM_16"), ("ogg", "OGG", "VORBIS"), ("mp3", "MP3", "MPEG_LAYER_III"),
])
def test_formats_decode_to_16k_mono(tmp_path, suffix, fmt, subtype):
    path = write(tmp_path / f"a.{suffix}", tone(1.0, 22050), 22050, subtype, fmt)
    audio = load_audio(path)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) - SAMPLE_RATE) < 0.06 * SAMPLE_RATE  # mp3 adds encoder padding
    assert 0.15 < np.sqrt(np.mean(audio**2)) < 0.25  # a 0.3-amplitude sine: rms 0.212


def test_stereo_44k_is_mixed_down_and_resampled(tmp_path):
    path = write(tmp_path / "s.wav", tone(2.0, 44100, channels=2), 44100)
    audio = load_audio(path)
    assert audio.shape == (2 * SAMPLE_RATE,)
    spectrum = np.abs(np.fft.rfft(audio))
    assert abs(np.argmax(spectrum) * SAMPLE_RATE / len(audio) - 440) < 2  # pitch survives


def test_any_rate_and_channel_count(tmp_path):
    for sr, ch in [(8000, 1), (11025, 3), (48000, 6)]:
        audio = load_audio(write(tmp_path / f"x{sr}.wav", tone(0.5, sr, ch), sr))
        assert len(audio) == SAMPLE_RATE // 2


def test_duration_from_header(tmp_path):
    path = write(tmp_path / "d.flac", tone(1.5, 8000), 8000)
    assert audio_duration(path) == pytest.approx(1.5)
    info = audio_info(path)
    assert (info.sample_rate, info.channels, info.format) == (8000, 1, "FLAC")


def test_segment_and_bytes_input(tmp_path):
    x = np.linspace(-0.5, 0.5, 3 * SAMPLE_RATE, dtype=np.float32)
    path = write(tmp_path / "seg.wav", x, subtype="FLOAT")
    seg = load_audio(path, offset=1.0, end=2.0)
    np.testing.assert_allclose(seg, x[SAMPLE_RATE:2 * SAMPLE_RATE], atol=1e-6)
    from_bytes = load_audio(io.BytesIO(path.read_bytes()), name="upload.wav")
    np.testing.assert_allclose(from_bytes, x, atol=1e-6)


def test_every_bad_input_names_the_file_and_reason(tmp_path):
    bad = bad_files(tmp_path)
    header_only = tmp_path / "header_only.wav"
    sf.write(header_only, np.zeros(0, np.float32), SAMPLE_RATE)
    nan = write(tmp_path / "nan.wav", np.full(100, np.nan, np.float32), subtype="FLOAT")
    expect = {
        tmp_path / "missing.wav": "file not found",
        bad["empty"]: "empty file",
        bad["text"]: "not a readable audio file",
        bad["corrupt"]: "not a readable audio file",
        header_only: "zero-length audio",
        nan: "non-finite",
        tmp_path: "is a directory",
    }
    for path, reason in expect.items():
        with pytest.raises(AudioError) as err:
            load_audio(path)
        assert err.value.path == str(path)
        assert reason in err.value.reason
        assert str(err.value).startswith(str(path))
    with pytest.raises(AudioError, match="not a readable audio file"):
        load_audio(io.BytesIO(b"not audio at all"), name="upload")

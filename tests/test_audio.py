import io
import os
import struct
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import bad_files, tone, write
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from speechrnn.audio import (
    AUDIO_SUFFIXES,
    QUIET_STDERR,
    SAMPLE_RATE,
    AudioError,
    audio_duration,
    audio_info,
    load_audio,
    stream_audio,
)


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


# --- damaged, hostile and odd inputs: an AudioError with a reason, never another exception

FUZZ = settings(max_examples=80, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])
# one short file of each container (and a few codecs) libsndfile writes here
WRITABLE = [("wav", "WAV", "PCM_16"), ("wav", "WAV", "IMA_ADPCM"), ("wav", "WAVEX", "FLOAT"),
            ("flac", "FLAC", "PCM_16"), ("ogg", "OGG", "VORBIS"), ("opus", "OGG", "OPUS"),
            ("mp3", "MP3", "MPEG_LAYER_III"), ("aiff", "AIFF", "PCM_16"), ("au", "AU", "ULAW"),
            ("caf", "CAF", "ALAC_16"), ("w64", "W64", "PCM_24"), ("rf64", "RF64", "PCM_16"),
            ("nist", "NIST", "PCM_16"), ("voc", "VOC", "PCM_16"), ("sf", "IRCAM", "FLOAT"),
            ("avr", "AVR", "PCM_16"), ("svx", "SVX", "PCM_16"), ("paf", "PAF", "PCM_24"),
            ("mat", "MAT5", "DOUBLE"), ("xi", "XI", "DPCM_16"), ("sds", "SDS", "PCM_16")]


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> dict[str, bytes]:
    """Bytes of a 0.3 s file in every format of WRITABLE this libsndfile writes and reads."""
    folder = tmp_path_factory.mktemp("formats")
    out = {}
    for suffix, fmt, subtype in WRITABLE:
        rate = 48000 if subtype == "OPUS" else 8000
        path = folder / f"{fmt}_{subtype}.{suffix}"
        try:
            sf.write(path, tone(0.3, rate), rate, format=fmt, subtype=subtype)
            sf.read(path)
        except (sf.LibsndfileError, TypeError, ValueError):
            continue
        out[path.name] = path.read_bytes()
    assert {"WAV_PCM_16.wav", "FLAC_PCM_16.flac", "OGG_VORBIS.ogg"} <= set(out)
    return out


def check_every_reader(path, data: bytes | None = None) -> list[str]:
    """Run audio_info, load_audio and stream_audio on ``path``: each either gives sane
    audio or raises AudioError naming the file and a reason. Returns the reasons."""
    reasons = []
    calls = [("info", lambda: audio_info(path)), ("load", lambda: load_audio(path)),
             ("stream", lambda: list(stream_audio(path, block_seconds=0.1)))]
    if data is not None:
        calls.append(("bytes", lambda: load_audio(io.BytesIO(data), name="upload")))
    for what, call in calls:
        try:
            result = call()
        except AudioError as err:
            assert err.reason and str(err).startswith(err.path), (what, err)
            reasons.append(err.reason)
            continue
        if what in ("load", "bytes"):
            assert result.dtype == np.float32 and np.isfinite(result).all()
        elif what == "stream":
            assert all(b.dtype == np.float32 and np.isfinite(b).all() for b in result)
    return reasons


@FUZZ
@given(data=st.data())
def test_truncated_or_flipped_files_of_every_format_fail_with_a_reason(samples, data):
    name = data.draw(st.sampled_from(sorted(samples)), label="format")
    blob = bytearray(samples[name])
    for _ in range(data.draw(st.integers(0, 6), label="flips")):
        # headers live in the first bytes: flip there more often than anywhere else
        end = data.draw(st.sampled_from([64, 512, len(blob)]))
        at = data.draw(st.integers(0, min(end, len(blob)) - 1))
        blob[at] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans(), label="cut"):
        blob = blob[:data.draw(st.integers(1, len(blob)), label="cut at")]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(bytes(blob))
        check_every_reader(path, bytes(blob))


@FUZZ
@given(blob=st.binary(min_size=1, max_size=3000),
       suffix=st.sampled_from(sorted(AUDIO_SUFFIXES)))
def test_random_bytes_fail_with_a_reason(blob, suffix):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"x{suffix}"
        path.write_bytes(blob)
        for reason in check_every_reader(path, blob):
            assert "does not exist" not in reason and "System error" not in reason


def test_random_bytes_mp3_is_not_audio_and_the_decoder_keeps_quiet(tmp_path, capfd):
    path = tmp_path / "noise.mp3"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 3000, np.uint8).tobytes())
    capfd.readouterr()
    with pytest.raises(AudioError) as err:
        load_audio(path)
    assert err.value.reason.startswith("not a readable audio file (")
    assert "does not exist" not in err.value.reason and "System error" not in err.value.reason
    for call in (audio_info, lambda p: list(stream_audio(p))):
        with pytest.raises(AudioError, match="not a readable audio file"):
            call(path)
    out = capfd.readouterr()
    assert "Note:" not in out.err and "MPEG" not in out.err and "resync" not in out.err
    # libsndfile alone would have said it on fd 2 (where it does: the check above is real)
    with pytest.raises(sf.LibsndfileError, match="does not exist|System error|not recog"):
        sf.SoundFile(path)
    raw = capfd.readouterr().err
    assert raw == "" or "Note:" in raw or "MPEG" in raw


def test_quiet_stderr_passes_other_output_on_and_restores_fd2(capfd):
    before = os.fstat(2)
    print("before", file=sys.stderr)
    with QUIET_STDERR:
        os.write(2, b"Note: Illegal Audio-MPEG-Header 0x00000000 at offset 1.\n")
        os.write(2, b"[src/libmpg123/parse.c:do_readahead():1083] warning: Cannot read\n")
        print("a Python message", file=sys.stderr)
        t = threading.Thread(target=lambda: os.write(2, b"another thread\n"))
        t.start()
        t.join()
        with QUIET_STDERR:  # nested and from several threads: fd 2 comes back once
            os.write(2, b"Note: Trying to resync...\n")
        os.write(2, b"progress 50%\r")
    after = os.fstat(2)
    assert (before.st_ino, before.st_dev) == (after.st_ino, after.st_dev)
    err = capfd.readouterr().err
    assert err == "before\na Python message\nanother thread\nprogress 50%\r"
    with pytest.raises(ZeroDivisionError), QUIET_STDERR:  # restored on errors too
        raise ZeroDivisionError
    os.write(2, b"Note: not from a decoder\n")
    assert capfd.readouterr().err == "Note: not from a decoder\n"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX fork")
def test_a_process_forked_while_quiet_gets_its_stderr_back(capfd):
    with QUIET_STDERR:
        pid = os.fork()
        if pid == 0:  # the child: its stderr is the real one, and the window works in it
            with QUIET_STDERR:
                os.write(2, b"Note: chatter in the child\n")
            os.write(2, b"the child speaks\n")
            os._exit(0)
        os.waitpid(pid, 0)
    assert capfd.readouterr().err == "the child speaks\n"


def test_odd_paths_fail_with_a_reason(tmp_path):
    good = write(tmp_path / "good.wav", tone(0.2))
    (tmp_path / "loop.wav").symlink_to(tmp_path / "loop.wav")
    (tmp_path / "dangling.wav").symlink_to(tmp_path / "gone.wav")
    os.mkfifo(tmp_path / "fifo.wav")
    expect = {
        str(tmp_path / "a\0b.wav"): "bad file name",
        str(tmp_path / ("x" * 5000 + ".wav")): "file name too long",
        str(tmp_path / ("d" * 200) / ("x" * 200) / ".." / "good.wav"): "file not found",
        str(tmp_path / "\ud800.wav"): "bad file name",
        str(tmp_path / "loop.wav"): "symbolic link loop",
        str(tmp_path / "dangling.wav"): "file not found",
        str(tmp_path / "fifo.wav"): "not a regular file",
        str(good / "x.wav"): "file not found",
    }
    for path, reason in expect.items():
        for call in (audio_info, load_audio, lambda p: list(stream_audio(p))):
            with pytest.raises(AudioError) as err:
                call(path)
            assert reason in err.value.reason, (path[:80], err.value.reason)


def test_lying_headers_fail_with_a_reason_or_decode_what_is_there(tmp_path):
    """A header may claim an absurd rate or length: no giant allocation, no crash."""
    x = tone(0.5, 8000)
    wav = write(tmp_path / "a.wav", x, 8000).read_bytes()
    rate = bytearray(wav)
    rate[24:28] = struct.pack("<I", 1_000_000_000)  # WAV fmt chunk: sample rate
    (tmp_path / "rate.wav").write_bytes(rate)
    tiny = bytearray(wav)
    tiny[24:28] = struct.pack("<I", 1)
    (tmp_path / "tiny.wav").write_bytes(tiny)
    for name in ("rate.wav", "tiny.wav"):
        reasons = check_every_reader(tmp_path / name)
        assert len(reasons) == 3 and all("implausible sample rate" in r for r in reasons)
    flac = bytearray(write(tmp_path / "a.flac", x, 8000).read_bytes())
    flac[21] |= 0x0F  # STREAMINFO: 2^36 - 1 samples, 256 GiB as float32
    flac[22:26] = b"\xff" * 4
    (tmp_path / "long.flac").write_bytes(flac)
    assert sf.info(tmp_path / "long.flac").frames == 2**36 - 1
    check_every_reader(tmp_path / "long.flac")  # an AudioError or the real 0.5 s


def test_bad_segments_fail_with_a_reason(tmp_path):
    path = write(tmp_path / "a.wav", tone(1.0))
    for offset, end in [(float("nan"), None), (0.0, float("inf")), (-1.0, None),
                        (0.5, 0.5), (0.0, float("nan"))]:
        with pytest.raises(AudioError, match="bad segment"):
            load_audio(path, offset=offset, end=end)
    for offset in (5.0, 1e300):
        with pytest.raises(AudioError, match="zero-length"):
            load_audio(path, offset=offset)
    assert len(load_audio(path, offset=0.5, end=1e306)) == SAMPLE_RATE // 2


def test_stream_equals_load_across_block_edges(tmp_path):
    path = write(tmp_path / "s.wav", tone(2.3, 22050, channels=2), 22050)
    whole = load_audio(path)
    blocks = list(stream_audio(path, block_seconds=0.25))
    assert len(blocks) > 5
    streamed = np.concatenate(blocks)
    assert abs(len(streamed) - len(whole)) <= 2
    n = min(len(streamed), len(whole))
    assert np.max(np.abs(streamed[:n] - whole[:n])) < 1e-2

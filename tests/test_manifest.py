import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from speechrnn.manifest import (
    ManifestError,
    Utterance,
    format_stats,
    manifest_stats,
    read_manifest,
    text_of_bytes,
    write_manifest,
)


@pytest.mark.parametrize("suffix", ["jsonl", "tsv"])
def test_round_trip_with_relative_paths(tmp_path, suffix):
    audio = tmp_path / "corpus" / "a.wav"
    rows = [Utterance(str(audio), "hello world", 1.25, "spk1", "u1"),
            Utterance(str(audio), "second part", 2.0, "spk2", "u2", offset=1.0, end=3.0)]
    path = write_manifest(tmp_path / "out" / f"m.{suffix}", rows)
    assert "../corpus/a.wav" in path.read_text()
    back = read_manifest(path)
    assert back == [Utterance(str(audio), "hello world", 1.25, "spk1", "u1"),
                    Utterance(str(audio), "second part", 2.0, "spk2", "u2", 1.0, 3.0)]


def test_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"audio": "a.wav", "text": "x", "duration": 1}\n{not json}\n')
    with pytest.raises(ManifestError, match=r"bad.jsonl:2: not valid JSON"):
        read_manifest(bad)
    bad.write_text('{"audio": "a.wav", "duration": 1}\n')
    with pytest.raises(ManifestError, match=r"bad.jsonl:1: missing column 'text'"):
        read_manifest(bad)
    tsv = tmp_path / "bad.tsv"
    tsv.write_text("audio\ttext\tduration\na.wav\thi\tlong\n")
    with pytest.raises(ManifestError, match=r"bad.tsv:2: duration is not a number"):
        read_manifest(tsv)
    with pytest.raises(ManifestError, match="not found"):
        read_manifest(tmp_path / "none.jsonl")
    with pytest.raises(ManifestError, match="unknown manifest format"):
        read_manifest(tmp_path / "m.xml")


def test_stats():
    rows = [Utterance(f"{i}.wav", "ab", d, s) for i, (d, s) in
            enumerate([(1.0, "a"), (2.0, "a"), (3.0, "b"), (6.0, "c")])]
    stats = manifest_stats(rows, bins=5)
    assert stats["utterances"] == 4 and stats["speakers"] == 3
    assert stats["hours"] == pytest.approx(12 / 3600, abs=1e-4)
    assert stats["duration_s"]["median"] == 2.5
    assert sum(b["count"] for b in stats["histogram"]) == 4
    assert "4 utterances" in format_stats("m", stats)


# --- text in odd encodings, and garbage: rows, or a ManifestError naming file and line

FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
ENCODINGS = ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32"]
# TSV values cannot hold tabs or line ends; nothing else is off limits
VALUE = st.text(st.characters(blacklist_characters="\t\n\r", blacklist_categories=("Cs",)),
                max_size=30)


@FUZZ
@given(texts=st.lists(VALUE, min_size=1, max_size=4), encoding=st.sampled_from(ENCODINGS),
       newline=st.sampled_from(["\n", "\r\n", "\r"]), suffix=st.sampled_from(["jsonl", "tsv"]))
def test_any_encoding_and_line_end_reads_back(texts, encoding, newline, suffix):
    rows = [Utterance(f"a{i}.wav", t, 1.0 + i, f"s{i}", f"u{i}") for i, t in enumerate(texts)]
    bomless_utf16 = encoding in ("utf-16-le", "utf-16-be")
    if bomless_utf16:  # recognised by its NUL bytes: text that is mostly ASCII, as JSON is
        rows = [Utterance(r.audio, r.text.encode("ascii", "replace").decode(), r.duration,
                          r.speaker, r.id) for r in rows]
    with tempfile.TemporaryDirectory() as tmp:
        path = write_manifest(Path(tmp) / f"m.{suffix}", rows)
        text = path.read_text(encoding="utf-8")
        path.write_bytes(text.replace("\n", newline).encode(encoding))
        back = read_manifest(path)
    assert [(r.text, r.duration, r.speaker, r.id) for r in back] == \
        [(r.text, r.duration, r.speaker, r.id) for r in rows]
    assert [Path(r.audio).name for r in back] == [r.audio for r in rows]


GARBAGE_LINES = st.one_of(
    st.text(max_size=200),
    st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
    st.sampled_from(["[" * 100_000, "1" * 5000, '{"audio": "a.wav", "text": "x", "duration": '
                     + "9" * 400 + "}", '{"audio": "a.wav", "text": "x", "duration": NaN}',
                     '{"audio": ["a"], "text": "x", "duration": 1}', "x\0y\ta.wav\t1",
                     '{"audio": "a.wav", "text": "' + "x" * 100_000 + '", "duration": 1}',
                     '{"audio": "a.wav", "text": "x", "duration": true}', "\ufeff\ufeff"]))


@FUZZ
@given(lines=st.lists(GARBAGE_LINES, max_size=5), raw=st.binary(max_size=300),
       suffix=st.sampled_from(["jsonl", "tsv"]), use_raw=st.booleans())
def test_garbage_manifests_raise_manifest_error(lines, raw, suffix, use_raw):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"m.{suffix}"
        header = "" if suffix == "jsonl" else "audio\ttext\tduration\n"
        data = raw if use_raw else (header + "\n".join(lines)).encode("utf-8", "surrogatepass")
        path.write_bytes(data)
        try:
            rows = read_manifest(path)
        except ManifestError as err:
            assert str(err).startswith(str(path))
            return
    for row in rows:
        assert isinstance(row.audio, str) and isinstance(row.text, str)
        assert row.duration == row.duration and abs(row.duration) != float("inf")


def test_odd_manifest_lines_name_the_line(tmp_path):
    path = tmp_path / "m.jsonl"
    good = '{"audio": "a.wav", "text": "hi", "duration": 1}'
    cases = {"[" * 100_000: "not valid JSON", '{"audio": "a.wav", "text": "x", "duration": '
             + "1" * 5000 + "}": "not valid JSON",
             '{"audio": "a.wav", "text": "x", "duration": NaN}': "duration is not a number",
             '{"audio": "a.wav", "text": "x", "duration": 1, "end": Infinity}':
             "end is not a number",
             '{"audio": {"a": 1}, "text": "x", "duration": 1}': "audio is not a path"}
    for line, message in cases.items():
        path.write_text(f"{good}\n{line}\n")
        with pytest.raises(ManifestError, match=f"m.jsonl:2: {message}"):
            read_manifest(path)
    path.write_bytes(good.encode() + b"\n" + good.encode()[:-2] + b"\xff\xfe}\n")
    with pytest.raises(ManifestError, match=r"m.jsonl:2: not valid text \(byte 0xff\)"):
        read_manifest(path)
    # a BOM, CRLF, a form feed and a NUL in a transcript: one row each, the text kept
    tsv = tmp_path / "m.tsv"
    tsv.write_bytes("\ufeffaudio\ttext\tduration\r\na.wav\tpage\x0cbreak\x00\t1\r\n"
                    .encode("utf-16"))
    (row,) = read_manifest(tsv)
    assert row.text == "page\x0cbreak\x00" and row.duration == 1.0


def test_decode_text_recognises_encodings():
    text = '{"text": "café"}\n'
    for encoding in ENCODINGS:
        assert text_of_bytes(text.encode(encoding)) == text, encoding
    assert text_of_bytes(b"caf\xe9\n") == "caf\udce9\n"  # Latin-1: kept for the caller to name
    assert text_of_bytes(b"") == ""

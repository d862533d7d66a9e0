import pytest

from speechrnn.manifest import (
    ManifestError,
    Utterance,
    format_stats,
    manifest_stats,
    read_manifest,
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

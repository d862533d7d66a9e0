"""The error analysis of a dev set: worst utterances (order, audio, table) and word errors.

(The evaluation report's files, ``write_report``, are tested in test_evaluate.py; the
training curves in test_tracking.py.)"""

import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import bad_files, tone, write

from speechrnn.evaluate import UtteranceScore, score_utterances
from speechrnn.manifest import Utterance
from speechrnn.report import (
    word_error_table,
    worst_first,
    write_error_analysis,
    write_word_error_table,
    write_worst,
)


def score(uid, wer, cer, words=2):
    ref = " ".join(["one"] * words)
    return UtteranceScore(uid, ref, "x", wer, cer, 0, 0, 0)


def test_worst_first_orders_by_wer_then_cer_then_length_and_skips_the_perfect():
    scores = [score("perfect", 0.0, 0.0), score("half-short", 0.5, 0.2, words=2),
              score("all", 1.0, 0.9), score("half-long", 0.5, 0.2, words=6),
              score("half-more-cer", 0.5, 0.4), score("b-tie", 0.25, 0.1),
              score("a-tie", 0.25, 0.1), score("chars-only", 0.0, 0.05)]
    order = [scores[i].id for i in worst_first(scores)]
    assert order == ["all", "half-more-cer", "half-long", "half-short", "a-tie", "b-tie",
                     "chars-only"]
    assert [scores[i].id for i in worst_first(scores, 2)] == ["all", "half-more-cer"]
    assert worst_first([score("ok", 0.0, 0.0)]) == []
    # many utterances: only n of them, indexes into the list
    many = [score(f"u{i:02d}", i / 100, 0.0) for i in range(1, 40)]
    assert worst_first(many) == list(range(38, 18, -1))


def dev_set(folder: Path) -> tuple[list[Utterance], list[UtteranceScore]]:
    """Six dev utterances in the formats corpora come in (16 kHz WAV, 8 kHz FLAC, 48 kHz
    stereo Ogg Opus, a segment of a 22.05 kHz WAV, a corrupt file, a perfect one), with
    fake hypotheses; worst first: c, b, d, bad, a (e is right)."""
    long = np.concatenate([tone(1.0, 22050, freq=300), tone(1.5, 22050, freq=600),
                           tone(1.0, 22050, freq=300)])
    files = {"a": write(folder / "a.wav", tone(1.0)),
             "b": write(folder / "b.flac", tone(0.8, 8000), 8000),
             "c": write(folder / "c.ogg", tone(0.6, 48000, channels=2), 48000,
                        format="OGG", subtype="OPUS"),
             "d": write(folder / "long.wav", long, 22050),
             "bad": bad_files(folder)["corrupt"],
             "e": write(folder / "e.wav", tone(0.5))}
    texts = {"a": ("one two three four", "one two three five"),
             "b": ("one two", "one"),
             "c": ("nine", "five"),
             "d": ("seven eight", "seven"),
             "bad": ("six six six", "six"),
             "e": ("zero", "zero")}
    rows = [Utterance(str(files[k]), ref, 1.0, speaker=f"spk-{k}", id=k)
            for k, (ref, _) in texts.items()]
    rows[3].offset, rows[3].end, rows[3].id = 1.0, 2.5, "long/seg 1"  # a segment, odd id
    scores = score_utterances([r.id for r in rows], [t[0] for t in texts.values()],
                              [t[1] for t in texts.values()])
    return rows, scores


def read_tsv(path: Path) -> list[dict]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def test_worst_audio_is_16khz_wav_named_by_rank_with_its_table(tmp_path, caplog):
    rows, scores = dev_set(tmp_path / "audio")
    files = write_worst(tmp_path / "out", scores, rows)
    table = read_tsv(tmp_path / "out" / "worst.tsv")
    assert files[0] == tmp_path / "out" / "worst.tsv"
    assert [r["id"] for r in table] == ["c", "bad", "b", "long/seg 1", "a"]
    assert [r["rank"] for r in table] == ["1", "2", "3", "4", "5"]
    assert table[0] == {"rank": "1", "id": "c", "speaker": "spk-c", "wer": "1.0000",
                        "cer": "0.5000", "reference": "nine", "hypothesis": "five",
                        "audio": "worst/01_c.wav", "problem": ""}
    # the unreadable file: listed with the reason, no audio; the others still written
    assert table[1]["audio"] == "" and table[1]["problem"].startswith(
        str(tmp_path / "audio" / "corrupt.wav") + ": ")
    assert "no audio for bad" in caplog.text
    names = sorted(p.name for p in (tmp_path / "out" / "worst").iterdir())
    assert names == ["01_c.wav", "03_b.wav", "04_long_seg_1.wav", "05_a.wav"]
    assert [f.name for f in files[1:]] == names
    assert [r["audio"] for r in table] == ["worst/01_c.wav", "", "worst/03_b.wav",
                                           "worst/04_long_seg_1.wav", "worst/05_a.wav"]
    seconds = {"01_c.wav": 0.6, "03_b.wav": 0.8, "04_long_seg_1.wav": 1.5, "05_a.wav": 1.0}
    for name, duration in seconds.items():
        info = sf.info(tmp_path / "out" / "worst" / name)
        assert (info.format, info.subtype, info.samplerate, info.channels) == \
            ("WAV", "PCM_16", 16000, 1), name
        assert info.duration == pytest.approx(duration, abs=0.02), name
    # the segment is the middle tone only (600 Hz), not the start of the file
    audio, _ = sf.read(tmp_path / "out" / "worst" / "04_long_seg_1.wav")
    spectrum = np.abs(np.fft.rfft(audio))
    assert np.argmax(spectrum) * 16000 / len(audio) == pytest.approx(600, abs=5)


def test_worst_without_rows_or_with_misaligned_rows(tmp_path):
    rows, scores = dev_set(tmp_path / "audio")
    files = write_worst(tmp_path / "out", scores, n=2)
    assert [r["problem"] for r in read_tsv(files[0])] == ["no manifest row"] * 2
    assert files[1:] == [] and not list((tmp_path / "out" / "worst").iterdir())
    with pytest.raises(ValueError, match="5 manifest rows for 6 scores"):
        write_worst(tmp_path / "out", scores, rows[:5])


def test_word_error_table_counts_substitutions_deletions_and_insertions(tmp_path):
    scores = score_utterances(
        list("abcdef"), ["two five", "two nine one", "seven", "one two", "nine", "four"],
        ["zero nine", "zero nine", "", "one two three", "nine", "four four"])
    assert word_error_table(scores) == [
        ("substitution", "two", "zero", 2), ("substitution", "five", "nine", 1),
        ("deletion", "one", "", 1), ("deletion", "seven", "", 1),
        ("insertion", "", "four", 1), ("insertion", "", "three", 1)]
    tsv, md = write_word_error_table(tmp_path / "out", scores, top=1)
    assert tsv.read_text().splitlines() == [
        "kind\treference\thypothesis\tcount", "substitution\ttwo\tzero\t2",
        "substitution\tfive\tnine\t1", "deletion\tone\t\t1", "deletion\tseven\t\t1",
        "insertion\t\tfour\t1", "insertion\t\tthree\t1"]
    text = md.read_text()
    assert text.startswith("# Word errors: 6 utterances, 10 reference words\n")
    assert "## Substitutions: 3 (2 distinct)\n\n| reference | hypothesis | count |\n" \
           "|---|---|---|\n| two | zero | 2 |\n\n... and 1 more in word_errors.tsv" in text
    assert "## Deletions: 2 (2 distinct)\n\n| reference (not heard) | count |\n|---|---|\n" \
           "| one | 1 |\n" in text
    assert "## Insertions: 2 (2 distinct)" in text and "| four | 1 |" in text
    right = score_utterances(["a"], ["yes"], ["yes"])
    _, md = write_word_error_table(tmp_path / "none", right)
    assert md.read_text().count("none") == 3 and "## Deletions: 0 (0 distinct)" in md.read_text()


def test_error_analysis_writes_both(tmp_path):
    rows, scores = dev_set(tmp_path / "audio")
    files = write_error_analysis(tmp_path / "out", scores, rows, worst=3)
    assert sorted(str(f.relative_to(tmp_path / "out")) for f in files) == [
        "word_errors.md", "word_errors.tsv", "worst.tsv", "worst/01_c.wav", "worst/03_b.wav"]
    assert len(read_tsv(tmp_path / "out" / "worst.tsv")) == 3

import csv
import io
import json
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import bad_files, tone, write
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from speechrnn.audio import load_audio
from speechrnn.corpora import IMPORTERS, ImportOptions, import_corpus, make_synth_corpus
from speechrnn.corpora import fsdd as fsdd_module
from speechrnn.corpora import importer as importer_module
from speechrnn.corpora.fsdd import DIGITS, import_fsdd
from speechrnn.errors import SpeechRNNError
from speechrnn.manifest import read_manifest


def opts(out: Path, **kw) -> ImportOptions:
    return ImportOptions(out=out, progress=False, **kw)


def rejected(out: Path) -> dict[str, str]:
    with (out / "rejected.tsv").open() as f:
        return {Path(r["audio"]).name or r["id"]: r["reason"]
                for r in csv.DictReader(f, delimiter="\t")}


@pytest.fixture
def fsdd_like(tmp_path) -> Path:
    """Three speakers x ten digits x ten takes of short tones, FSDD-named, 8 kHz."""
    folder = tmp_path / "fsdd" / "recordings"
    for s, speaker in enumerate(["alice", "bob", "carol"]):
        for d in range(10):
            for take in range(10):
                write(folder / f"{d}_{speaker}_{take}.wav",
                      tone(0.3 + 0.02 * d, 8000, freq=200 + 50 * d + 10 * s), 8000)
    return folder.parent


def test_fsdd_keeps_good_files_and_reports_each_bad_one(fsdd_like, tmp_path):
    rec = fsdd_like / "recordings"
    bad = bad_files(rec, stem=lambda name: f"3_{name}_0")
    write(rec / "4_carol_10.wav", tone(0.6, 44100, channels=2), 44100)  # stereo 44.1 kHz
    write(rec / "5_carol_10.wav", tone(0.6, 24000), 24000, subtype="PCM_24")  # 24-bit
    (rec / "notes_about_it.wav").write_bytes(b"RIFF")
    out = tmp_path / "out"
    import_fsdd(fsdd_like, opts(out, test_speakers=("carol",)), per_speaker=6)

    reasons = rejected(out)
    assert "not a readable audio file" in reasons[bad["corrupt"].name]
    assert "empty file" in reasons[bad["empty"].name]
    assert "not a readable audio file" in reasons[bad["text"].name]
    assert "file name is not" in reasons["notes_about_it.wav"]
    assert len(reasons) == 4

    isolated = {Path(r.audio).name: r for r in read_manifest(out / "isolated.jsonl")}
    assert len(isolated) == 302
    assert isolated["4_carol_10.wav"].text == "four"
    assert isolated["4_carol_10.wav"].duration == pytest.approx(0.6, abs=0.01)
    assert load_audio(rec / "4_carol_10.wav").shape == (9600,)  # mixed down, resampled
    assert isolated["5_carol_10.wav"].duration == pytest.approx(0.6, abs=0.01)


def test_fsdd_connected_strings_are_speaker_disjoint_and_seeded(fsdd_like, tmp_path):
    a = import_fsdd(fsdd_like, opts(tmp_path / "a", seed=3), per_speaker=9)
    b = import_fsdd(fsdd_like, opts(tmp_path / "b", seed=3), per_speaker=9)
    speakers = {split: {r.speaker for r in rows} for split, rows in a.manifests.items()}
    (test_speaker,) = speakers["test"]
    assert test_speaker not in speakers["train"] | speakers["dev"]
    assert len(a.manifests["train"]) == 18 and len(a.manifests["test"]) == 3
    train_takes = set()
    for split in ("train", "test", "dev"):
        for ra, rb in zip(a.manifests[split], b.manifests[split], strict=True):
            assert (ra.text, ra.duration) == (rb.text, rb.duration)
            assert (1 if split == "train" else 2) <= len(ra.text.split()) <= 7
            assert set(ra.text.split()) <= set(DIGITS)
            info = sf.info(ra.audio)
            assert info.samplerate == 16000 and info.channels == 1
            assert info.duration == pytest.approx(ra.duration, abs=1e-3)
    for r in read_manifest(tmp_path / "a" / "train.jsonl"):
        train_takes.add(r.audio)
    assert all(Path(p).exists() for p in train_takes)
    c = import_fsdd(fsdd_like, opts(tmp_path / "c", seed=4), per_speaker=9)
    assert [r.text for r in c.manifests["train"]] != [r.text for r in a.manifests["train"]]
    # the test speaker's recordings one by one, as they are
    isolated = read_manifest(tmp_path / "a" / "isolated-test.jsonl")
    assert {r.speaker for r in isolated} == {test_speaker} and len(isolated) == 100


def test_fsdd_training_strings_hold_single_digits_and_bare_edges(fsdd_like, tmp_path):
    """Training strings start and end at the first and last sample of a recording about a
    third of the time, and some hold one digit; dev and test strings never do either."""
    result = import_fsdd(fsdd_like, opts(tmp_path / "o", seed=0), per_speaker=60)

    def bare(row):  # the recordings are tones: a bare edge is loud at once
        audio = load_audio(row.audio)
        return np.abs(audio[:40]).max() > 1e-2, np.abs(audio[-40:]).max() > 1e-2

    train = result.manifests["train"]
    edges = np.array([bare(r) for r in train])
    assert 0.15 < edges.mean() < 0.45
    assert 0.05 < np.mean([len(r.text.split()) == 1 for r in train]) < 0.3
    for row in result.manifests["test"] + result.manifests["dev"]:
        assert not any(bare(row)) and len(row.text.split()) >= 2


def test_fsdd_speaker_held_out_for_dev_and_test_splits_its_takes(fsdd_like, tmp_path):
    result = import_fsdd(fsdd_like, opts(tmp_path / "o", test_speakers=("bob",),
                                         dev_speakers=("bob",)), per_speaker=30)
    speakers = {k: {r.speaker for r in v} for k, v in result.manifests.items()}
    assert speakers["dev"] == speakers["test"] == {"bob"}
    assert speakers["train"] == {"alice", "carol"}
    assert len(result.manifests["dev"]) == len(result.manifests["test"]) == 10
    takes = {int(r.id.rsplit("_", 1)[1]) % 2 for r in result.manifests["isolated-test"]}
    assert takes == {1}  # the odd takes: the test strings' recordings, never dev's


def test_real_fsdd(corpora, tmp_path):
    out = tmp_path / "fsdd"
    result = import_fsdd(corpora / "fsdd", opts(out, test_speakers=("jackson",)), per_speaker=15)
    assert len(read_manifest(out / "isolated.jsonl")) == 2500
    assert not result.rejected
    test = read_manifest(out / "test.jsonl")
    assert {r.speaker for r in test} == {"jackson"}
    others = read_manifest(out / "train.jsonl") + read_manifest(out / "dev.jsonl")
    assert "jackson" not in {r.speaker for r in others}
    assert len({r.speaker for r in others}) == 4


def test_real_speechocean762(corpora, tmp_path):
    out = tmp_path / "so"
    result = import_corpus("speechocean762", corpora / "speechocean762", opts(out))
    assert len(read_manifest(out / "train.jsonl")) == 1340
    assert len(read_manifest(out / "test.jsonl")) == 600
    assert not result.rejected
    row = read_manifest(out / "test.jsonl")[0]
    assert row.text == row.text.lower() and Path(row.audio).is_file()
    summary = json.loads((out / "import.json").read_text())
    assert summary["manifests"]["train"]["speakers"] == 67
    # carving dev speakers out of train keeps the three splits speaker-disjoint
    carved = import_corpus("speechocean762", corpora / "speechocean762",
                           opts(tmp_path / "so2", dev_fraction=0.1))
    spk = {k: {r.speaker for r in v} for k, v in carved.manifests.items()}
    assert len(spk["dev"]) == 7 and not spk["dev"] & spk["train"]
    assert len(carved.manifests["train"]) + len(carved.manifests["dev"]) == 1340


def test_generic_tsv_split_by_speaker_and_row_checks(tmp_path):
    corpus = tmp_path / "corpus"
    lines = ["path\tsentence\tspeaker"]
    for s in range(10):
        for u in range(3):
            write(corpus / f"s{s}_{u}.flac", tone(1.0, 16000, freq=300 + 20 * u), 16000)
            lines.append(f"s{s}_{u}.flac\tUtterance number {u}!\tspk{s}")
    write(corpus / "short.wav", tone(0.2))
    lines += ["short.wav\tthis sentence is far too long for a fifth of a second\tspk0",
              "s0_0.flac\t\tspk0", "s0_1.flac\tcafé 你好\tspk0", "gone.wav\thello\tspk0"]
    (corpus / "all.tsv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    result = import_corpus("generic", corpus / "all.tsv", opts(out, seed=1))
    spk = {k: {r.speaker for r in v} for k, v in result.manifests.items()}
    assert set(spk) == {"train", "dev", "test"}
    assert len(spk["test"]) == 1 and len(spk["dev"]) == 1
    assert not (spk["train"] & spk["dev"] or spk["train"] & spk["test"] or spk["dev"] & spk["test"])
    assert sum(len(v) for v in result.manifests.values()) == 30
    assert result.manifests["train"][0].text.startswith("utterance number")
    reasons = [r.reason for r in result.rejected]
    assert any("too long for the audio under CTC" in r for r in reasons)
    assert "empty transcript" in reasons
    assert any("characters outside the alphabet" in r and "你" in r for r in reasons)
    assert any(r.startswith("missing audio") for r in reasons)
    assert len(reasons) == 4


def test_generic_jsonl_with_split_column_and_digits(tmp_path):
    write(tmp_path / "c" / "a.wav", tone(2.0))
    rows = [{"audio": "a.wav", "text": "call 911 now", "speaker": "x", "split": "train"},
            {"audio": "a.wav", "text": "the second half", "speaker": "y", "split": "valid",
             "offset": 1.0, "end": 2.0}]
    (tmp_path / "c" / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    result = import_corpus("generic", tmp_path / "c", opts(tmp_path / "o"))
    assert result.manifests["train"][0].text == "call nine hundred eleven now"
    assert result.manifests["dev"][0].duration == pytest.approx(1.0)
    strict = import_corpus("generic", tmp_path / "c", opts(tmp_path / "o2", digits="reject"))
    assert "train" not in strict.manifests or not strict.manifests["train"]
    assert "digits" in strict.rejected[0].reason


def test_kaldi_dirs_with_segments_and_pipes(tmp_path):
    root = tmp_path / "recipe"
    write(root / "wav" / "rec1.wav", tone(3.0))
    write(root / "wav" / "rec2.wav", tone(1.0))
    train = root / "data" / "train"
    train.mkdir(parents=True)
    (train / "wav.scp").write_text(
        f"rec1 {root / 'wav' / 'rec1.wav'}\nrec2 ../../wav/rec2.wav\n"
        "rec3 sox in.wav -t wav - |\n")
    (train / "text").write_text("utt1 FIRST PART\nutt2 SECOND PART\nutt3 whole thing\n"
                                "utt4 piped one\n")
    (train / "utt2spk").write_text("utt1 a\nutt2 a\nutt3 b\nutt4 c\n")
    (train / "segments").write_text("utt1 rec1 0.0 1.5\nutt2 rec1 1.5 3.0\nutt3 rec2 0 1.0\n"
                                    "utt4 rec3 0 1\n")
    result = import_corpus("kaldi", root / "data", opts(tmp_path / "out"))
    rows = result.manifests["train"]
    assert [(r.id, r.text, r.offset, r.end) for r in rows] == [
        ("utt1", "first part", 0.0, 1.5), ("utt2", "second part", 1.5, 3.0),
        ("utt3", "whole thing", 0.0, 1.0)]
    assert rows[0].duration == pytest.approx(1.5)
    assert [r.reason for r in result.rejected] == ["piped wav.scp entries are not supported"]
    back = read_manifest(tmp_path / "out" / "train.jsonl")
    assert back[1].offset == 1.5 and Path(back[1].audio) == root / "wav" / "rec1.wav"


def test_librispeech_layout(tmp_path):
    root = tmp_path / "LibriSpeech"
    for subset, spk in (("dev-clean", "84"), ("test-clean", "61")):
        chapter = root / subset / spk / "121123"
        write(chapter / f"{spk}-121123-0000.flac", tone(1.2))
        write(chapter / f"{spk}-121123-0001.flac", tone(0.9))
        (chapter / f"{spk}-121123.trans.txt").write_text(
            f"{spk}-121123-0000 GO DO YOU HEAR\n{spk}-121123-0001 BUT IN LESS\n")
    result = import_corpus("librispeech", root, opts(tmp_path / "out"))
    assert set(result.manifests) == {"dev-clean", "test-clean"}
    assert [r.text for r in result.manifests["dev-clean"]] == ["go do you hear", "but in less"]
    assert result.manifests["test-clean"][0].speaker == "61"


def test_ljspeech_published_layout_and_shared_manifest(tmp_path):
    root = tmp_path / "LJSpeech-1.1"
    write(root / "wavs" / "LJ001-0001.wav", tone(1.5, 22050), 22050)
    write(root / "wavs" / "LJ001-0002.wav", tone(1.0, 22050), 22050)
    (root / "metadata.csv").write_text(
        "LJ001-0001|Printing, in 1480.|Printing, in fourteen eighty.\n"
        "LJ001-0002|in being modern.|\n"
        "LJ001-0003|no audio for this one|\n"
        "just one field\n")
    result = import_corpus("ljspeech", root, opts(tmp_path / "out"))
    assert list(result.manifests) == ["train"]
    assert [(r.id, r.text, r.speaker) for r in result.manifests["train"]] == [
        ("LJ001-0001", "printing in fourteen eighty", "LJ"),
        ("LJ001-0002", "in being modern", "LJ")]
    reasons = {r.id: r.reason for r in result.rejected}
    assert "missing audio" in reasons["LJ001-0003"]
    assert "expected id|text|normalised text" in reasons["just one field"]

    shared = tmp_path / "ljspeech-part1"  # the shared corpora's layout: Ogg Opus + table
    for i in range(10):
        write(shared / "audio" / f"LJ002-{i:04d}.ogg", tone(1.0), format="OGG",
              subtype="OPUS")
    (shared / "manifest.tsv").write_text("utt_id\tpath\tspeaker\tduration_s\ttext\n" + "".join(
        f"LJ002-{i:04d}\taudio/LJ002-{i:04d}.ogg\tLJ\t1.0\tWord number {i}.\n"
        for i in range(10)))
    result = import_corpus("ljspeech", shared, opts(tmp_path / "o2", dev_fraction=0.2))
    assert {k: len(v) for k, v in result.manifests.items()} == {"train": 8, "dev": 2}
    assert result.manifests["train"][0].duration == pytest.approx(1.0, abs=0.03)
    with pytest.raises(FileNotFoundError, match="not an LJSpeech folder"):
        import_corpus("ljspeech", tmp_path / "out", opts(tmp_path / "o3"))


def test_further_corpora_are_imported_whole_and_trained_on_with_weights(tmp_path):
    from speechrnn.config import ConfigError, CorpusConfig, DataConfig
    from speechrnn.corpora import prepare_data

    table = "utt_id\tpath\tsplit\tspeaker\ttext\n"
    main, kids = tmp_path / "adults", tmp_path / "kids"
    for root, fmt, ext in ((main, "FLAC", "flac"), (kids, "OGG", "ogg")):
        rows = []
        for s in range(4):
            for i in range(3):
                name = f"audio/S{s}/{s}{i}.{ext}"
                write(root / name, tone(1.0), format=fmt,
                      **({"subtype": "OPUS"} if fmt == "OGG" else {}))
                rows.append(f"{s}{i}\t{name}\t{'test' if s == 3 else 'train'}\tS{s}\tgo on\n")
        (root / "manifest.tsv").write_text(table + "".join(rows))
    cfg = DataConfig(kind="speechocean762", source=str(main), out=str(tmp_path / "data"),
                     dev_fraction=0.4, corpora=(CorpusConfig("speechocean762", str(kids),
                                                             ("train", "test"), 0.5),))
    prepare_data(cfg, progress=False)
    kids_dir = tmp_path / "data" / "corpora" / "kids"
    assert len(read_manifest(kids_dir / "train.jsonl")) == 9  # no dev carved out of it
    assert len(read_manifest(kids_dir / "test.jsonl")) == 3
    assert [(p.name, w) for p, w in cfg.training_sets()] == [
        ("train.jsonl", 1.0), ("train.jsonl", 0.5), ("test.jsonl", 0.5)]
    stamp = (kids_dir / "prepared.json").stat().st_mtime_ns
    prepare_data(cfg, progress=False)
    assert (kids_dir / "prepared.json").stat().st_mtime_ns == stamp  # not imported again
    with pytest.raises(SpeechRNNError, match="no dev manifest"):
        prepare_data(replace(cfg, corpora=(CorpusConfig("speechocean762", str(kids),
                                                        ("dev",), name="k2"),)),
                     progress=False)
    with pytest.raises(ConfigError, match="share a folder name"):
        DataConfig(corpora=(CorpusConfig("ljspeech", "a/x"), CorpusConfig("ljspeech", "b/x")))
    with pytest.raises(ConfigError, match="weight"):
        CorpusConfig("ljspeech", "x", weight=0)


def test_a_further_corpus_can_keep_only_utterances_of_given_words(tmp_path):
    from speechrnn.config import CorpusConfig, DataConfig
    from speechrnn.corpora import prepare_data

    kids = tmp_path / "kids"
    texts = ["ZERO THREE FIVE", "WE CALL IT BEAR", "NINE", "ONE TWO BEAR"]
    for i in range(len(texts)):
        write(kids / f"audio/S{i}/{i}.flac", tone(1.5), format="FLAC")
    (kids / "manifest.tsv").write_text("utt_id\tpath\tsplit\tspeaker\ttext\n" + "".join(
        f"{i}\taudio/S{i}/{i}.flac\ttrain\tS{i}\t{t}\n" for i, t in enumerate(texts)))
    digits = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
    cfg = DataConfig(kind="speechocean762", source=str(kids), out=str(tmp_path / "data"),
                     corpora=(CorpusConfig("speechocean762", str(kids), only_words=digits,
                                           name="kid-digits"),))
    prepare_data(cfg, progress=False)
    kept = read_manifest(tmp_path / "data" / "corpora" / "kid-digits" / "train.jsonl")
    assert [r.text for r in kept] == ["zero three five", "nine"]


def test_commonvoice_layout_with_mp3(tmp_path):
    root = tmp_path / "cv" / "en"
    header = "client_id\tpath\tsentence\tup_votes\tdown_votes\tage\tgender\taccent"
    for split, n in (("train", 4), ("dev", 1), ("test", 1)):
        lines = [header]
        for i in range(n):
            name = f"common_voice_en_{split}{i}.mp3"
            write(root / "clips" / name, tone(1.5, 48000), 48000, format="MP3")
            lines.append(f"c{split}{i % 2}\t{name}\tHello there, number {i}.\t2\t0\t\t\t")
        (root / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    (root / "validated.tsv").write_text(header + "\n")
    result = import_corpus("commonvoice", root, opts(tmp_path / "out"))
    assert {k: len(v) for k, v in result.manifests.items()} == {"train": 4, "dev": 1, "test": 1}
    assert result.manifests["train"][1].text == "hello there number one"
    assert result.manifests["train"][0].duration == pytest.approx(1.5, abs=0.06)


def test_unknown_kind_and_missing_source(tmp_path):
    with pytest.raises(ValueError, match="unknown corpus kind"):
        import_corpus("timit", tmp_path, opts(tmp_path / "o"))
    with pytest.raises(FileNotFoundError, match="not found"):
        import_corpus("kaldi", tmp_path / "nope", opts(tmp_path / "o"))
    assert set(IMPORTERS) >= {"fsdd", "kaldi", "librispeech", "commonvoice", "generic",
                              "speechocean762"}


def test_synth_corpus_holds_out_voices_and_is_seeded(needs_espeak, tmp_path):
    a = make_synth_corpus(opts(tmp_path / "a", seed=5), train=24, dev=4, test=6)
    b = make_synth_corpus(opts(tmp_path / "b", seed=5), train=24, dev=4, test=6)
    voices = {k: {r.speaker for r in v} for k, v in a.manifests.items()}
    assert not voices["test"] & voices["train"] and not voices["dev"] & voices["train"]
    assert not a.rejected
    for split in ("train", "dev", "test"):
        assert [(r.text, r.speaker) for r in a.manifests[split]] == \
               [(r.text, r.speaker) for r in b.manifests[split]]
    row = a.manifests["train"][0]
    audio = load_audio(row.audio)
    assert len(audio) / 16000 == pytest.approx(row.duration, abs=1e-3)
    assert 0.01 < np.sqrt(np.mean(audio**2)) < 0.5
    texts = [r.text for r in a.manifests["train"]]
    assert any(set(t.split()) <= set(DIGITS) for t in texts)
    assert any(not set(t.split()) <= set(DIGITS) for t in texts)
    if shutil.which("flite"):
        assert any(s.startswith("flite-") for s in voices["train"] | voices["test"])


def test_prepare_data_builds_once_and_adds_synthetic_training_voices(needs_espeak, tmp_path):
    from speechrnn.config import DataConfig
    from speechrnn.corpora import prepare_data

    cfg = DataConfig(kind="synth", out=str(tmp_path / "d"), synth_train=6, synth_dev=2,
                     synth_test=2, synth_extra=4)
    assert prepare_data(cfg, progress=False) is not None
    assert prepare_data(cfg, progress=False) is None  # already there: nothing rebuilt
    paths = cfg.training_manifests()
    assert [p.name for p in paths] == ["train.jsonl", "train.jsonl"]
    extra = read_manifest(paths[1])
    assert len(extra) == 4 and all(set(r.text.split()) <= set(DIGITS) for r in extra)
    # other settings: rebuilt, never the stale manifests
    more = replace(cfg, synth_train=8, synth_extra=5)
    assert prepare_data(more, progress=False) is not None
    assert len(read_manifest(paths[0])) == 8 and len(read_manifest(paths[1])) == 5
    assert prepare_data(replace(more, cache="elsewhere"), progress=False) is None
    with pytest.raises(FileNotFoundError, match="SPEECHRNN_CORPORA"):
        prepare_data(DataConfig(kind="fsdd", source="no-such-corpus", out=str(tmp_path / "f")))


def test_joined_synthetic_digits_are_made_as_fsdd_strings_are(needs_espeak, tmp_path,
                                                              monkeypatch):
    import librosa

    from speechrnn.config import DataConfig
    from speechrnn.corpora import prepare_data, synth

    voices = [synth.Voice("espeak-ng", "en-us+m1"), synth.Voice("espeak-ng", "en-gb+f2")]
    real = synth.split_voices
    monkeypatch.setattr(synth, "split_voices", lambda engines: {**real(engines), "train": voices})
    cfg = DataConfig(kind="synth", out=str(tmp_path / "d"), synth_train=2, synth_dev=1,
                     synth_test=1, synth_extra=6, synth_extra_joined=True,
                     synth_extra_rate=8000)
    prepare_data(cfg, progress=False)
    rows = read_manifest(cfg.synth_extra_manifest())
    assert len(rows) == 6 and {r.speaker for r in rows} == {v.id for v in voices}
    for row in rows:
        words = row.text.split()
        assert 2 <= len(words) <= 7 and set(words) <= set(DIGITS)
        audio = load_audio(row.audio)
        spectrum = np.abs(np.fft.rfft(audio)) ** 2
        freqs = np.fft.rfftfreq(len(audio), 1 / 16000)
        assert spectrum[freqs > 4200].sum() < 1e-3 * spectrum.sum()  # band-limited to 8 kHz
    digits = sorted((tmp_path / "d" / "synth-extra" / "audio" / "digits").glob("*.wav"))
    assert len(digits) == 2 * 10 * 3  # every voice says every digit three times
    for path in digits[:10]:  # trimmed as FSDD's recordings are: speech from the first frame
        audio = load_audio(path)
        assert len(librosa.effects.trim(audio, top_db=30)[0]) > 0.9 * len(audio)
    first = [r.text for r in rows]
    prepare_data(replace(cfg, synth_extra_joined=False), progress=False)  # other settings
    assert len(read_manifest(cfg.synth_extra_manifest())) == 6
    prepare_data(cfg, progress=False)
    assert [r.text for r in read_manifest(cfg.synth_extra_manifest())] == first  # seeded


# --- hostile corpora: every odd record a rejected row with a reason, nothing read outside

FUZZ = settings(max_examples=40, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])
ENCODINGS = ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32"]


@pytest.fixture
def loads(monkeypatch) -> list[Path]:
    """Every audio path an import decodes, resolved."""
    seen: list[Path] = []

    def spy(real):
        def load(path, *args, **kw):
            seen.append(Path(os.path.realpath(path)))
            return real(path, *args, **kw)
        return load

    monkeypatch.setattr(importer_module, "load_audio", spy(importer_module.load_audio))
    monkeypatch.setattr(fsdd_module, "load_audio", spy(fsdd_module.load_audio))
    return seen


def outside_setup(tmp: Path) -> tuple[Path, Path]:
    """(corpus folder, a good audio file outside it)."""
    outside = write(tmp / "secret" / "outside.wav", tone(1.0))
    corpus = tmp / "corpus"
    corpus.mkdir()
    return corpus, outside


def in_manifests(result, path: Path) -> bool:
    return any(Path(os.path.realpath(r.audio)) == path.resolve()
               for rows in result.manifests.values() for r in rows)


ODD_TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["x" * 100_000, "1" * 5000, "nul\0in it", "bell\x07 and \x1b[31m",
                     "form\x0cfeed", "\ufeffbom inside", "\ud800 lone surrogate",
                     "line\u2028separator", "tab\tinside", "q\"uote", ""]))
ODD_PATH = st.sampled_from(["good.wav", "missing.wav", "../secret/outside.wav",
                            "sub/../../secret/outside.wav", "link.wav", "a\0b.wav",
                            "x" * 5000 + ".wav", "sub", "", "\ud800.wav", "good.wav\t"])
ODD_NUMBER = st.sampled_from(["", "1.5", "nan", "inf", "-1", "1e999", "1" * 5000, "abc"])
ODD_SPLIT = st.sampled_from(["train", "valid", "test", "", "../../evil", "a/b", "rejected",
                             "x" * 100, "nul\0", "other"])


@FUZZ
@given(rows=st.lists(st.tuples(ODD_PATH, ODD_TEXT, ODD_TEXT, ODD_NUMBER, ODD_SPLIT),
                     max_size=6),
       kind=st.sampled_from(["tsv", "csv", "jsonl"]), encoding=st.sampled_from(ENCODINGS),
       newline=st.sampled_from(["\n", "\r\n"]), out_format=st.sampled_from(["jsonl", "tsv"]))
def test_generic_tables_with_odd_records_reject_them_with_reasons(rows, kind, encoding,
                                                                  newline, out_format, loads):
    loads.clear()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        corpus, outside = outside_setup(tmp)
        write(corpus / "good.wav", tone(1.0))
        (corpus / "sub").mkdir()
        (corpus / "link.wav").symlink_to(outside)
        records = [("good.wav", "Hello world", "spk0", "", "train")] + rows
        columns = ["path", "text", "speaker", "duration", "split"]
        if kind == "jsonl":
            text = "".join(json.dumps(dict(zip(columns, r))) + "\n" for r in records)
        else:
            records = [tuple(v.replace("\n", " ").replace("\r", " ") for v in r)
                       for r in records]
            if kind == "tsv":
                records = [tuple(v.replace("\t", " ") for v in r) for r in records]
                text = "".join("\t".join(r) + "\n" for r in [columns, *records])
            else:
                f = io.StringIO()
                csv.writer(f, lineterminator="\n").writerows([columns, *records])
                text = f.getvalue()
        (corpus / f"all.{kind}").write_bytes(
            text.replace("\n", newline).encode(encoding, "surrogatepass"))
        out = tmp / "out" / "o"
        result = import_corpus("generic", corpus, opts(out, format=out_format))
        kept = sum(len(v) for v in result.manifests.values())
        assert kept + len(result.rejected) == len(records)
        assert all(r.reason for r in result.rejected)
        assert not in_manifests(result, outside)
        assert outside not in loads  # '..' and a link out of the folder are never followed
        assert sorted(p.name for p in (tmp / "out").iterdir()) == ["o"]  # nothing escapes out
        if "\0" not in text and "\ud800" not in text and encoding in ("utf-8", "utf-8-sig",
                                                                        "utf-16", "utf-32"):
            assert [r.text for r in result.manifests["train"]][:1] == ["hello world"]
        with (out / "rejected.tsv").open(encoding="utf-8") as f:  # the report reads back
            assert len(list(csv.DictReader(f, delimiter="\t"))) == len(result.rejected)


def test_paths_out_of_the_corpus_are_rejected_by_every_importer(tmp_path, loads):
    corpus, outside = outside_setup(tmp_path)
    audio = corpus / "audio"
    write(audio / "good.wav", tone(1.0))
    (audio / "link.wav").symlink_to(outside)
    sub = corpus / "sub"
    sub.mkdir()
    (corpus / "metalink.tsv").symlink_to(outside.parent / "meta.tsv")
    (outside.parent / "meta.tsv").write_text(f"path\ttext\n{outside}\tsecret words\n")
    lines = ["path\ttext\tspeaker\tsplit", "audio/good.wav\thello there\ta\ttrain",
             "../secret/outside.wav\tclimbs out\ta\ttrain",
             "sub/../../secret/outside.wav\tclimbs out later\ta\ttrain",
             "audio/link.wav\ta link out\ta\ttrain", f"{outside}\tabsolute\ta\ttrain"]
    (corpus / "manifest.tsv").write_text("\n".join(lines) + "\n")

    def reasons(result) -> dict[str, str]:
        return {Path(r.audio).name: r.reason for r in result.rejected}

    so = import_corpus("speechocean762", corpus, opts(tmp_path / "so"))
    assert [r.text for r in so.manifests["train"]] == ["hello there"]
    assert len(so.rejected) == 4
    assert sum("leaves the corpus folder" in r.reason for r in so.rejected) == 3
    assert "leaves the corpus folder" in reasons(so)["link.wav"]
    assert any("absolute audio path" in r.reason for r in so.rejected)

    generic = import_corpus("generic", corpus, opts(tmp_path / "g"))
    # the table you write may name a file outside by its absolute path: that is explicit
    texts = sorted(r.text for rows in generic.manifests.values() for r in rows)
    assert texts == ["absolute", "hello there"]
    assert "metalink.tsv is a symbolic link out" in reasons(generic)["metalink.tsv"]
    assert sum("leaves the corpus folder" in r.reason for r in generic.rejected) == 3

    cv = tmp_path / "cv"
    write(cv / "clips" / "a.wav", tone(1.0))
    (cv / "clips" / "b.wav").symlink_to(outside)
    (cv / "train.tsv").write_text("client_id\tpath\tsentence\nc\ta.wav\tyes\n"
                                  "c\t../../secret/outside.wav\tno\nc\tb.wav\tno\n"
                                  f"c\t{outside}\tno\n")
    (cv / "test.tsv").symlink_to(outside.parent / "meta.tsv")
    result = import_corpus("commonvoice", cv, opts(tmp_path / "cvo"))
    assert [r.text for r in result.manifests["train"]] == ["yes"]
    assert len(result.rejected) == 4 and "test" not in result.manifests

    ls = tmp_path / "LibriSpeech" / "dev-clean"
    chapter = ls / "1" / "2"
    write(chapter / "1-2-0.flac", tone(1.0))
    (chapter / "1-2-1.flac").symlink_to(outside)
    (chapter / "1-2.trans.txt").write_text("1-2-0 GOOD ONE\n1-2-1 LINKED OUT\n"
                                           "../../../../secret/outside BAD\n")
    away = tmp_path / "secret" / "9" / "9"
    away.mkdir(parents=True)
    (away / "9-9.trans.txt").write_text("9-9-0 SECRET\n")
    (ls / "9").symlink_to(away.parent)
    result = import_corpus("librispeech", ls.parent, opts(tmp_path / "lso"))
    assert [r.text for r in result.manifests["dev-clean"]] == ["good one"]
    assert len(result.rejected) == 3
    assert any("9-9.trans.txt" in r.audio and "symbolic link out" in r.reason
               for r in result.rejected)

    fsdd = tmp_path / "fsdd" / "recordings"
    for take in range(3):
        write(fsdd / f"1_ann_{take}.wav", tone(0.5, 8000), 8000)
        write(fsdd / f"2_bob_{take}.wav", tone(0.5, 8000), 8000)
    (fsdd / "3_ann_9.wav").symlink_to(outside)
    result = import_fsdd(fsdd.parent, opts(tmp_path / "fo", test_speakers=("bob",)),
                         per_speaker=2)
    assert "symbolic link out" in reasons(result)["3_ann_9.wav"]

    recipe = tmp_path / "recipe"
    data = recipe / "data" / "train"
    data.mkdir(parents=True)
    write(recipe / "wav" / "r1.wav", tone(1.0))
    (data / "wav.scp").write_text(f"r1 ../../wav/r1.wav\nr2 ../../../secret/outside.wav\n"
                                  f"r3 {outside}\n")
    (data / "text").write_text("r1 inside\nr2 climbs out\nr3 absolute\n")
    (data / "utt2spk").symlink_to(outside.parent / "meta.tsv")
    result = import_corpus("kaldi", recipe / "data", opts(tmp_path / "ko"))
    assert sorted(r.text for r in result.manifests["train"]) == ["absolute", "inside"]
    why = [r.reason for r in result.rejected]
    assert len(why) == 2 and any("leaves the corpus folder" in r for r in why)
    assert any("utt2spk is a symbolic link out" in r for r in why)

    # only the explicit absolute paths (a generic table, a wav.scp) were ever decoded
    assert loads.count(outside.resolve()) == 2


@FUZZ
@given(blob=st.binary(max_size=2000), encoding=st.sampled_from(ENCODINGS),
       kind=st.sampled_from(["generic", "speechocean762", "commonvoice", "kaldi",
                             "librispeech", "generic-jsonl", "generic-csv"]),
       text=st.text(max_size=300), use_text=st.booleans())
def test_garbage_metadata_never_crashes_an_import(blob, encoding, kind, text, use_text):
    data = text.encode(encoding, "surrogatepass") if use_text else blob
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "c"
        files = {"generic": ["t.tsv"], "generic-jsonl": ["t.jsonl"], "generic-csv": ["t.csv"],
                 "speechocean762": ["manifest.tsv"], "commonvoice": ["train.tsv"],
                 "kaldi": ["d/wav.scp", "d/text", "d/segments", "d/utt2spk"],
                 "librispeech": ["1/2/1-2.trans.txt"]}[kind]
        for name in files:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(data)
        (root / "clips").mkdir()
        write(root / "1" / "2" / "1-2-0.flac", tone(0.3))
        try:
            result = import_corpus(kind.split("-")[0], root, opts(Path(tmp) / "out"))
        except SpeechRNNError:
            return  # e.g. no LibriSpeech subset in it: said in one line, not a crash
        assert all(r.reason for r in result.rejected)


def test_rows_that_would_break_the_output_are_rejected(tmp_path):
    write(tmp_path / "c" / "a.wav", tone(2.0))
    rows = [{"audio": "a.wav", "text": "fine", "speaker": "s", "split": "train"},
            {"audio": "a.wav", "text": "tabbed speaker", "speaker": "s\tt", "split": "train"},
            {"audio": "a.wav", "text": "x", "speaker": "s", "split": "../../escaped"},
            {"audio": "a.wav", "text": "y", "speaker": "s", "split": "rejected"},
            {"audio": "a.wav", "text": "1" * 5000, "speaker": "s", "split": "train"},
            {"audio": "a.wav", "text": "z", "speaker": "s", "split": "train", "offset": "nan"},
            {"audio": "a.wav", "text": "no split here", "speaker": "s"},
            {"audio": ["a.wav"], "text": "list", "speaker": "s", "split": "train"},
            {"audio": "a.wav", "text": "w", "id": "\ud800", "split": "train"}]
    (tmp_path / "c" / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows)
                                            + "\n[[[[\n" + "[" * 100_000 + "\n")
    result = import_corpus("generic", tmp_path / "c", opts(tmp_path / "o", format="tsv"))
    assert [r.text for r in result.manifests["train"]] == ["fine"]
    reasons = " | ".join(r.reason for r in result.rejected)
    assert len(result.rejected) == 10, reasons
    for words in ("speaker holds a control character U+0009", "is not a plain name",
                  "too long for the audio", "bad number: offset", "no split",
                  "no audio path", "id holds a control character", "not valid JSON"):
        assert words in reasons
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "o"]
    assert max(len(r.reason) for r in result.rejected) < 1100
    with (tmp_path / "o" / "rejected.tsv").open(encoding="utf-8") as f:
        assert len(list(csv.DictReader(f, delimiter="\t"))) == 10  # the report reads back

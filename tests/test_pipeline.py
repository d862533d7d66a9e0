"""The library-level pipeline API: evaluate and transcribe as the CLI and scripts call them."""

import json

from conftest import bad_files

from speechrnn import pipeline
from speechrnn.config import load_pipeline_config
from speechrnn.manifest import read_manifest


def test_evaluate_reports_rates_scores_and_files(trained, tmp_path):
    cfg = load_pipeline_config(trained.config)
    test = cfg.data.manifest("test")
    report = pipeline.evaluate(cfg, test, out=tmp_path / "ev", progress=False)
    rows = read_manifest(test)
    assert report.rates.utterances == len(rows) == len(report.scores)
    assert report.model == str(cfg.model_dir) and report.decoding.name == "greedy"
    assert {p.name for p in report.files} == {"utterances.csv", "alignment.txt",
                                             "word_errors.csv", "summary.json"}
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary == report.summary() and summary["wer"] == report.rates.wer
    beam = pipeline.evaluate(trained.model_dir, test, pipeline.recipe_decoding(cfg, "beam"),
                             progress=False)
    assert beam.decoding.name == "beam_lm" and beam.summary()["lm"] is True
    assert beam.files == []  # nothing written unless asked


def test_transcribe_yields_each_readable_input_and_reports_the_rest(trained, tmp_path):
    cfg = load_pipeline_config(trained.config)
    good = [r.audio for r in read_manifest(cfg.data.manifest("test"))[:2]]
    bad = bad_files(tmp_path)
    failed = []
    sources = [good[0], bad["corrupt"], good[1], bad["empty"]]
    results = list(pipeline.transcribe(trained.model_dir, sources, progress=False,
                                       on_error=failed.append))
    assert [r.source for r in results] == [str(p) for p in good]
    assert all(r.duration > 0 for r in results)
    assert sorted(e.path for e in failed) == sorted(str(p) for p in (bad["corrupt"],
                                                                    bad["empty"]))


def test_find_audio_expands_folders_and_globs(tmp_path):
    from conftest import tone, write

    write(tmp_path / "a" / "x.wav", tone(0.2))
    write(tmp_path / "a" / "deep" / "y.flac", tone(0.2))
    (tmp_path / "a" / "notes.txt").write_text("not audio")
    files, missing = pipeline.find_audio([tmp_path / "a", str(tmp_path / "a" / "*.wav"),
                                          tmp_path / "empty-glob-*.wav"])
    assert [f.name for f in files] == ["y.flac", "x.wav", "x.wav"]
    assert len(missing) == 1 and "no file matches" in missing[0]

import json
import os
from pathlib import Path

import pytest

from speechrnn.evaluate import error_rates, utterance_wer


def test_error_rates_count_edits():
    r = error_rates(["the cat sat", "on the mat"], ["the cat sat down", "on mat"])
    assert (r.substitutions, r.deletions, r.insertions, r.words) == (0, 1, 1, 6)
    assert r.wer == pytest.approx(2 / 6)
    assert r.cer == pytest.approx(9 / 21)
    assert error_rates(["a b"], ["a b"]).wer == 0.0
    assert utterance_wer("one two three", "one too three") == pytest.approx(1 / 3)
    assert error_rates(["one two"], [""]).wer == 1.0


def test_error_rates_need_pairs():
    with pytest.raises(ValueError, match="references"):
        error_rates(["a"], [])
    with pytest.raises(ValueError, match="nothing"):
        error_rates([], [])


def test_scores_report_and_alignment(tmp_path):
    from speechrnn.evaluate import score_utterances
    from speechrnn.report import write_report

    scores = score_utterances(["a", "b", "c"], ["one two three", "four five", "six"],
                              ["one too three", "four five", "six six"], [0.9, 1.0, None])
    assert [(s.wer, s.substitutions, s.insertions) for s in scores] == \
        [(pytest.approx(1 / 3), 1, 0), (0.0, 0, 0), (1.0, 0, 1)]
    files = write_report(tmp_path / "r", {"wer": 0.33}, scores)
    rows = (tmp_path / "r" / "utterances.csv").read_text().splitlines()
    assert rows[0].startswith("id,reference,hypothesis,wer,cer,substitutions")
    assert [r.split(",")[0] for r in rows[1:]] == ["c", "a", "b"]  # worst first
    alignment = (tmp_path / "r" / "alignment.txt").read_text()
    assert "c  WER 100.0 %  (S 0, D 0, I 1)" in alignment and "too" in alignment
    assert "\nb " not in alignment  # a perfect utterance is not listed
    assert json.loads((tmp_path / "r" / "summary.json").read_text()) == {"wer": 0.33}
    assert (tmp_path / "r" / "word_errors.csv").read_text().splitlines() == \
        ["reference,hypothesis,count", ",six,1", "two,too,1"]
    assert len(files) == 4 and all(f.exists() for f in files)


def test_word_errors_count_each_confusion():
    from speechrnn.evaluate import score_utterances, word_errors

    scores = score_utterances(
        list("abcde"), ["two five", "two nine one", "seven", "one two", "nine"],
        ["zero nine", "zero nine", "", "one two three", "nine"])
    assert word_errors(scores) == {("two", "zero"): 2, ("five", "nine"): 1, ("one", ""): 1,
                                   ("seven", ""): 1, ("", "three"): 1}
    assert sum(word_errors(scores).values()) == sum(
        s.substitutions + s.deletions + s.insertions for s in scores)
    assert word_errors(score_utterances(["x"], [""], ["oh no"])) == {("", "oh"): 1,
                                                                   ("", "no"): 1}


def test_evaluate_command_reports_and_logs_to_the_run(trained, tmp_path, capsys):
    import mlflow

    from speechrnn.cli import main

    test = trained.corpus / "test.jsonl"
    os.environ["MLFLOW_TRACKING_URI"] = trained.uri
    try:
        for extra in ([], ["--decoder", "beam", "--lm-from",
                           str(trained.corpus / "train.jsonl")]):
            assert main(["evaluate", "--model", str(trained.model_dir), "--manifest",
                         str(test), "--quiet", "--out", str(tmp_path / "ev"),
                         "--run-id", trained.run_id, *extra]) == 0
            summary = json.loads(capsys.readouterr().out)
            assert summary["utterances"] == 4 and summary["words"] > 0
            assert summary["substitutions"] + summary["deletions"] + summary["insertions"] \
                == round(summary["wer"] * summary["words"])
            assert summary["lm"] == bool(extra)
            lines = (tmp_path / "ev" / "utterances.csv").read_text().splitlines()
            assert len(lines) == 5 and (tmp_path / "ev" / "alignment.txt").exists()
    finally:
        del os.environ["MLFLOW_TRACKING_URI"]
    run = mlflow.MlflowClient(trained.uri).get_run(trained.run_id)
    assert run.data.metrics["test_greedy_wer"] == pytest.approx(summary["wer"], abs=1) and \
        "test_beam_lm_wer" in run.data.metrics
    artifacts = mlflow.MlflowClient(trained.uri).list_artifacts(trained.run_id,
                                                                 "evaluation/test_greedy")
    assert {Path(a.path).name for a in artifacts} == {"utterances.csv", "alignment.txt",
                                                     "word_errors.csv", "summary.json"}
    (tmp_path / "lm.txt").write_text("one two three\n")
    assert main(["evaluate", "--model", str(trained.model_dir), "--manifest", str(test),
                 "--decoder", "greedy", "--lm-text", str(tmp_path / "lm.txt")]) == 2
    assert "needs --decoder beam" in capsys.readouterr().err


def test_several_decodings_score_as_each_alone(trained):
    from speechrnn.decoding import DecodingOptions
    from speechrnn.evaluate import evaluate_each, evaluate_model, search_lm_weights
    from speechrnn.lm_build import lm_from_texts
    from speechrnn.manifest import read_manifest
    from speechrnn.transcribe import load_transcriber

    rows = read_manifest(trained.corpus / "dev.jsonl")
    lm = lm_from_texts([r.text for r in read_manifest(trained.corpus / "train.jsonl")])
    model = load_transcriber(trained.model_dir, lm=lm)
    choices = [DecodingOptions(), DecodingOptions("beam", lm_weight=0.3, word_bonus=0.0),
               DecodingOptions("beam", lm_weight=2.0, word_bonus=1.0)]
    together = evaluate_each(model, rows, choices, progress=False)
    for options, (rates, scores) in zip(choices, together):
        alone = evaluate_model(model, rows, options, progress=False)
        assert rates == alone[0] and scores == alone[1]
    best, table = search_lm_weights(model, rows, [(0.3, 0.0), (2.0, 1.0)], progress=False)
    assert [t["wer"] for t in table] == [together[1][0].wer, together[2][0].wer]
    assert (best.lm_weight, best.word_bonus) in ((0.3, 0.0), (2.0, 1.0))
    assert best.method == "beam"


def test_speaker_cmvn_pools_each_speakers_utterances(trained, tmp_path):
    """eval.speaker_cmvn: each utterance is normalised with the statistics of all its
    speaker's utterances in the set (audio only); rows without a speaker keep their own;
    an unreadable row is scored empty and the others go on. The model's recipe choice
    (model.json) is the default."""
    from dataclasses import replace

    import numpy as np

    from speechrnn.audio import load_audio
    from speechrnn.evaluate import _normal, evaluate_model, speaker_statistics
    from speechrnn.inference import InferenceOptions
    from speechrnn.manifest import read_manifest
    from speechrnn.transcribe import load_transcriber

    rows = read_manifest(trained.corpus / "train.jsonl")[:6]
    assert len(rows) == 6
    rows = [replace(r, speaker="ab"[i % 2]) for i, r in enumerate(rows)]
    rows.append(replace(rows[0], audio=str(tmp_path / "gone.wav"), id="gone"))
    rows.append(replace(rows[1], speaker="", id="alone"))
    model = load_transcriber(trained.model_dir, speaker_cmvn=True)
    stats = speaker_statistics(model, rows, progress=False)
    assert set(stats) == {"a", "b"}
    for speaker in "ab":
        audios = [load_audio(r.audio) for r in rows[:6] if r.speaker == speaker]
        np.testing.assert_allclose(stats[speaker].mean,
                                   model.speaker_stats(audios, 16000).mean, atol=1e-5)
    rates, scores = evaluate_model(model, rows, progress=False)
    assert rates.utterances == len(rows) and scores[6].hypothesis == ""
    for row, score in zip(rows[:6], scores):
        hyp = model.transcribe_batch([load_audio(row.audio)], cmvn=stats[row.speaker])[0]
        assert score.hypothesis == _normal(hyp.text)
    plain = load_transcriber(trained.model_dir)
    assert plain.speaker_cmvn is False  # a model saved without the choice
    alone = evaluate_model(plain, rows[7:], progress=False)[1][0]  # batched apart
    assert scores[7].hypothesis == alone.hypothesis
    assert scores[7].confidence == pytest.approx(alone.confidence, abs=1e-4)
    path = tmp_path / "model"
    import shutil

    shutil.copytree(trained.model_dir, path)
    own = InferenceOptions.of_model(path)
    replace(own, speaker_cmvn=True).save(path)  # as a recipe with eval.speaker_cmvn saves it
    assert load_transcriber(path).speaker_cmvn is True
    assert load_transcriber(path, speaker_cmvn=False).speaker_cmvn is False

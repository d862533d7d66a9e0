"""The peers of bench/compare.py: the keras.io CTC recipe re-implementation and the
PocketSphinx wrapper, and the suite's report."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))

import ablate  # noqa: E402
import compare  # noqa: E402
import deepspeech2 as ds2  # noqa: E402
import fsdd_loso  # noqa: E402
import sphinx  # noqa: E402
import train_profile  # noqa: E402
import train_speed  # noqa: E402

TINY = ds2.RecipeConfig(rnn_layers=2, rnn_units=16, learning_rate=1e-3, batch_size=4)


def test_spectrogram_is_the_recipes():
    audio = np.random.default_rng(0).normal(0, 0.1, 16000).astype(np.float32)
    spec = ds2.spectrogram(audio)
    assert spec.shape == (1 + (16000 - 256) // 160, 193)
    np.testing.assert_allclose(spec.mean(axis=1), 0, atol=1e-4)  # each frame normalised
    np.testing.assert_allclose(spec.std(axis=1), 1, atol=1e-3)
    assert ds2.spectrogram(audio[:100]).shape == (1, 193)  # shorter than a frame: padded


def test_deepspeech2_shapes_lengths_and_round_trip(tmp_path):
    from speechrnn.text import Alphabet

    alphabet = Alphabet()
    model = ds2.DeepSpeech2(alphabet.size, TINY)
    feats = np.random.default_rng(1).normal(size=(2, 101, ds2.N_FEATURES)).astype(np.float32)
    out = model(feats, np.array([101, 60]))
    assert out.shape == (2, 51, alphabet.size)
    np.testing.assert_allclose(np.exp(out.numpy()).sum(-1), 1, atol=1e-5)
    assert list(model.output_lengths(np.array([101, 60, 1]))) == [51, 30, 1]
    ds2.save(model, alphabet, TINY, tmp_path / "m", {"batches": 0})
    again, alphabet2 = ds2.load(tmp_path / "m")
    assert alphabet2 == alphabet
    np.testing.assert_allclose(again.predict_log_probs(feats[0]), model.predict_log_probs(feats[0]),
                               atol=1e-6)


@pytest.mark.slow
def test_deepspeech2_trains_for_its_budget_on_real_batches(synth_corpus):
    from speechrnn.dataset import load_examples
    from speechrnn.manifest import read_manifest
    from speechrnn.text import Alphabet

    alphabet = Alphabet()
    rows = read_manifest(synth_corpus / "train.jsonl")[:8]
    examples = load_examples(rows, ds2.Spectrogram(), alphabet, subsampling=ds2.SUBSAMPLING,
                             progress=False)
    assert len(examples) == 8 and examples.features[0].shape[1] == ds2.N_FEATURES
    model = ds2.DeepSpeech2(alphabet.size, TINY)
    before = [w.numpy().copy() for w in model.net.trainable_variables]
    done = ds2.train_for(model, examples, TINY, seconds=10.0, progress=False)
    assert done["train_seconds"] >= 10.0 and done["batches"] >= 2
    assert np.isfinite(done["loss"]) and done["nonfinite_batches"] == 0
    assert done["audio_seconds"] > 0 and done["train_audio_s_per_s"] > 0
    assert any(not np.allclose(a, w.numpy()) for a, w in zip(before,
                                                            model.net.trainable_variables))


@pytest.fixture
def spoken_digits(needs_espeak):
    from speechrnn.corpora.synth import Voice, synthesize

    text = "three one four one five nine"
    return text, synthesize(Voice("espeak-ng", "en-us"), text, 0.9, 0.5)


def test_pocketsphinx_digit_grammar_hears_digits(spoken_digits):
    if not sphinx.available():
        pytest.skip("pocketsphinx is not installed (pip install -e '.[bench]')")
    text, audio = spoken_digits
    words = sphinx.PocketSphinx(sphinx.DIGITS_JSGF, wip=1e-4).recognize(audio).split()
    assert set(words) <= set("zero one two three four five six seven eight nine".split())
    assert sum(a == b for a, b in zip(words, text.split())) >= 4  # a grammar, not a guess
    open_vocabulary = sphinx.PocketSphinx().recognize(audio)
    assert isinstance(open_vocabulary, str) and open_vocabulary  # bundled LM: some words
    assert sphinx.PocketSphinx(sphinx.DIGITS_JSGF).recognize(np.zeros(1600)) == ""


def test_spread_covers_the_manifest():
    rows = list(range(600))
    picked = compare.spread(rows, 100)
    assert len(picked) == 100 and picked[0] == 0 and picked[-1] >= 594
    assert compare.spread(rows, None) == rows and compare.spread(rows[:5], 10) == rows[:5]


def test_folds_hold_out_one_speaker_and_share_synthetic_strings():
    suite = compare.SUITES["full"]
    folds = [t for t in compare.tasks(suite) if t.digits]
    assert [t.name for t in folds] == [f"fsdd-{s}" for s in compare.FSDD_SPEAKERS]
    for task in folds:
        cfg = compare.config(task)
        speaker = task.name.split("-", 1)[1]
        assert cfg.data.test_speakers == (speaker,) == cfg.data.dev_speakers
        assert cfg.train.time_budget_min == suite.fsdd_minutes
        assert cfg.train.workdir == f"runs/bench/full/{task.name}/ours"
        if speaker != "jackson":
            assert cfg.data.synth_extra == 0
            assert cfg.data.extra_train == ("data/fsdd/synth-extra/train.jsonl",)
    so762 = compare.config(compare.tasks(suite)[-1])
    assert so762.data.kind == "speechocean762" and so762.train.time_budget_min == 58


def _result(wer, speed):
    return {"wer": wer, "cer": wer / 2, "utterances": 50, "audio_s_per_s": speed}


def test_report_fills_every_cell():
    train = {"train_seconds": 240.0, "train_audio_s_per_s": 70.0, "epochs": 3,
             "peak_rss_mb": 1500.0}
    entry = {"train": {"ours": train, "ds2": {**train, "train_audio_s_per_s": 6.5,
                                              "epochs": 0.1}},
             "eval": {s: {"plain": _result(0.2, 100.0), "best": _result(0.1, 50.0),
                          "peak_rss_mb": 400.0} for s in compare.SYSTEMS}}
    report = {"suite": "quick", "settings": compare.SUITES["quick"].__dict__,
              "tasks": {"fsdd-jackson": entry, "speechocean762": entry}, "minutes": 40.0,
              "date": "2026-11-22", "machine": {"cpus": 2, "processor": "x86_64",
                                                "python": "3.11"}}
    text = compare.markdown(report, "python bench/compare.py")
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert len(rows) == 3 + 2 + 4 + 6  # headers + 2 accuracy, 4 training, 6 speed rows
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert all(cells), line
    assert "| fsdd-jackson | 50 | 20.0 / 10.0 | 10.0 / 5.0 |" in text
    assert "all-blank" not in text  # no model here outputs nothing

    entry["eval"]["ds2"]["plain"] = {**_result(1.0, 5.0), "cer": 1.0}
    text = compare.markdown(report, "python bench/compare.py")
    assert ("all-blank phase (it outputs nothing): keras.io CTC recipe (DS2) on fsdd-jackson; "
            "keras.io CTC recipe (DS2) on speechocean762.") in text


def test_ds2_jobs_run_without_onednn_only_where_the_task_says(monkeypatch, tmp_path):
    monkeypatch.setattr(compare, "RESULTS", tmp_path)
    envs = {}

    def run(command, check, cwd, env):
        task, system, phase = command[command.index("--job") + 1].split(":")
        envs[task, system] = env.get("TF_ENABLE_ONEDNN_OPTS")
        path = compare.result_path(next(t for t in tasks if t.name == task), system, phase)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")

    monkeypatch.setattr(compare.subprocess, "run", run)
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    tasks = compare.tasks(compare.SUITES["quick"])
    for task in tasks:
        for system in ("ours", "ds2"):
            compare.run_job(task, system, "train", None, False)
    assert envs == {("fsdd-jackson", "ours"): None, ("fsdd-jackson", "ds2"): None,
                    ("fsdd-george", "ours"): None, ("fsdd-george", "ds2"): None,
                    ("speechocean762", "ours"): None, ("speechocean762", "ds2"): "0"}


def test_fsdd_loso_holds_each_speaker_out_in_its_own_folders(tmp_path):
    import argparse
    import os


    args = argparse.Namespace(config=ROOT / "pipelines" / "configs" / "fsdd-digits.yaml",
                              budget_min=2.0, no_track=True, set=["batch.batch_size=8"])
    first, second = fsdd_loso.config(args, "lucas"), fsdd_loso.config(args, "yweweler")
    assert first.data.test_speakers == first.data.dev_speakers == ("lucas",)
    assert first.batch.batch_size == second.batch.batch_size == 8  # --set: every speaker
    assert first.train.time_budget_min == 2.0 and not first.tracking.enabled
    assert first.workdir != second.workdir and first.data.out != second.data.out
    assert "isolated-test" in first.eval.extra_sets
    # the synthetic extras of the first speaker are linked, not built again
    first = replace_out(first, tmp_path / "a")
    second = replace_out(second, tmp_path / "b")
    extra = first.data.synth_extra_manifest()
    extra.parent.mkdir(parents=True)
    extra.write_text("{}\n")
    fsdd_loso.share_synthetic_extras(second, [first])
    copied = second.data.synth_extra_manifest()
    assert copied.read_text() == "{}\n" and os.stat(copied).st_ino == os.stat(extra).st_ino


def replace_out(cfg, out):
    import dataclasses

    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, out=str(out)))


def test_fsdd_loso_knows_every_fsdd_speaker(corpora):
    from speechrnn.corpora.fsdd import scan

    assert set(fsdd_loso.SPEAKERS) == {r.speaker for r in scan(corpora / "fsdd", [])}


def test_ablation_variants_share_the_data_and_train_apart(tmp_path):
    import argparse

    variants = tmp_path / "v.yaml"
    variants.write_text("baseline: []\nwide: [model.lstm_units=320, batch.tempo=0.2]\n")
    read = ablate.read_variants(variants)
    assert read == {"baseline": [], "wide": ["model.lstm_units=320", "batch.tempo=0.2"]}
    args = argparse.Namespace(config=ROOT / "pipelines" / "configs" / "english.yaml",
                              budget_min=5.0, no_track=False)
    base, wide = (ablate.config(args, n, o) for n, o in read.items())
    assert base.data == wide.data and base.workdir != wide.workdir
    assert (base.model.lstm_units, wide.model.lstm_units) == (224, 320)
    assert wide.batch.tempo == 0.2 and base.train.time_budget_min == 5.0
    assert base.tracking.experiment == wide.tracking.experiment == "speechrnn-ablate-english"
    assert base.tracking.register_as != wide.tracking.register_as
    # every shipped variant is a valid config
    shipped = ablate.read_variants(ROOT / "bench" / "ablations" / "english.yaml")
    assert "baseline" in shipped and len(shipped) > 10
    for name, overrides in shipped.items():
        ablate.config(args, name, overrides)
    variants.write_text("wide: model.lstm_units=320\n")
    with pytest.raises(SystemExit, match="v.yaml: expected a mapping"):
        ablate.read_variants(variants)


def test_an_interrupted_ablation_keeps_its_finished_rows(tmp_path, monkeypatch):
    import json

    import recipes

    def train_and_score(cfg, sets, corpora):
        if cfg.tracking.run_name == "deep":
            raise KeyboardInterrupt  # the second variant is interrupted
        return {"epochs": 3, "best_epoch": 3, "train_min": 1.0, "dev_greedy_wer": 50.0,
                "dev_greedy_cer": 20.0, "dev_beam_wer": 40.0, "dev_beam_cer": 21.0,
                "dev_utterances": 7, "wall_min": 1.2}

    monkeypatch.setattr(recipes, "train_and_score", train_and_score)
    monkeypatch.chdir(tmp_path)  # main() moves to the repository; the test's cwd comes back
    variants, out = tmp_path / "v.yaml", tmp_path / "table.json"
    variants.write_text("baseline: []\ndeep: [model.lstm_layers=4]\n")
    with pytest.raises(KeyboardInterrupt):
        ablate.main(["--variants", str(variants), "--json", str(out), "--no-track"])
    rows = json.loads(out.read_text())["rows"]
    assert [(r["variant"], r["dev_beam_wer"]) for r in rows] == [("baseline", 40.0)]


def test_a_recipe_variant_is_trained_once_and_scored(trained, tmp_path):
    """train_and_score runs the recipe: a finished training is kept, the named sets are
    scored both ways, and the recipe's beam search is saved with the model (on a copy of
    the trained run: it changes)."""
    import shutil
    from dataclasses import replace

    import recipes

    from speechrnn.config import load_pipeline_config

    cfg = load_pipeline_config(trained.config)
    shutil.copytree(cfg.workdir, tmp_path / "run")
    cfg = replace(cfg, train=replace(cfg.train, workdir=str(tmp_path / "run")),
                  tracking=replace(cfg.tracking, enabled=False))
    row = recipes.train_and_score(cfg, {"dev": "dev", "test": "held"}, None)
    assert row["kept"] and row["epochs"] == 2  # finished: not trained again
    for key in ("dev_greedy_wer", "dev_beam_wer", "held_greedy_cer", "held_beam_cer"):
        assert 0.0 <= row[key] <= 200.0
    assert row["held_utterances"] == 4
    assert (tmp_path / "run" / "model" / "inference.json").is_file()


def test_a_benchmark_section_of_results_md_is_replaced_and_kept(tmp_path):
    """fsdd_loso.py's table lives in its own section of RESULTS.md: a rerun replaces it,
    and compare.py, which rewrites the file, keeps it."""
    from report import sections, write_section

    results = tmp_path / "RESULTS.md"
    results.write_text("# peers\n\nold table\n")
    report = {"config": str(ROOT / "pipelines" / "configs" / "fsdd-digits.yaml"),
              "budget_min": None, "rows": [
                  {"speaker": "george", "epochs": 7, "connected_greedy_wer": 9.0,
                   "connected_beam_wer": 8.5, "isolated_greedy_wer": 12.0,
                   "isolated_beam_wer": 9.2, "wall_min": 22.7}],
              "mean": {"speaker": "mean", "epochs": 7.0, "connected_greedy_wer": 9.0,
                       "connected_beam_wer": 8.5, "isolated_greedy_wer": 12.0,
                       "isolated_beam_wer": 9.2}}
    write_section(results, "fsdd_loso", fsdd_loso.markdown(report, ["--speakers", "george"]))
    first = results.read_text()
    assert first.startswith("# peers\n\nold table\n\n<!-- begin fsdd_loso")
    assert "python bench/fsdd_loso.py --speakers george" in first
    assert "| george | 7 | 9.0 | 8.5 | 12.0 | 9.2 |" in first
    assert "`pipelines/configs/fsdd-digits.yaml`" in first
    assert "only scored again" not in first
    report["rows"][0]["kept"] = True  # a finished training scored again says so
    assert "(1 of the 1 trainings were kept from an earlier run" in fsdd_loso.markdown(report)
    report["rows"][0]["connected_beam_wer"] = 4.0
    write_section(results, "fsdd_loso", fsdd_loso.markdown(report, []))
    second = results.read_text()
    assert second.count("<!-- begin fsdd_loso") == 1 and "| 4.0 |" in second
    assert "| 8.5 |" in second  # the mean row, unchanged here
    kept = sections(results)
    assert kept.strip().startswith("<!-- begin fsdd_loso") and "| 4.0 |" in kept
    assert "old table" not in kept
    results.write_text("# peers, rerun\n" + kept)  # as compare.py rewrites it
    assert sections(results) == kept


def test_train_profile_times_each_part_of_a_step(synth_corpus):
    result = train_profile.profile(synth_corpus / "train.jsonl", batches=2, limit=16)
    parts = {r["part"]: r["ms_per_batch"] for r in result["rows"]}
    assert list(parts) == ["input pipeline, in memory", "forward", "forward + CTC loss",
                           "forward + loss + gradients", "backward pass (difference)",
                           "optimizer update", "whole step (train_batch)"]
    assert all(parts[k] > 0 for k in parts if k != "backward pass (difference)")
    assert result["audio_s_per_s"] > 0


def test_train_speed_runs_another_revision_from_its_own_tree(tmp_path):
    import subprocess

    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    tree = train_speed.revision_tree(head, tmp_path)
    assert (tree / "bench" / "train_speed.py").read_text() == \
        subprocess.run(["git", "-C", str(ROOT), "show", f"{head}:bench/train_speed.py"],
                       capture_output=True, text=True, check=True).stdout
    assert (tree / "speechrnn" / "train.py").exists() and not (tree / ".git").exists()


TINY_MODEL = ["model.lstm_layers=1", "model.lstm_units=16", "model.conv_filters=16"]


def test_train_speed_rows_train_in_memory_streamed_and_compiled(synth_corpus, tmp_path):
    manifest = synth_corpus / "train.jsonl"
    rows = {name: train_speed.measure(manifest, {**variant, "overrides": TINY_MODEL}, 3, 16,
                                      shards=tmp_path / "shards")
            for name, variant in (("memory", {}), ("streamed", {"source": "shards"}),
                                  ("xla", {"xla": True}))}
    assert (tmp_path / "shards" / "index.json").exists()
    for row in rows.values():
        assert row["audio_s_per_s"] > 0 and row["batches"] == 3 and row["device"] == "CPU"
        assert row["parameters"] == rows["memory"]["parameters"]
        assert 0 <= row["input_wait_pct"] < 100


def test_train_speed_rows_show_the_median_of_runs_in_turns():
    runs = [{"audio_s_per_s": v, "n": k} for k, v in enumerate([70.0, 90.0, 80.0])]
    assert train_speed.median_run(runs)["n"] == 2


def test_train_speed_counts_the_epochs_a_budget_holds(synth_corpus, tmp_path, capsys):
    from speechrnn.manifest import read_manifest

    config = tmp_path / "c.yaml"
    config.write_text(f"data:\n  out: {synth_corpus}\ntrain:\n  time_budget_min: 2\n")
    seconds = sum(r.duration for r in read_manifest(synth_corpus / "train.jsonl"))
    got = train_speed.english_epochs(config, {"a": 10.0, "b": 20.0})
    assert got["epochs"] == {"a": round(120 * 10 / seconds, 1), "b": round(120 * 20 / seconds, 1)}
    config.write_text(f"data:\n  out: {tmp_path / 'none'}\n")
    assert train_speed.english_epochs(config, {"a": 10.0}) is None
    assert "not prepared" in capsys.readouterr().out

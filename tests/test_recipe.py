"""A recipe end to end through speechrnn.recipe.run_recipe, on a copy of the tiny trained run."""

import shutil
from dataclasses import replace

import pytest

from speechrnn.config import ConfigError, load_pipeline_config
from speechrnn.recipe import run_recipe


@pytest.fixture
def recipe(trained, tmp_path):
    """The trained recipe on a copy of its work directory (evaluation changes the model:
    its decoding is saved with it), tracking off."""
    cfg = load_pipeline_config(trained.config)
    shutil.copytree(cfg.workdir, tmp_path / "run")
    return replace(cfg, train=replace(cfg.train, workdir=str(tmp_path / "run")),
                   tracking=replace(cfg.tracking, enabled=False))


def test_the_stages_score_save_the_decoding_and_transcribe(recipe):
    said = []
    result = run_recipe(recipe, ("evaluate", "transcribe"), sets=["test", "dev"],
                        say=said.append)
    assert set(result.reports) == {"test", "dev"}
    assert set(result.reports["test"]) == {"greedy", "beam_lm"}
    assert result.reports["dev"]["greedy"].rates.utterances == 4
    assert (recipe.model_dir / "inference.json").is_file()  # the model's own decoding now
    assert result.transcript is not None and result.training is None
    text = "\n".join(said)
    assert "test (greedy): WER" in text and "hypothesis:" in text and "== done in" in text
    assert (recipe.workdir / "eval-dev-beam-lm").is_dir()


def test_an_unknown_stage_is_refused_before_anything_runs(recipe):
    with pytest.raises(ConfigError, match="unknown stages \\['tune'\\]"):
        run_recipe(recipe, ("prepare", "tune"), say=lambda text: None)

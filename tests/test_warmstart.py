"""A run started from another model's weights: a first stage trained first, a misfit refused."""


import numpy as np
import pytest
from conftest import mlflow_run, write_config

from speechrnn.config import load_pipeline_config


def test_a_second_stage_starts_from_the_first_stages_weights(corpus, tmp_path):
    """train.init_from naming a recipe: the pipeline trains that recipe first, then starts
    this one from its model (weights and moving average; dropout may differ). At a
    vanishing learning rate the second stage's model is the first one's. Once begun, the
    second stage no longer needs the first."""
    import shutil

    from speechrnn import pipeline
    from speechrnn.checkpoint import finished
    from speechrnn.errors import NotFoundError
    from speechrnn.model import load_network
    from speechrnn.warmstart import init_model_dir

    for stage in ("a", "b"):
        (tmp_path / stage).mkdir()
    first = write_config(tmp_path / "a", corpus, train={"epochs": 1},
                         tracking={"enabled": False})
    second = write_config(tmp_path / "b", corpus, model={"dropout": 0.2}, train={
        "epochs": 1, "learning_rate": 1e-12, "ema_decay": 0.9, "init_from": str(first)})
    cfg = load_pipeline_config(second)
    with pytest.raises(NotFoundError, match="is not trained yet; train it first"):
        init_model_dir(cfg)
    result = pipeline.train(cfg, progress=False)
    assert finished(tmp_path / "a" / "run")
    assert init_model_dir(cfg) == tmp_path / "a" / "run" / "model"
    before = np.load(tmp_path / "a" / "run" / "checkpoints" / "last" / "weights.npz")
    after = np.load(tmp_path / "b" / "run" / "checkpoints" / "last" / "weights.npz")
    assert len(before.files) == len(after.files)
    for key in before.files:
        np.testing.assert_allclose(after[key], before[key], atol=1e-6)
    exported = load_network(result.model_dir)[0].get_weights()  # the moving average
    for mine, theirs in zip(exported, load_network(init_model_dir(cfg))[0].get_weights(),
                            strict=True):
        np.testing.assert_allclose(mine, theirs, atol=1e-6)
    client, run = mlflow_run(tmp_path / "b", result.run_id)
    assert run.data.params["train.init_from"] == str(first)
    assert run.data.params["runtime.init_model"] == str(init_model_dir(cfg).resolve())

    shutil.rmtree(tmp_path / "a" / "run")  # begun (here: finished), it stands alone
    first.rename(tmp_path / "a" / "moved.yaml")
    again = pipeline.train(cfg, progress=False)
    assert again.run_id == result.run_id and not (tmp_path / "a" / "run").exists()


def test_a_first_stage_that_cannot_serve_is_refused_before_training(corpus, tmp_path,
                                                                    trained):
    """Another network, a recipe that starts from itself, a model that is not there: clear
    errors, and nothing trains."""
    from speechrnn import pipeline
    from speechrnn.config import ConfigError
    from speechrnn.errors import NotFoundError

    config = write_config(tmp_path, corpus, tracking={"enabled": False})
    wider = load_pipeline_config(config, ["model.lstm_units=24",
                                          f"train.init_from={trained.model_dir}"])
    with pytest.raises(ConfigError, match=r"model.lstm_units 24 vs 16"):
        pipeline.train(wider, progress=False)
    with pytest.raises(ConfigError, match=r"model.lstm_units 24 vs 16"):  # a recipe's too
        pipeline.train(load_pipeline_config(config, ["model.lstm_units=24",
                                                     f"train.init_from={trained.config}"]))
    with pytest.raises(ConfigError, match="cannot start from itself"):
        pipeline.train(load_pipeline_config(config, [f"train.init_from={config}"]))
    with pytest.raises(NotFoundError, match=r"train.init_from .*nowhere.*model not found"):
        pipeline.train(load_pipeline_config(config, [f"train.init_from={tmp_path}/nowhere"]))
    with pytest.raises(ConfigError, match=r"train.init_from: .*gone.yaml: config file"):
        pipeline.train(load_pipeline_config(config, [f"train.init_from={tmp_path}/gone.yaml"]))
    assert not (tmp_path / "run" / "checkpoints").exists()
    # a finished first stage whose YAML has changed since is not silently reused
    from speechrnn.warmstart import check_first_stage

    cfg = load_pipeline_config(config, [f"train.init_from={trained.config}"])
    assert check_first_stage(cfg, load_pipeline_config(trained.config))
    with pytest.raises(ConfigError, match="trained with other settings.*--fresh"):
        check_first_stage(cfg, load_pipeline_config(trained.config, ["train.seed=1"]))

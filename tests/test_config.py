from pathlib import Path

import pytest

from speechrnn.config import (
    BatchConfig,
    ConfigError,
    FeatureConfig,
    dump_yaml,
    flatten,
    from_dict,
    load_config,
)


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("batch_size: 8\nspec_augment:\n  enabled: true\n  freq_masks: 1\n")
    cfg = load_config(BatchConfig, path, ["spec_augment.time_width=5", "buckets=3"])
    assert cfg.batch_size == 8 and cfg.buckets == 3
    assert cfg.spec_augment.enabled and cfg.spec_augment.freq_masks == 1
    assert cfg.spec_augment.time_width == 5
    saved = tmp_path / "resolved.yaml"
    saved.write_text(dump_yaml(cfg))
    assert load_config(BatchConfig, saved) == cfg


@pytest.mark.parametrize("data,message", [
    ({"batch_sise": 8}, "unknown config key.*batch_sise"),
    ({"spec_augment": {"enabld": True}}, "spec_augment.enabld"),
    ({"batch_size": "eight"}, "batch_size: expected a number"),
    ({"batch_size": 2.5}, "expected an integer"),
    ({"spec_augment": {"enabled": "yes please"}}, "expected true or false"),
])
def test_bad_values_are_named(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(BatchConfig, data)


def test_validation_in_dataclass():
    with pytest.raises(ConfigError, match="cmvn"):
        FeatureConfig(cmvn="sometimes")
    with pytest.raises(ConfigError, match="deltas"):
        FeatureConfig(deltas=3)


def test_flatten_for_logging():
    flat = flatten(BatchConfig())
    assert flat["batch_size"] == 16 and flat["spec_augment.enabled"] is False
    assert all(not isinstance(v, dict) for v in flat.values())


def test_bad_override_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="key.sub=value"):
        load_config(BatchConfig, None, ["batch_size"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(BatchConfig, tmp_path / "nope.yaml")


def test_pipeline_sections_train_and_eval(tmp_path):
    from speechrnn.config import load_pipeline_config

    path = tmp_path / "p.yaml"
    path.write_text("train:\n  ema_decay: 0.998\neval:\n  lm_weight: 1.5\n")
    cfg = load_pipeline_config(path, ["eval.beam_width=32"])
    assert cfg.train.ema_decay == 0.998 and cfg.eval.lm_weight == 1.5
    assert cfg.eval.beam_width == 32 and flatten(cfg)["eval.lm_order"] == 3
    with pytest.raises(ConfigError, match="ema_decay"):
        load_pipeline_config(path, ["train.ema_decay=1.0"])
    with pytest.raises(ConfigError, match="beam_width"):
        load_pipeline_config(path, ["eval.beam_width=0"])


def test_derived_values_have_one_home():
    """Manifest paths, work and model folders, the model's stride and frame rates all come
    from the config: every caller asks it."""
    import numpy as np

    from speechrnn.config import Config, DataConfig, ModelConfig, TrainConfig, output_frames

    data = DataConfig(out="d", format="tsv", dev="held", extra_train=("x/more.jsonl",),
                      synth_extra=5)
    assert data.manifest("train") == Path("d/train.tsv")
    assert data.manifest("dev") == Path("d/held.tsv") and data.manifest("other") == Path(
        "d/other.tsv")
    assert data.training_manifests() == [Path("d/train.tsv"), Path("x/more.jsonl"),
                                         Path("d/synth-extra/train.jsonl")]
    cfg = Config(data=data, name="recipe")
    assert cfg.workdir == Path("runs/recipe") and cfg.model_dir == Path("runs/recipe/model")
    assert Config(train=TrainConfig(workdir="w")).model_dir == Path("w/model")
    assert ModelConfig().stride == 3 and ModelConfig(front_end=False, subsampling=1).stride == 1
    assert cfg.ctc_frames_per_second == pytest.approx(100 / 3)
    assert Config(features=FeatureConfig(hop_ms=20, win_ms=40),
                  model=ModelConfig(subsampling=2)).ctc_frames_per_second == 25
    assert output_frames(100, 3) == 34 and output_frames(99, 3) == 33 and output_frames(7, 1) == 7
    assert list(ModelConfig().output_frames(np.array([1, 3, 4]))) == [1, 1, 2]

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

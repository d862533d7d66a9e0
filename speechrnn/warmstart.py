"""A fresh run that starts from another model's weights (``train.init_from``): a model
directory, an MLflow model, or a recipe's YAML whose model is trained first (a first
stage, :func:`speechrnn.pipeline.train`).

:func:`init_model_dir` finds the model, :func:`check_init_model` refuses one that does not
fit before any data is loaded, :func:`start_from` loads its weights;
:func:`check_first_stage` says whether a first-stage recipe has finished with the
settings its YAML holds now.
"""

from __future__ import annotations

import time
from pathlib import Path

from .checkpoint import config_digest, finished, latest_state
from .config import Config, ConfigError
from .errors import InputError, NotFoundError
from .model_dir import network_differences, read_model_dir, resolve_model

__all__ = ["check_first_stage", "check_init_model", "init_model_dir", "start_from"]


def check_first_stage(cfg: Config, first: Config) -> bool:
    """Whether the recipe ``first`` (``cfg``'s ``train.init_from``) has finished, once it
    is sure to fit: the same network and features as ``cfg``, and, when finished, trained
    with the settings its YAML holds now. Raises :class:`ConfigError` otherwise."""

    differ = network_differences(cfg.model, cfg.features, first.model, first.features)
    if differ:
        raise ConfigError(f"train.init_from {cfg.train.init_from}: that recipe trains "
                          f"another network (this config vs that one: {'; '.join(differ)})")
    if not finished(first.workdir):
        return False
    try:
        current = config_digest(first)
    except FileNotFoundError:  # its manifests are gone: nothing to compare with
        return True
    if latest_state(first.workdir).config_digest != current:
        raise ConfigError(f"train.init_from {cfg.train.init_from}: the model in "
                          f"{first.model_dir} was trained with other settings than that file "
                          f"holds now; train it again (python pipelines/run.py --config "
                          f"{cfg.train.init_from} --stages prepare,train --fresh)")
    return True


def init_model_dir(cfg: Config, wait_minutes: float = 0.0) -> Path:
    """The model directory ``train.init_from`` names; a recipe's YAML names the model that
    recipe trains, which must have finished (:func:`speechrnn.pipeline.train` sees to it;
    ``wait_minutes``: how long a worker waits for the chief to export it)."""

    source = cfg.train.init_from
    first = cfg.first_stage()
    if first is None:
        try:
            return resolve_model(source, cfg.tracking.uri)
        except (OSError, ValueError) as err:
            raise NotFoundError(f"train.init_from {source}: {err}") from None
    waited = time.monotonic()
    while not finished(first.workdir):
        if time.monotonic() - waited >= 60 * wait_minutes:
            raise NotFoundError(f"train.init_from {source}: its model ({first.model_dir}) "
                                f"is not trained yet; train it first (python pipelines/"
                                f"run.py --config {source} --stages prepare,train)")
        time.sleep(15)
    return first.model_dir


def check_init_model(cfg: Config, path: Path) -> None:
    """Refuse a starting model that does not fit ``cfg``, before any data is loaded."""

    differ = read_model_dir(path).differences(cfg.model, cfg.features)
    if differ:
        raise ConfigError(f"train.init_from {cfg.train.init_from} ({path}): not the network "
                          f"this config trains (this config vs that model: {'; '.join(differ)})")
    if cfg.features.cmvn == "global" and not cfg.features.cmvn_stats:
        raise ConfigError(f"train.init_from {cfg.train.init_from}: with features.cmvn: global, "
                          "set features.cmvn_stats to the first model's cmvn.json, so that both "
                          "stages normalise their features alike")


def start_from(cfg: Config, path: Path, steps) -> None:
    """Put the weights of the model in ``path`` into a fresh run's network (``steps.model``)
    and set the moving average to them."""
    from .model import load_network, transfer_weights

    try:
        source = load_network(path, lstm_impl=steps.model.lstm_impl)[0]
        transfer_weights(source, steps.model)
    except (OSError, ValueError) as err:
        raise InputError(f"train.init_from {cfg.train.init_from} ({path}): cannot load "
                         f"its weights: {err}") from None
    steps.reset_average()
    print(f"starting from the weights of {path}")

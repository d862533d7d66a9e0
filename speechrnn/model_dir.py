"""Where a trained model lives: the model directory's files, and model URIs.

A model directory holds ``model.json`` (format version, model and feature configuration,
the LSTM implementation the weights were saved from), ``alphabet.json`` (the units: a
phone model's lexicon is ``lexicon.txt`` beside it),
``model.weights.h5`` (Keras), ``model.onnx`` (the same network for ONNX Runtime, when
exported) and ``cmvn.json`` (global CMVN only). Reading its metadata needs neither
TensorFlow nor ONNX Runtime.

:func:`resolve_model` turns what a user passes as ``--model`` into such a directory: a
path, ``runs:/<run_id>/model`` or ``models:/<name>/<version>`` (downloaded from MLflow).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from .config import FeatureConfig, ModelConfig, ctc_frames_per_second, from_dict
from .errors import InputError, NotFoundError
from .lexicon import load_units
from .text import Alphabet

FORMAT_VERSION = 1


@dataclass(frozen=True)
class ModelFiles:
    path: Path
    meta: dict
    features: FeatureConfig
    alphabet: Alphabet

    @property
    def onnx(self) -> Path:
        return self.path / "model.onnx"

    @property
    def weights(self) -> Path:
        return self.path / "model.weights.h5"

    @property
    def model(self) -> ModelConfig:
        return from_dict(ModelConfig, self.meta["model"])

    @property
    def lstm_impl(self) -> str:
        """The LSTM implementation the weights were saved from (``scan`` or ``keras``: their
        weights files differ in layout); directories from before the choice: ``scan``."""
        return self.meta.get("lstm_impl", "scan")

    @property
    def stride(self) -> int:
        """Input frames per output frame: the model's time subsampling."""
        return self.model.stride

    def differences(self, model: ModelConfig, features: FeatureConfig,
                    alphabet: Alphabet | None = None) -> list[str]:
        """What keeps these weights from serving a network of ``model`` on ``features``
        (see :func:`network_differences`) predicting the labels of ``alphabet`` (None: the
        characters of a character model; phones fit whatever lexicon spells words)."""
        differ = network_differences(model, features, self.model, self.features)
        symbols = alphabet.symbols if alphabet is not None else \
            Alphabet().symbols if model.units == "chars" else self.alphabet.symbols
        if symbols != self.alphabet.symbols:
            differ.append(f"labels {''.join(symbols)!r} vs "
                          f"{''.join(self.alphabet.symbols)!r}")
        return differ

    @property
    def frame_seconds(self) -> float:
        """Duration of one output frame: feature hop x the model's subsampling."""
        return 1.0 / ctc_frames_per_second(self.features, self.model)


def network_differences(model: ModelConfig, features: FeatureConfig, other_model: ModelConfig,
                        other_features: FeatureConfig) -> list[str]:
    """Why the weights of one network (``other_*``) cannot start another: one ``setting:
    mine vs the other's`` per difference (dropout, the LSTM implementation and global CMVN
    statistics do not count); empty when they fit."""
    differ = []
    for section, mine, theirs, free in (
            ("model", model, other_model, ("dropout", "lstm_impl", "lexicon")),
            ("features", features, other_features, ("cmvn_stats",))):
        theirs = asdict(theirs)
        differ += [f"{section}.{key} {value!r} vs {theirs[key]!r}"
                   for key, value in asdict(mine).items()
                   if key not in free and theirs[key] != value]
    return differ


def read_model_dir(path: str | Path) -> ModelFiles:
    path = Path(path)
    try:
        meta = json.loads((path / "model.json").read_text())
    except (FileNotFoundError, NotADirectoryError):
        raise NotFoundError(f"{path}: not a speechrnn model directory "
                                "(no model.json)") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise InputError(f"{path}: model format {meta.get('format_version')} is not "
                         f"supported (expected {FORMAT_VERSION})")

    return ModelFiles(path, meta, from_dict(FeatureConfig, meta["features"]),
                      load_units(path / "alphabet.json"))


def resolve_model(model: str | Path, tracking_uri: str | None = None) -> Path:
    """A local model directory for a path, ``runs:/...`` or ``models:/...`` URI."""
    text = str(model)
    if text.startswith(("runs:/", "models:/")):
        from .tracking.registry import download_model

        return download_model(text, tracking_uri)
    path = Path(text)
    if not path.exists():
        raise NotFoundError(f"{path}: model not found (a model directory, "
                                "runs:/<run_id>/model or models:/<name>/<version>)")
    return path

"""Typed configuration: frozen dataclasses, loaded from YAML, overridden from the CLI.

A config file mirrors the dataclass tree (``features: {n_mfcc: 13}``); CLI overrides use
dotted keys (``--set features.n_mfcc=20``) with values parsed as YAML scalars. Unknown
keys are errors, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import InputError, NotFoundError


class ConfigError(InputError):
    """A configuration value or key that cannot be used."""


def manifest_path(folder: str | Path, name: str, fmt: str) -> Path:
    """The file of manifest ``name`` in ``folder``: ``<folder>/<name>.<jsonl|tsv>``."""
    return Path(folder) / f"{name}.{fmt}"


def resolve_source(source: str, corpora: str | Path | None = None) -> Path:
    """``source`` as given if it exists, else under the corpora folder
    (``corpora`` or ``$SPEECHRNN_CORPORA``)."""
    path = Path(source)
    if path.exists() or path.is_absolute():
        return path
    root = corpora or os.environ.get("SPEECHRNN_CORPORA")
    if root and (Path(root) / source).exists():
        return Path(root) / source
    raise NotFoundError(f"{source}: corpus source not found (give a path, or set "
                        "--corpora / SPEECHRNN_CORPORA to the folder that holds it)")


def output_frames(frames, stride: int):
    """Frames left after a time stride of ``stride`` (padded so no frame is lost):
    ceil(frames / stride), for an int, a NumPy array or a TensorFlow tensor."""
    return (frames + stride - 1) // stride


@dataclass(frozen=True)
class FeatureConfig:
    """MFCC front end. 1 s of audio gives ``1 + 1000 // hop_ms`` frames (101 by default)."""

    sample_rate: int = 16000
    n_mfcc: int = 13
    n_mels: int = 40
    win_ms: float = 25.0
    hop_ms: float = 10.0
    fmin: float = 20.0
    fmax: float = 7600.0
    preemphasis: float = 0.97
    deltas: int = 2  # 0: MFCC only, 1: + delta, 2: + delta and delta-delta
    cmvn: str = "utterance"  # "none" | "utterance" | "global"
    cmvn_stats: str | None = None  # JSON written by ``compute_global_cmvn`` (cmvn=global)

    def __post_init__(self):
        if self.deltas not in (0, 1, 2):
            raise ConfigError(f"features.deltas must be 0, 1 or 2, not {self.deltas}")
        if self.cmvn not in ("none", "utterance", "global"):
            raise ConfigError(f"features.cmvn must be none|utterance|global, not {self.cmvn!r}")
        if self.win_ms < self.hop_ms or self.hop_ms <= 0:
            raise ConfigError("features.win_ms must be >= features.hop_ms > 0")
        if not 0 <= self.fmin < self.fmax <= self.sample_rate / 2:
            raise ConfigError("features need 0 <= fmin < fmax <= sample_rate / 2")

    @property
    def n_features(self) -> int:
        return self.n_mfcc * (1 + self.deltas)

    @property
    def frames_per_second(self) -> float:
        return 1000.0 / self.hop_ms


@dataclass(frozen=True)
class SpecAugmentConfig:
    """Time and frequency masking (Park et al., 2019) applied to training batches only."""

    enabled: bool = False
    freq_masks: int = 2
    freq_width: int = 6  # at most this many feature channels per mask
    time_masks: int = 2
    time_width: int = 20  # at most this many frames per mask ...
    time_ratio: float = 0.1  # ... and at most this fraction of the utterance


@dataclass(frozen=True)
class BatchConfig:
    batch_size: int = 16
    buckets: int = 6  # length buckets (quantiles of the training lengths)
    shuffle_buffer: int = 2048
    workers: int = 2  # feature extraction threads
    # memory: every item's features held in memory | shards: streamed from TFRecord feature
    # shards (data.shards; extracted first when missing or stale), for corpora that do not fit
    source: str = "memory"
    spec_augment: SpecAugmentConfig = field(default_factory=SpecAugmentConfig)
    vtlp: float = 0.0  # > 0: each training item's frequencies warped by 1 +- up to this
    tempo: float = 0.0  # > 0: each training item's frames resampled to between 1 / (1 + tempo)
    # and (1 + tempo) times its length: slower and faster speech, pitch and formants kept
    # SortaGrad (Deep Speech 2): the first epoch's batches shortest first, later ones
    # shuffled; memory only (a shard set streams, it cannot be read in order of length)
    sortagrad: bool = False

    def __post_init__(self):
        if self.source not in ("memory", "shards"):
            raise ConfigError(f"batch.source must be memory|shards, not {self.source!r}")
        if self.sortagrad and self.source != "memory":
            raise ConfigError("batch.sortagrad needs batch.source: memory (a shard set is "
                              "streamed and cannot be read in order of length)")
        if not 0.0 <= self.vtlp <= 0.3:
            raise ConfigError(f"batch.vtlp must be in [0, 0.3], not {self.vtlp}")
        if not 0.0 <= self.tempo <= 1.0:
            raise ConfigError(f"batch.tempo must be in [0, 1], not {self.tempo}")


@dataclass(frozen=True)
class AuxCTCConfig:
    """A second CTC head on a lower BiLSTM layer, trained beside the main one in other units
    (hierarchical CTC): phones under a character model, or characters under a phone model.
    Training only: inference and the export use the main head."""

    units: str = ""  # "": none | chars | phones (not the main head's)
    layer: int = 1  # the BiLSTM layer (1 = the lowest) whose output it reads
    weight: float = 0.3  # loss = (1 - weight) x main CTC + weight x this CTC

    def __post_init__(self):
        if self.units not in ("", "chars", "phones"):
            raise ConfigError(f"model.aux_ctc.units must be chars|phones (or empty), "
                              f"not {self.units!r}")
        if self.units and not 0 < self.weight < 1:
            raise ConfigError("model.aux_ctc.weight must be in (0, 1)")


@dataclass(frozen=True)
class ModelConfig:
    """Conv1D subsampling front end + bidirectional LSTM stack + dense CTC head."""

    subsampling: int = 3  # time stride of the front end (1-4); 1 with front_end=false: none
    front_end: bool = True
    conv_filters: int = 128
    conv_kernel: int = 5  # odd, so frames stay centred
    lstm_layers: int = 3
    lstm_units: int = 224  # per direction (3 x 224: 80 audio-s/s training on 2 cores; 256: 60)
    dropout: float = 0.1
    norm: str = "layer"  # "layer" | "none": LayerNormalization after each BiLSTM
    # auto: keras on a GPU (cuDNN), else scan | scan: tf.scan loop, fastest on CPU |
    # keras: keras.layers.LSTM (cuDNN on a GPU). Same weights: a model moves between them
    lstm_impl: str = "auto"
    # chars: the CTC head predicts letters | phones: 39 ARPAbet phones and a word
    # separator, words spelled by a pronunciation lexicon (decoded with it)
    units: str = "chars"
    # a phone model's lexicon (lexicon.txt, from `speechrnn lexicon`); "": built from the
    # recipe's transcripts and eval.lm_text with CMUdict and espeak-ng
    lexicon: str = ""
    aux_ctc: AuxCTCConfig = AuxCTCConfig()

    def __post_init__(self):
        if self.units not in ("chars", "phones"):
            raise ConfigError(f"model.units must be chars|phones, not {self.units!r}")
        if self.lexicon and "phones" not in (self.units, self.aux_ctc.units):
            raise ConfigError("model.lexicon is for phone units (model.units or "
                              "model.aux_ctc.units: phones)")
        if self.aux_ctc.units == self.units:
            raise ConfigError(f"model.aux_ctc.units must differ from model.units "
                              f"({self.units})")
        if self.aux_ctc.units and not 1 <= self.aux_ctc.layer <= self.lstm_layers:
            raise ConfigError(f"model.aux_ctc.layer must be 1-{self.lstm_layers} (a BiLSTM "
                              f"layer), not {self.aux_ctc.layer}")
        if self.lstm_impl not in ("auto", "scan", "keras"):
            raise ConfigError(f"model.lstm_impl must be auto|scan|keras, not {self.lstm_impl!r}")
        if not 1 <= self.subsampling <= 4:
            raise ConfigError(f"model.subsampling must be 1-4, not {self.subsampling}")
        if not self.front_end and self.subsampling != 1:
            raise ConfigError("model.subsampling > 1 needs model.front_end: true")
        if self.conv_kernel % 2 == 0 or self.conv_kernel < self.subsampling:
            raise ConfigError("model.conv_kernel must be odd and >= model.subsampling")
        if self.norm not in ("layer", "none"):
            raise ConfigError(f"model.norm must be layer|none, not {self.norm!r}")
        if self.lstm_layers < 1 or self.lstm_units < 1:
            raise ConfigError("model needs at least one LSTM layer of at least one unit")
        if not 0 <= self.dropout < 1:
            raise ConfigError("model.dropout must be in [0, 1)")

    @property
    def stride(self) -> int:
        """Input frames per output frame: the front end's time subsampling."""
        return self.subsampling if self.front_end else 1

    def resolved_lstm_impl(self) -> str:
        """``lstm_impl`` with ``auto`` decided on this machine: ``keras`` (cuDNN) when
        TensorFlow sees a GPU, else ``scan``."""
        if self.lstm_impl != "auto":
            return self.lstm_impl
        import tensorflow as tf

        return "keras" if tf.config.list_physical_devices("GPU") else "scan"

    def output_frames(self, frames):
        """Output frames (what CTC aligns to) for ``frames`` input frames."""
        return output_frames(frames, self.stride)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 40
    learning_rate: float = 1e-3  # peak, after warm-up; cosine decay to min_lr_ratio of it
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.05
    grad_clip: float = 5.0  # global gradient norm
    ema_decay: float = 0.0  # > 0: evaluate and keep an exponential moving average of weights
    patience: int = 6  # epochs without a better dev WER before stopping early
    time_budget_min: float = 0.0  # stop after this many minutes of training (0: no limit)
    max_nonfinite: int = 50  # consecutive batches with NaN/inf loss before giving up
    dev_decoder: str = "greedy"  # greedy | beam: how dev WER (model selection) decodes;
    # beam uses the eval section's width and a word LM of the training transcripts
    seed: int = 0
    # start a fresh run from another model's weights (same network, features and alphabet):
    # a model directory, runs:/<run_id>/model, models:/<name>/<version>, or a recipe's YAML
    # (the model it trains: the pipeline trains that recipe first when it is not yet done)
    init_from: str = ""
    workdir: str = ""  # checkpoints and the exported model; "" -> runs/<config name>
    intra_op_threads: int = 1  # threads per op: 1 lets the two LSTM directions ...
    inter_op_threads: int = 0  # ... run side by side on the cores (0: one per core)
    mixed_precision: bool = False  # float16 compute with loss scaling (for GPUs)
    # auto: several machines when TF_CONFIG names a cluster, several GPUs when there are,
    # else one device | none | mirrored (GPUs of this machine) | multi_worker (TF_CONFIG)
    distribute: str = "auto"

    def __post_init__(self):
        if self.epochs < 1 or self.learning_rate <= 0 or self.grad_clip <= 0:
            raise ConfigError("train needs epochs >= 1, learning_rate > 0, grad_clip > 0")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError("train.ema_decay must be in [0, 1)")
        if self.dev_decoder not in ("greedy", "beam"):
            raise ConfigError(f"train.dev_decoder must be greedy|beam, not {self.dev_decoder!r}")
        if self.distribute not in ("auto", "none", "mirrored", "multi_worker"):
            raise ConfigError("train.distribute must be auto|none|mirrored|multi_worker, "
                              f"not {self.distribute!r}")


@dataclass(frozen=True)
class TrackingConfig:
    enabled: bool = True
    uri: str | None = None  # None: $MLFLOW_TRACKING_URI, else sqlite:///mlruns/mlflow.db
    experiment: str = ""  # "" -> speechrnn-<config name>
    run_name: str = ""
    register_as: str = ""  # registered model name; "" -> the experiment name


@dataclass(frozen=True)
class CorpusConfig:
    """A further corpus, imported beside the main one (under ``<data.out>/corpora/<name>``)
    and added to training."""

    kind: str  # an importer: speechocean762, ljspeech, librispeech, generic, ...
    source: str  # a path, or a folder name under --corpora / SPEECHRNN_CORPORA
    splits: tuple[str, ...] = ("train",)  # which of its manifests are trained on
    # sampling weight: each of its utterances is drawn this many times an epoch on average
    # (2.0: twice; 0.5: a different half every epoch)
    weight: float = 1.0
    name: str = ""  # its folder; "" -> the source's folder name
    # keep only utterances whose every word is one of these (e.g. the digits: a digit
    # recogniser takes a sentence corpus's digit strings); () keeps all
    only_words: tuple[str, ...] = ()

    def __post_init__(self):
        if not 0.0 < self.weight <= 10.0:
            raise ConfigError(f"data.corpora weight must be in (0, 10], not {self.weight}")
        if not self.splits:
            raise ConfigError(f"data.corpora {self.source}: splits must name a manifest")

    @property
    def folder_name(self) -> str:
        return self.name or Path(self.source).name


@dataclass(frozen=True)
class DataConfig:
    """Where manifests come from: a corpus import, or the synthetic corpus (``kind: synth``).

    A relative ``source`` that does not exist is looked up under the corpora folder
    (``--corpora`` or ``SPEECHRNN_CORPORA``).
    """

    kind: str = "synth"  # synth, or an importer: fsdd, speechocean762, kaldi, librispeech, ...
    source: str | None = None
    out: str = "data/synth"
    cache: str = "data/cache/features"  # feature cache folder ("" for none)
    shards: str = ""  # feature shards (batch.source: shards); "" -> <out>/shards
    shard_minutes: float = 30.0  # audio per shard file (about 1.4 MB of features a minute)
    format: str = "jsonl"
    seed: int = 0
    train: str = "train"  # manifest names used for training, model selection and testing
    extra_train: tuple[str, ...] = ()  # more training manifests (paths)
    corpora: tuple[CorpusConfig, ...] = ()  # more corpora to import and train on
    train_weight: float = 1.0  # sampling weight of the train manifest (see CorpusConfig)
    synth_extra: int = 0  # add this many synthetic utterances (espeak-ng/flite) to training
    synth_extra_digit_share: float = 1.0  # ... of which this fraction are digit strings
    synth_digit_share: float = 0.4  # kind synth: fraction of its utterances that are digits
    synth_extra_joined: bool = False  # ... or all digit strings, each digit said on its own
    # and the strings joined as FSDD's are (fsdd.connected), band-limited to:
    synth_extra_rate: int = 0  # resample joined synthetic digits to this rate and back (0: no)
    dev: str = "dev"
    test: str = "test"
    test_speakers: tuple[str, ...] = ()
    dev_speakers: tuple[str, ...] = ()
    dev_fraction: float | None = None
    per_speaker: int = 300  # fsdd: connected strings per training speaker ...
    perturb: float = 0.15  # ... each recording sped up or slowed down by up to 15 %
    synth_train: int = 1200  # synth: utterances per split
    synth_dev: int = 120
    synth_test: int = 200

    def __post_init__(self):
        if not self.shard_minutes > 0:
            raise ConfigError(f"data.shard_minutes must be > 0, not {self.shard_minutes}")
        if not 0.0 < self.train_weight <= 10.0:
            raise ConfigError(f"data.train_weight must be in (0, 10], not {self.train_weight}")
        names = [c.folder_name for c in self.corpora]
        if len(set(names)) < len(names):
            raise ConfigError("data.corpora: two corpora share a folder name; give each a name")

    def shard_dir(self) -> Path:
        """The feature shards' folder (``shards``, or ``<out>/shards``): a shard set per
        manifest set in it, ``train`` (every training manifest) and ``dev``."""
        return Path(self.shards) if self.shards else Path(self.out) / "shards"

    def manifest(self, split: str) -> Path:
        """The manifest file of ``split``: "train", "dev" or "test" (named by ``train``,
        ``dev`` and ``test``), or any other manifest name in ``out``."""
        name = getattr(self, split) if split in ("train", "dev", "test") else split
        return manifest_path(self.out, name, self.format)

    def synth_extra_manifest(self) -> Path:
        """Where the ``synth_extra`` synthetic training utterances are written."""
        return Path(self.out) / "synth-extra" / "train.jsonl"

    def corpus_dir(self, corpus: CorpusConfig) -> Path:
        """Where a further corpus of ``corpora`` is imported."""
        return Path(self.out) / "corpora" / corpus.folder_name

    def training_sets(self) -> list[tuple[Path, float]]:
        """Every manifest training reads, with its sampling weight: the train split,
        ``extra_train``, the further corpora's ``splits``, synthetic extras."""
        sets = [(self.manifest("train"), self.train_weight),
                *((Path(p), 1.0) for p in self.extra_train)]
        sets += [(manifest_path(self.corpus_dir(c), split, self.format), c.weight)
                 for c in self.corpora for split in c.splits]
        return sets + ([(self.synth_extra_manifest(), 1.0)] if self.synth_extra else [])

    def training_manifests(self) -> list[Path]:
        """Every manifest training reads (:meth:`training_sets` without the weights)."""
        return [path for path, _ in self.training_sets()]


@dataclass(frozen=True)
class EvalConfig:
    """How the pipeline's evaluate stage decodes: greedy, and beam search with a word LM
    built from the training transcripts (weights best tuned on dev, never on test)."""

    beam_width: int = 16
    lm_order: int = 3
    lm_weight: float = 0.8
    word_bonus: float = 1.0
    # more manifests of data.out scored beside "test" (e.g. isolated-test: FSDD's single
    # digits of the test speakers)
    extra_sets: tuple[str, ...] = ()
    # seconds of quiet the transcriber puts before and after each piece of audio (saved
    # with the model): a model trained on utterances with pauses at their ends hears a
    # word cut tight, or a single word, as it heard them in training
    edge_pad_s: float = 0.0
    # each test (and dev-tuning) utterance normalised with its speaker's statistics, pooled
    # over all of that speaker's utterances in the set (their audio only; saved with the
    # model): a short clip's own statistics are far from those of the longer utterances a
    # model with utterance CMVN learned from
    speaker_cmvn: bool = False
    # the word LM: training transcripts plus these text files (a sentence a line; relative
    # paths are looked up under --corpora), modified Kneser-Ney or Witten-Bell, pruned by
    # count thresholds per order (0, 1, 1: bigrams and trigrams seen once dropped; ():
    # singletons dropped from 1 M words on); or an ARPA file used as it is (lm_arpa)
    lm_text: tuple[str, ...] = ()
    lm_method: str = "kneser-ney"
    lm_prune: tuple[int, ...] = ()
    lm_arpa: str = ""
    # LM weight and word bonus tried on dev (each pair; the best is used and logged), never
    # on test; () keeps lm_weight / word_bonus
    tune_lm_weights: tuple[float, ...] = ()
    tune_word_bonuses: tuple[float, ...] = ()

    def __post_init__(self):
        if self.beam_width < 1 or self.lm_order < 1:
            raise ConfigError("eval.beam_width and eval.lm_order must be >= 1")
        if self.lm_method not in ("kneser-ney", "witten-bell"):
            raise ConfigError(f"eval.lm_method must be kneser-ney|witten-bell, "
                              f"not {self.lm_method!r}")

    @property
    def tuning(self) -> list[tuple[float, float]]:
        """The (LM weight, word bonus) pairs tried on dev; empty when nothing is tuned."""
        if not (self.tune_lm_weights or self.tune_word_bonuses):
            return []
        return [(w, b) for w in self.tune_lm_weights or (self.lm_weight,)
                for b in self.tune_word_bonuses or (self.word_bonus,)]


@dataclass(frozen=True)
class Config:
    """Everything a pipeline run needs; logged whole to MLflow."""

    data: DataConfig = field(default_factory=DataConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    name: str = ""  # names the run's folder and experiment; "" -> the config file's name

    @property
    def workdir(self) -> Path:
        """Checkpoints, the best epoch and the exported model: ``train.workdir`` or
        ``runs/<name>``."""
        return Path(self.train.workdir or Path("runs") / self.name)

    @property
    def model_dir(self) -> Path:
        """Where training exports the finished model."""
        return self.workdir / "model"

    def first_stage(self) -> Config | None:
        """The recipe whose model this one starts from (``train.init_from`` naming a YAML
        file), as a config; None when it names a model or nothing."""
        source = self.train.init_from
        if not source.endswith((".yaml", ".yml")):
            return None
        try:
            return load_pipeline_config(source)
        except ConfigError as err:
            raise ConfigError(f"train.init_from: {err}") from None

    def first_stages(self) -> list[Config]:
        """Every recipe this one starts from, nearest first (``train.init_from`` followed
        from YAML to YAML). A chain that comes back to a work directory (a recipe starting
        from itself, two starting from each other) is refused."""
        seen, chain, stage = {self.workdir.resolve(): self.name}, [], self
        while (first := stage.first_stage()) is not None:
            where = first.workdir.resolve()
            if where in seen:
                raise ConfigError(f"train.init_from {stage.train.init_from}: recipe "
                                  f"{first.name!r} trains in {first.workdir}, as "
                                  f"{seen[where]!r} does: a stage cannot start from "
                                  "itself (or from a stage that starts from it)")
            seen[where] = first.name
            chain.append(first)
            stage = first
        return chain

    @property
    def ctc_frames_per_second(self) -> float:
        """Output frames per second of audio: what a transcript must fit into for CTC."""
        return ctc_frames_per_second(self.features, self.model)


def ctc_frames_per_second(features: FeatureConfig, model: ModelConfig) -> float:
    """The model's output frames per second: the feature frame rate over its stride."""
    return features.frames_per_second / model.stride


# --------------------------------------------------------------------------- machinery


def _strip_optional(hint: Any) -> Any:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def _coerce(value: Any, hint: Any, key: str) -> Any:
    if value is None:
        return None
    hint = _strip_optional(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return from_dict(hint, value, prefix=f"{key}.")
    origin = typing.get_origin(hint)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            value = [value]
        args = typing.get_args(hint)
        inner = args[0] if args else Any
        items = [_coerce(v, inner, key) for v in value]
        return tuple(items) if origin is tuple else items
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if hint in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if hint is int and float(value) != int(value):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return hint(value)
    if hint is str:
        return str(value)
    return value


def from_dict(cls: type, data: dict, prefix: str = ""):
    """Build dataclass ``cls`` from a nested dict, rejecting unknown keys."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown config key(s): {', '.join(prefix + k for k in unknown)}")
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ConfigError(f"{prefix or cls.__name__}: {err}") from None


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def flatten(cfg, prefix: str = "") -> dict[str, Any]:
    """``{"features.n_mfcc": 13, ...}``: every leaf, for logging as parameters."""
    out: dict[str, Any] = {}
    for key, value in (to_dict(cfg) if dataclasses.is_dataclass(cfg) else cfg).items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = list(value) if isinstance(value, tuple) else value
    return out


def apply_overrides(data: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    """Apply ``key.sub=value`` strings to a nested dict (values parsed as YAML)."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not of the form key.sub=value")
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part} is not a section")
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None
    return data


def load_config(cls: type, path: str | Path | None = None, overrides=()):
    """Defaults <- YAML file <- dotted overrides, validated into ``cls``."""
    data: dict = {}
    if path is not None:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML ({err})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
    return from_dict(cls, apply_overrides(data, overrides))


def dump_yaml(cfg) -> str:
    def plain(value):
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return yaml.safe_dump(plain(to_dict(cfg)), sort_keys=False)


def load_pipeline_config(path: str | Path | None = None, overrides=()) -> Config:
    """A :class:`Config` whose ``name`` defaults to the config file's name (``synth``)."""
    cfg = load_config(Config, path, overrides)
    if not cfg.name:
        cfg = dataclasses.replace(cfg, name=Path(path).stem if path else "default")
    return cfg

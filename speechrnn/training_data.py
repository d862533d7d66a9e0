"""What a training run trains on: the features and labels of the training manifests (each
with its sampling weight) and of the dev manifest, in memory or streamed from feature
shards, with the unusable utterances reported and skipped.

:func:`load_data` reads the recipe's manifests (``data.training_sets()``, the dev
manifest), spells the transcripts in the recipe's units
(:func:`speechrnn.lexicon.recipe_targets`) and extracts or reads the features
(:func:`speechrnn.dataset.load_examples`, or :func:`speechrnn.shards.config_shards` with
``batch.source: shards``); :func:`training_mix` says what an epoch is made of.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .checkpoint import TrainError
from .config import Config
from .dataset import Examples, load_examples, load_shards
from .features import CMVN, FeatureExtractor
from .lexicon import recipe_targets
from .manifest import read_manifest
from .shards import config_shards
from .text import Alphabet

__all__ = ["TrainingData", "format_mix", "load_data", "mix_tsv", "training_mix"]


@dataclass
class TrainingData:
    train: Examples  # or, with batch.source shards, a shards.ShardIndex (streamed)
    dev: Examples
    alphabet: Alphabet
    manifest_rows: dict[str, list] = field(default_factory=dict)  # as read: train, dev
    mix: list[dict] = field(default_factory=list)  # the training manifests: training_mix

    @property
    def skipped(self) -> list:
        return self.train.skipped + self.dev.skipped

    def steps_per_epoch(self, batch) -> int:
        """Training batches per epoch under ``batch`` (a BatchConfig), counted from the
        items' lengths (see :func:`speechrnn.dataset.count_batches`)."""
        from .dataset import count_batches

        return count_batches(self.train, batch)


def _extractor(cfg: Config, train_rows) -> FeatureExtractor:
    """The feature extractor; with global CMVN, statistics of the training set (computed
    once, kept in the work directory)."""
    cache = cfg.data.cache or None
    if cfg.features.cmvn != "global":
        return FeatureExtractor(cfg.features, cache)
    stats = cfg.workdir / "cmvn.json"
    if cfg.features.cmvn_stats:
        CMVN.load(cfg.features.cmvn_stats).save(stats)
    elif not stats.exists():
        raw = FeatureExtractor(replace(cfg.features, cmvn="none"), cache)
        CMVN.compute(raw(r.audio, *r.segment) for r in train_rows).save(stats)
    return FeatureExtractor(cfg.features, cache, cmvn=CMVN.load(stats))


def training_mix(sets: list[tuple[Path, float, list]]) -> list[dict]:
    """What an epoch is made of: per training manifest (``(path, weight, rows)``) its
    utterances and hours (as listed: skipped rows included), weight, and share of an
    epoch's audio (hours times weight, over all manifests)."""
    mix = [{"manifest": str(path), "utterances": len(rows),
            "hours": sum(max(float(r.duration), 0.0) for r in rows) / 3600, "weight": weight}
           for path, weight, rows in sets]
    total = sum(m["hours"] * m["weight"] for m in mix)
    for m in mix:
        m["share"] = m["hours"] * m["weight"] / total if total > 0 else 0.0
    return mix


def format_mix(mix: list[dict]) -> str:
    """:func:`training_mix` as a table (one line per manifest, then the epoch's total)."""
    width = max([len("manifest"), *(len(m["manifest"]) for m in mix)])
    lines = [f"  {'manifest':<{width}}  utterances    hours  weight   share"]
    lines += [f"  {m['manifest']:<{width}}  {m['utterances']:10d}  {m['hours']:7.3f}  "
              f"{m['weight']:6.2f}  {100 * m['share']:5.1f} %" for m in mix]
    items = sum(m["utterances"] * m["weight"] for m in mix)
    hours = sum(m["hours"] * m["weight"] for m in mix)
    lines.append(f"  {'an epoch':<{width}}  {items:10.0f}  {hours:7.3f}")
    return "\n".join(lines)


def mix_tsv(mix: list[dict]) -> str:
    """:func:`training_mix` as tab-separated values (logged with the run)."""
    keys = ("manifest", "utterances", "hours", "weight", "share")
    return "\t".join(keys) + "\n" + "".join(
        "\t".join(f"{m[k]:.6g}" if isinstance(m[k], float) else str(m[k]) for k in keys)
        + "\n" for m in mix)


def _shards(cfg: Config, rows: dict, units: tuple, progress: bool | None, build: bool,
            wait_minutes: float) -> dict:
    """The train and dev shard sets, extracted when missing or stale; ``build=False`` (a
    worker): waiting up to ``wait_minutes`` for the chief to extract them (on a shared file
    system). ``units``: the main and auxiliary labels' alphabets."""
    alphabet, aux = units
    shards = config_shards(cfg, rows, progress=progress, alphabet=alphabet, build=build,
                           aux=aux)
    waited = time.monotonic()
    while shards is None:
        if time.monotonic() - waited > 60 * wait_minutes:
            raise TrainError(f"no current feature shards in {cfg.data.shard_dir()} after "
                             f"{wait_minutes:g} min: is the chief extracting them there? "
                             "(speechrnn data features --config ... makes them)")
        print(f"waiting for the chief's feature shards in {cfg.data.shard_dir()}", flush=True)
        time.sleep(15)
        shards = config_shards(cfg, rows, alphabet=alphabet, build=False, aux=aux)
    return shards


def load_data(cfg: Config, progress: bool | None = None, build: bool = True,
              wait_minutes: float = 120.0, corpora=None) -> TrainingData:
    """Features and labels of the training manifests and the dev manifest; unusable
    utterances are reported (one line each) and skipped.

    With ``batch.source: shards`` the features are extracted (on every core) into shard
    sets under ``data.shard_dir()`` when missing or stale; the training set is then
    streamed from its shards and the dev set, small, is read from its shards into memory.
    ``build=False`` (a worker that is not the chief): wait for the chief's shards instead.

    Each training item carries the sampling weight of its manifest
    (:meth:`~speechrnn.config.DataConfig.training_sets`; ``weights`` of the training
    Examples or ShardIndex, None when every weight is 1.0). The mix (:func:`training_mix`)
    is printed once, by the chief. Labels are in the recipe's units
    (:func:`speechrnn.lexicon.recipe_targets`: a phone model's lexicon covers the training
    and dev transcripts and ``eval.lm_text``, found under ``corpora``).
    """
    alphabet, aux = recipe_targets(cfg, corpora, progress=build)
    sets = [(path, weight, read_manifest(path)) for path, weight in cfg.data.training_sets()]
    train_rows = [row for _, _, rows in sets for row in rows]
    weights = np.concatenate([np.full(len(rows), weight, np.float64)
                              for _, weight, rows in sets]) if sets else np.zeros(0)
    if np.all(weights == 1.0):
        weights = None  # every item once an epoch: the unweighted epochs, batch for batch
    mix = training_mix(sets)
    if build:
        print("training mix (an epoch's audio):\n" + format_mix(mix), flush=True)
    dev_rows = read_manifest(cfg.data.manifest("dev"))
    rows = {"train": train_rows, "dev": dev_rows}
    if cfg.batch.source == "shards":
        shards = _shards(cfg, rows, (alphabet, aux), progress, build, wait_minutes)
        if cfg.features.cmvn == "global":  # what the model is exported with
            shards["train"].cmvn.save(cfg.workdir / "cmvn.json")
        data = TrainingData(shards["train"].weigh(weights), load_shards(shards["dev"]),
                            alphabet, rows, mix)
    else:
        load = {"extractor": _extractor(cfg, train_rows), "alphabet": alphabet,
                "subsampling": cfg.model.stride, "workers": cfg.batch.workers,
                "progress": progress}
        data = TrainingData(load_examples(train_rows, desc="train features", weights=weights,
                                          aux=aux, **load),
                            load_examples(dev_rows, desc="dev features", **load), alphabet,
                            rows, mix)
    for row, why in data.skipped:
        print(f"skipped {row.audio}: {why}")
    if not len(data.train) or not len(data.dev):
        raise TrainError("no usable utterances in the train or dev manifest")
    return data

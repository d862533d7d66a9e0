"""Batches: manifest rows -> features in memory -> a bucketed, padded ``tf.data`` pipeline.

Each batch is a dict of ``features`` (B, T, F) float32, ``feature_lengths`` (B,),
``labels`` (B, L) int32 padded with the blank (0), ``label_lengths`` (B,) and ``index``
(B,): the row each item came from. Lengths are the true, unpadded ones; every later
stage uses them so that padding never changes a result.

Two sources (``batch.source``) give the same items: under the same ``index`` the same
features, labels, lengths and augmentation; only the order in which they come differs.

* ``memory``: :func:`load_examples` holds every item's features (float32, about 1.4 MB per
  audio-minute with 39 features), which suits corpora up to tens of hours on a 24 GB
  machine; the feature cache makes reloading them cheap. An epoch is a permutation of the
  items fixed by (seed, epoch).
* ``shards``: a :class:`speechrnn.shards.ShardIndex` streams TFRecord shards: the shard
  files in an order fixed by (seed, epoch), read interleaved, through a shuffle buffer of
  ``batch.shuffle_buffer`` items seeded from (seed, epoch). Memory holds the buffer and the
  lengths, never the corpus.

Both share the per-item augmentation (:func:`augmentation`: seeded by (seed, epoch, item
index), so an item gets the same warp from either source) and the bucketing and padding
(:func:`_batches`). The batches of a training epoch depend only on (seed, epoch), so
``ds.skip(step)`` resumes an epoch exactly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf

from .audio import AudioError
from .config import BatchConfig, FeatureConfig, SpecAugmentConfig
from .errors import InputError
from .features import FeatureExtractor, vtlp_matrix
from .manifest import Utterance
from .progress import parallel_map
from .shards import ShardIndex, example_item, skip_reason
from .text import Alphabet, TextError, ctc_min_frames

log = logging.getLogger(__name__)


@dataclass
class Examples:
    """Features and labels of the usable rows of a manifest; ``skipped`` says why not."""

    rows: list[Utterance]
    features: list[np.ndarray]
    labels: list[np.ndarray]
    skipped: list[tuple[Utterance, str]] = field(default_factory=list)
    # MFCC with utterance CMVN: each item's per-channel std before normalising, and the
    # feature settings (what VTLP needs to warp the cepstra); None for other front ends
    scales: list[np.ndarray] | None = None
    feature_config: FeatureConfig | None = None
    subsampling: int = 1  # the model's time stride: what CTC's frame count is divided by

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def seconds(self) -> float:
        return float(sum(r.duration for r in self.rows))


def load_examples(rows: list[Utterance], extractor: FeatureExtractor, alphabet: Alphabet,
                  subsampling: int = 1, workers: int = 2, progress: bool | None = None,
                  desc: str = "features") -> Examples:
    """Extract (or read cached) features for ``rows``; report and skip the unusable ones:
    unreadable or silent audio, text outside the alphabet, transcripts longer than CTC
    allows."""

    mfcc_utterance = isinstance(extractor, FeatureExtractor) and \
        extractor.config.cmvn == "utterance"

    def one(row: Utterance):
        return example_item(row, extractor, alphabet, subsampling)

    results, errors = parallel_map(one, rows, workers, desc, (AudioError, TextError), progress)
    skipped = []
    for i, err in errors:
        reason = skip_reason(err)
        skipped.append((rows[i], reason))
        log.warning("skipping %s (%s): %s", rows[i].id or "utterance", rows[i].audio, reason)
    kept = [i for i, r in enumerate(results) if r is not None]
    return Examples(rows=[rows[i] for i in kept], features=[results[i][0] for i in kept],
                    labels=[results[i][1] for i in kept], skipped=skipped,
                    scales=[results[i][2] for i in kept] if mfcc_utterance else None,
                    feature_config=extractor.config if mfcc_utterance else None,
                    subsampling=subsampling)


def spec_augment(features: tf.Tensor, length: tf.Tensor, cfg: SpecAugmentConfig,
                 seed: tf.Tensor) -> tf.Tensor:
    """Zero random frequency bands and time spans of one utterance's features (T, F).

    Time masks stay inside the valid ``length`` and each covers at most ``time_ratio`` of
    it. ``seed`` (two integers) makes the masks reproducible: same seed, same masks.
    """
    time, feats = tf.shape(features)[0], tf.shape(features)[1]
    length = tf.cast(length, tf.int32)
    seeds = tf.random.experimental.stateless_split(seed, 2 * (cfg.freq_masks + cfg.time_masks))

    def draw(i, high):  # integer in [0, high]
        u = tf.random.stateless_uniform([], seeds[i])
        return tf.minimum(tf.cast(u * tf.cast(high + 1, tf.float32), tf.int32), high)

    keep_f = tf.ones([feats], tf.bool)
    channel = tf.range(feats)
    i = 0
    for _ in range(cfg.freq_masks):
        width = draw(i, tf.minimum(cfg.freq_width, feats))
        start = draw(i + 1, feats - width)
        keep_f &= ~((channel >= start) & (channel < start + width))
        i += 2
    keep_t = tf.ones([time], tf.bool)
    step = tf.range(time)
    limit = tf.minimum(cfg.time_width, tf.cast(cfg.time_ratio * tf.cast(length, tf.float32),
                                               tf.int32))
    for _ in range(cfg.time_masks):
        width = draw(i, limit)
        start = draw(i + 1, tf.maximum(length - width, 0))
        keep_t &= ~((step >= start) & (step < start + width))
        i += 2
    keep = keep_t[:, tf.newaxis] & keep_f[tf.newaxis, :]
    return tf.where(keep, features, tf.zeros_like(features))


def vtlp(features: tf.Tensor, scale: tf.Tensor, bank: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Warp one utterance's CMVN-normalised MFCC frames (T, F) by a random matrix of
    ``bank`` (K, F, F) (see :func:`speechrnn.features.vtlp_matrix`), then normalise again.

    ``scale`` (F,) is the utterance's std before CMVN: the warp applies to the cepstra as
    extracted, not to their normalised copy. ``seed`` (two integers) picks the warp.
    """
    k = tf.random.stateless_uniform([], seed, 0, tf.shape(bank)[0], dtype=tf.int32)
    warped = tf.matmul(features * scale, bank[k])
    mean = tf.reduce_mean(warped, axis=0, keepdims=True)
    return (warped - mean) / tf.maximum(tf.math.reduce_std(warped, axis=0, keepdims=True), 1e-5)


def tempo(features: tf.Tensor, min_frames: tf.Tensor, spread: float,
          seed: tf.Tensor) -> tf.Tensor:
    """One utterance's frames (T, F) resampled (linear interpolation) to a random length
    between T / (1 + ``spread``) and T * (1 + ``spread``), log-uniformly, never fewer than
    ``min_frames`` (what CTC needs for its transcript): the same speech, slower or faster,
    with its spectrum (pitch, formants) untouched. ``seed`` (two integers) picks the rate.
    """
    n = tf.shape(features)[0]
    log_rate = tf.random.stateless_uniform([], seed, -1.0, 1.0) * tf.math.log(1.0 + spread)
    m = tf.cast(tf.round(tf.cast(n, tf.float32) * tf.exp(log_rate)), tf.int32)
    m = tf.maximum(m, tf.minimum(tf.maximum(min_frames, 2), n))
    position = tf.linspace(0.0, tf.cast(n - 1, tf.float32), m)
    low = tf.minimum(tf.cast(tf.floor(position), tf.int32), n - 1)
    high = tf.minimum(low + 1, n - 1)
    w = (position - tf.floor(position))[:, tf.newaxis]
    return tf.gather(features, low) * (1.0 - w) + tf.gather(features, high) * w


def bucket_boundaries(lengths: list[int], buckets: int) -> list[int]:
    """Upper frame-length edges that split ``lengths`` into about equal-count buckets."""
    if buckets <= 1 or len(lengths) < 2 * buckets:
        return []
    edges = np.quantile(lengths, np.linspace(0, 1, buckets + 1)[1:-1])
    return sorted({int(e) + 1 for e in edges})


def _tensors(examples: Examples) -> dict[str, tf.Tensor]:
    """All features and labels as flat tensors plus offsets, built once per Examples."""
    cached = getattr(examples, "_tensors", None)
    if cached is None:
        feat_lengths = np.array([len(f) for f in examples.features], dtype=np.int32)
        label_lengths = np.array([len(x) for x in examples.labels], dtype=np.int32)
        cached = {
            "features": tf.constant(np.concatenate(examples.features).astype(np.float32)),
            "labels": tf.constant(np.concatenate(examples.labels).astype(np.int32)),
            "feature_starts": tf.constant(np.cumsum(feat_lengths) - feat_lengths, tf.int32),
            "label_starts": tf.constant(np.cumsum(label_lengths) - label_lengths, tf.int32),
            "feature_lengths": tf.constant(feat_lengths),
            "label_lengths": tf.constant(label_lengths),
        }
        cached["min_frames"] = tf.constant(
            [ctc_min_frames(x.tolist()) * examples.subsampling for x in examples.labels],
            tf.int32)
        if examples.scales is not None:
            cached["scales"] = tf.constant(np.stack(examples.scales).astype(np.float32))
        examples._tensors = cached
    return cached


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The training order of epoch ``epoch``: a permutation fixed by (seed, epoch), so that a
    resumed run sees the very batches the interrupted one would have."""
    return np.random.default_rng([seed, epoch]).permutation(n).astype(np.int32)


BATCH_KEYS = ("features", "labels", "feature_lengths", "label_lengths", "index")
SHARDS_AT_ONCE = 16  # shard files a training epoch reads from at a time (interleaved)


def augmentation(config: BatchConfig, seed: int, epoch: int,
                 feature_config: FeatureConfig | None, scale_of, min_frames_of):
    """The training augmentation of epoch (``seed``, ``epoch``) as a function on one item
    (a dict of its features, lengths and ``index``), or None when ``config`` asks for none:
    VTLP, tempo, then SpecAugment, each seeded by (seed, epoch, the item's index).

    ``scale_of(item)``: the item's std before CMVN (None when the features have none: VTLP
    is then an error); ``min_frames_of(item)``: the frames its transcript needs (tempo).
    """
    aug = config.spec_augment
    bank = None
    if config.vtlp:
        if scale_of is None:
            raise InputError("batch.vtlp needs MFCC features with features.cmvn: utterance")
        alphas = np.linspace(1 - config.vtlp, 1 + config.vtlp, 21)
        bank = tf.constant(np.stack([vtlp_matrix(feature_config, a) for a in alphas]))
    if not (aug.enabled or bank is not None or config.tempo):
        return None

    def augment(e):
        item_seed = tf.stack([tf.constant(seed * 1_000_003 + epoch, tf.int32), e["index"]])
        feats = e["features"]
        if bank is not None:
            feats = vtlp(feats, scale_of(e), bank,
                         tf.random.experimental.stateless_fold_in(item_seed, 1))
        if config.tempo:
            feats = tempo(feats, min_frames_of(e), config.tempo,
                          tf.random.experimental.stateless_fold_in(item_seed, 2))
        length = tf.shape(feats)[0]
        if aug.enabled:
            feats = spec_augment(feats, length, aug, item_seed)
        return {**e, "features": feats, "feature_lengths": length}

    return augment


def _batches(ds: tf.data.Dataset, lengths, config: BatchConfig, n_features: int,
             key: str = "feature_lengths") -> tf.data.Dataset:
    """Items -> padded batches of ``config.batch_size`` items of similar length (buckets:
    quantiles of ``lengths``, the items' frame counts), prefetched. ``key``: the item field
    bucketing reads; any field besides :data:`BATCH_KEYS` is dropped after batching."""
    boundaries = bucket_boundaries(list(lengths), config.buckets)
    shapes = {"features": [None, n_features], "labels": [None], "feature_lengths": [],
              "label_lengths": [], "index": []}
    padding = {"features": 0.0, "labels": 0, "feature_lengths": 0, "label_lengths": 0,
               "index": 0}
    if key not in shapes:
        shapes[key], padding[key] = [], 0
    ds = ds.bucket_by_sequence_length(
        element_length_func=lambda e: e[key],
        bucket_boundaries=boundaries,
        bucket_batch_sizes=[config.batch_size] * (len(boundaries) + 1),
        padded_shapes=shapes,
        padding_values=padding,
    )
    if key not in BATCH_KEYS:
        ds = ds.map(lambda b: {k: b[k] for k in BATCH_KEYS})
    return ds.prefetch(tf.data.AUTOTUNE)


def make_dataset(examples: Examples | ShardIndex, config: BatchConfig = BatchConfig(),
                 training: bool = False, seed: int = 0, epoch: int = 0) -> tf.data.Dataset:
    """Padded batches of similar length; shuffled and augmented when ``training``.

    ``examples``: features in memory (:class:`Examples`) or a shard set to stream
    (:class:`~speechrnn.shards.ShardIndex`). The batches of a training epoch depend only on
    (``seed``, ``epoch``).
    """
    if isinstance(examples, ShardIndex):
        return _stream(examples, config, training, seed, epoch)
    if not len(examples):
        raise InputError("no usable utterances to batch")
    t = _tensors(examples)
    n_feat = examples.features[0].shape[1]

    def element(i):
        f0, l0 = t["feature_starts"][i], t["label_starts"][i]
        n, m = t["feature_lengths"][i], t["label_lengths"][i]
        return {"features": t["features"][f0:f0 + n], "labels": t["labels"][l0:l0 + m],
                "feature_lengths": n, "label_lengths": m, "index": i}

    order = epoch_order(len(examples), seed, epoch) if training else \
        np.arange(len(examples), dtype=np.int32)
    ds = tf.data.Dataset.from_tensor_slices(order).map(element)
    if training:
        augment = augmentation(
            config, seed, epoch, examples.feature_config,
            (lambda e: t["scales"][e["index"]]) if examples.scales is not None else None,
            lambda e: t["min_frames"][e["index"]])
        if augment is not None:
            ds = ds.map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    return _batches(ds, [len(f) for f in examples.features], config, n_feat)


# --------------------------------------------------------------------------- shards


def _records(index: ShardIndex, order: np.ndarray, cycle: int) -> tf.data.Dataset:
    """``(item index, serialised record)`` of the shards in ``order``, ``cycle`` files read
    at a time, round robin (in order: the same sequence on every run)."""
    files = np.array([str(p) for p in index.files])
    counts = np.asarray(index.counts, np.int64)
    offsets = np.cumsum(counts) - counts  # the first item of each shard

    def numbered(path, offset):
        return tf.data.TFRecordDataset(path).enumerate().map(lambda i, r: (offset + i, r))

    ds = tf.data.Dataset.from_tensor_slices((files[order], offsets[order]))
    if cycle <= 1:
        return ds.flat_map(numbered)
    return ds.interleave(numbered, cycle_length=cycle, block_length=1,
                         num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _record_parser(index: ShardIndex):
    """Serialised record -> an item: the batch fields, ``frames`` (its length as
    extracted), ``min_frames`` (what CTC needs: tempo's floor) and ``scale`` (VTLP)."""
    n_features, stride, scales = index.n_features, index.subsampling, index.has_scales
    spec = {"features": tf.io.FixedLenFeature([], tf.string),
            "labels": tf.io.VarLenFeature(tf.int64)}
    if scales:
        spec["scale"] = tf.io.FixedLenFeature([], tf.string)

    def parse(number, record):
        x = tf.io.parse_single_example(record, spec)
        feats = tf.reshape(tf.io.decode_raw(x["features"], tf.float32), [-1, n_features])
        labels = tf.cast(tf.sparse.to_dense(x["labels"]), tf.int32)
        repeats = tf.reduce_sum(tf.cast(labels[1:] == labels[:-1], tf.int32))
        n = tf.shape(feats)[0]
        e = {"features": feats, "labels": labels, "feature_lengths": n,
             "label_lengths": tf.shape(labels)[0], "index": tf.cast(number, tf.int32),
             "frames": n, "min_frames": (tf.size(labels) + repeats) * stride}
        if scales:
            e["scale"] = tf.reshape(tf.io.decode_raw(x["scale"], tf.float32), [n_features])
        return e

    return parse


def _shuffle_seed(seed: int, epoch: int) -> int:
    return int(np.random.default_rng([seed, epoch, 1]).integers(1, 2**31 - 1))


def _stream(index: ShardIndex, config: BatchConfig, training: bool, seed: int,
            epoch: int) -> tf.data.Dataset:
    """:func:`make_dataset` over a shard set. Training: the shard files in an order fixed by
    (seed, epoch), :data:`SHARDS_AT_ONCE` read interleaved, a shuffle buffer seeded from
    (seed, epoch) (with TensorFlow's global seed, which training sets to ``train.seed``).
    Items are bucketed by their length as extracted (known from the index), so that
    :func:`count_batches` is exact with tempo too. Otherwise: the items in order."""
    if not len(index):
        raise InputError("no usable utterances to batch")
    n = len(index.files)
    if training:
        ds = _records(index, epoch_order(n, seed, epoch), min(n, SHARDS_AT_ONCE))
        ds = ds.shuffle(max(1, config.shuffle_buffer), seed=_shuffle_seed(seed, epoch),
                        reshuffle_each_iteration=False)
    else:
        ds = _records(index, np.arange(n), 1)
    ds = ds.map(_record_parser(index), num_parallel_calls=tf.data.AUTOTUNE)
    if training:
        augment = augmentation(config, seed, epoch, index.feature_config,
                               (lambda e: e["scale"]) if index.has_scales else None,
                               lambda e: e["min_frames"])
        if augment is not None:
            ds = ds.map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.map(lambda e: {k: e[k] for k in (*BATCH_KEYS, "frames")})
    return _batches(ds, index.frames, config, index.n_features, key="frames")


def count_batches(data: Examples | ShardIndex, config: BatchConfig) -> int:
    """Batches in a training epoch (the same in every epoch): over the length buckets, the
    sum of ceil(items / batch size). In memory with ``batch.tempo`` (which buckets items by
    their length after tempo) the epoch is built and counted instead, as it always was."""
    if isinstance(data, Examples):
        if config.tempo:
            return sum(1 for _ in make_dataset(data, config, training=True))
        lengths = np.array([len(f) for f in data.features], np.int64)
    else:
        lengths = np.asarray(data.frames, np.int64)
    boundaries = bucket_boundaries(lengths.tolist(), config.buckets)
    per_bucket = np.bincount(np.searchsorted(boundaries, lengths, side="right"),
                             minlength=len(boundaries) + 1)
    return int(sum(-(-int(k) // config.batch_size) for k in per_bucket))


def load_shards(index: ShardIndex) -> Examples:
    """A (small) shard set read into memory: what :func:`load_examples` gives for the same
    rows (the index must know its manifest rows)."""
    features, labels, scales = [], [], []
    ds = _records(index, np.arange(len(index.files)), 1).map(_record_parser(index))
    for e in ds.as_numpy_iterator():
        features.append(e["features"])
        labels.append(e["labels"])
        if index.has_scales:
            scales.append(e["scale"])
    return Examples(rows=index.rows, features=features, labels=labels, skipped=index.skipped,
                    scales=scales if index.has_scales else None,
                    feature_config=index.feature_config if index.has_scales else None,
                    subsampling=index.subsampling)

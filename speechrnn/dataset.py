"""Batches: manifest rows -> features in memory -> a bucketed, padded ``tf.data`` pipeline.

Each batch is a dict of ``features`` (B, T, F) float32, ``feature_lengths`` (B,),
``labels`` (B, L) int32 padded with the blank (0), ``label_lengths`` (B,) and ``index``
(B,): the row each item came from; with auxiliary labels (a model with ``aux_ctc``: the
transcript in its other units) also ``aux_labels`` and ``aux_label_lengths``. Lengths are
the true, unpadded ones; every later stage uses them so that padding never changes a
result.

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

Sampling weights (``weights`` of either source, one per item; None: every item 1.0): an
item of weight w is drawn w times an epoch on average (:func:`epoch_counts`): floor(w)
copies, and one more for a random subset of the items of its weight, drawn anew each epoch
from (seed, epoch). Both sources draw the same copies; in memory they
are shuffled like the items, streamed each further copy comes from another read of its
shard (a shard is read as many times as its most-drawn item; the copies an epoch did not
draw are dropped as they are read). With every weight 1.0 an epoch is what it was without
weights, batch for batch.

Both share the per-item augmentation (:func:`augmentation`: seeded by (seed, epoch, item
index, copy), so an item gets the same warp from either source and two copies of it in one
epoch different ones) and the bucketing and padding (:func:`_batches`). The batches of a
training epoch depend only on (seed, epoch) (and the weights), so ``ds.skip(step)``
resumes an epoch exactly.

SortaGrad (``batch.sortagrad``, in memory): the first epoch (0) draws the same items, sorted
by their length as extracted (:func:`epoch_items`; tempo then moves lengths a little), and
cuts them into batches in that order; later epochs are as without it.
"""

from __future__ import annotations

import logging
import math
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
    # each item's sampling weight in training (see epoch_counts); None: every item 1.0
    weights: np.ndarray | None = None
    aux_labels: list[np.ndarray] | None = None  # in the auxiliary head's units

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def seconds(self) -> float:
        return float(sum(r.duration for r in self.rows))


def load_examples(rows: list[Utterance], extractor: FeatureExtractor, alphabet: Alphabet,
                  subsampling: int = 1, workers: int = 2, progress: bool | None = None,
                  desc: str = "features", weights=None, aux: Alphabet | None = None) -> Examples:
    """Extract (or read cached) features for ``rows``; report and skip the unusable ones:
    unreadable or silent audio, text outside the alphabet, transcripts longer than CTC
    allows. ``weights``: each row's sampling weight in training (None: all 1.0). ``aux``:
    the units of auxiliary labels to spell the transcripts in too."""

    mfcc_utterance = isinstance(extractor, FeatureExtractor) and \
        extractor.config.cmvn == "utterance"

    def one(row: Utterance):
        return example_item(row, extractor, alphabet, subsampling, aux)

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
                    subsampling=subsampling,
                    weights=None if weights is None else
                    np.asarray(weights, np.float64)[np.asarray(kept, np.int64)],
                    aux_labels=None if aux is None else [results[i][3] for i in kept])


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


def bucket_boundaries(lengths: list[int], buckets: int, weights=None) -> list[int]:
    """Upper frame-length edges that split ``lengths`` into about equal-count buckets;
    with ``weights`` (sampling weights, see :func:`epoch_counts`) equal in the items an
    epoch draws."""
    if buckets <= 1 or len(lengths) < 2 * buckets:
        return []
    q = np.linspace(0, 1, buckets + 1)[1:-1]
    if weights is None:
        edges = np.quantile(lengths, q)
    else:
        edges = np.quantile(lengths, q, weights=np.asarray(weights, np.float64),
                            method="inverted_cdf")
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
        aux = examples.aux_labels or [np.zeros(0, np.int32)] * len(examples.labels)
        cached["min_frames"] = tf.constant(  # both heads' transcripts must fit
            [max(ctc_min_frames(x.tolist()), ctc_min_frames(y.tolist())) * examples.subsampling
             for x, y in zip(examples.labels, aux)], tf.int32)
        if examples.scales is not None:
            cached["scales"] = tf.constant(np.stack(examples.scales).astype(np.float32))
        if examples.aux_labels is not None:
            aux_lengths = np.array([len(x) for x in examples.aux_labels], dtype=np.int32)
            cached["aux_labels"] = tf.constant(
                np.concatenate(examples.aux_labels).astype(np.int32))
            cached["aux_starts"] = tf.constant(np.cumsum(aux_lengths) - aux_lengths, tf.int32)
            cached["aux_lengths"] = tf.constant(aux_lengths)
        examples._tensors = cached
    return cached


def uniform(weights) -> bool:
    """No weights, or every weight 1.0: epochs as they are without weights."""
    return weights is None or bool(np.all(np.asarray(weights) == 1.0))


def epoch_counts(weights, seed: int, epoch: int) -> np.ndarray:
    """How many times each item is drawn in epoch ``epoch`` (int64, one per item), from the
    items' sampling ``weights``: floor(w) times, once more for a random subset of the items
    of the same weight (of m items of weight w with fractional part f, floor(f * m + u) of
    them, u uniform in [0, 1): each item is drawn w times on average, and the m items
    f * m times, give or take less than one). Fixed by (seed, epoch)."""
    w = np.round(np.asarray(weights, np.float64), 9)
    if np.any(w < 0):
        raise InputError("sampling weights must not be negative")
    counts = np.floor(w).astype(np.int64)
    rng = np.random.default_rng([seed, epoch, 3])
    for weight in np.unique(w[w != counts]):  # sorted: the same draws on every run
        members = np.flatnonzero(w == weight)
        f = weight - np.floor(weight)
        k = min(len(members), int(np.floor(f * len(members) + rng.random())))
        counts[rng.choice(members, k, replace=False)] += 1
    return counts


def copies_of(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(items, copies)``: item ``i`` ``counts[i]`` times, numbered 0, 1, ... (in item
    order)."""
    counts = np.asarray(counts, np.int64)
    items = np.repeat(np.arange(len(counts), dtype=np.int32), counts)
    first = np.repeat(np.cumsum(counts) - counts, counts)
    return items, (np.arange(len(items)) - first).astype(np.int32)


def epoch_items(n: int, seed: int, epoch: int, weights=None,
                lengths=None) -> tuple[np.ndarray, np.ndarray]:
    """``(items, copies)`` of training epoch ``epoch`` in order: the items drawn (see
    :func:`epoch_counts`), each with its copy number (0 for the first copy of an item),
    shuffled. Fixed by (seed, epoch), so that a resumed run sees the very batches the
    interrupted one would have. Without weights (or all 1.0), a permutation of the ``n``
    items, copies 0. ``lengths`` (SortaGrad: each item's length): the same draws sorted,
    shortest first (equal lengths in their shuffled order)."""
    rng = np.random.default_rng([seed, epoch])
    if uniform(weights):
        items, copies = rng.permutation(n).astype(np.int32), np.zeros(n, np.int32)
    elif len(weights) != n:
        raise InputError(f"{len(weights)} sampling weights for {n} items")
    else:
        items, copies = copies_of(epoch_counts(weights, seed, epoch))
        order = rng.permutation(len(items))
        items, copies = items[order], copies[order]
    if lengths is not None:
        order = np.argsort(np.asarray(lengths)[items], kind="stable")
        items, copies = items[order], copies[order]
    return items, copies


def epoch_order(n: int, seed: int, epoch: int, weights=None) -> np.ndarray:
    """The items of training epoch ``epoch`` in order (:func:`epoch_items` without the
    copy numbers): without weights a permutation fixed by (seed, epoch)."""
    return epoch_items(n, seed, epoch, weights)[0]


BATCH_KEYS = ("features", "labels", "feature_lengths", "label_lengths", "index")
AUX_KEYS = ("aux_labels", "aux_label_lengths")  # with auxiliary labels
SHARDS_AT_ONCE = 16  # shard files a training epoch reads from at a time (interleaved)
COPY_SALT = 1 << 20  # folded into the augmentation seed with a copy's number


def augmentation(config: BatchConfig, seed: int, epoch: int,
                 feature_config: FeatureConfig | None, scale_of, min_frames_of):
    """The training augmentation of epoch (``seed``, ``epoch``) as a function on one item
    (a dict of its features, lengths, ``index`` and ``copy``), or None when ``config`` asks
    for none: VTLP, tempo, then SpecAugment, each seeded by (seed, epoch, the item's index),
    with the copy number folded in for the second and later copies of an item.

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
        if "copy" in e:  # a further copy of an item (sampling weight > 1): other draws
            item_seed = tf.where(e["copy"] > 0, tf.random.experimental.stateless_fold_in(
                item_seed, COPY_SALT + e["copy"]), item_seed)
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
             key: str = "feature_lengths", weights=None, sorted_items=None) -> tf.data.Dataset:
    """Items -> padded batches of ``config.batch_size`` items of similar length (buckets:
    quantiles of ``lengths``, the items' frame counts, under their sampling ``weights``),
    prefetched. ``key``: the item field bucketing reads; any field besides
    :data:`BATCH_KEYS` is dropped after batching. ``sorted_items``: the items' indices as
    they come, shortest first (SortaGrad): then each bucket's items are cut into batches
    in that order and each batch goes as soon as it is whole, so that batch lengths never
    decrease (the same buckets, so as many batches)."""
    boundaries = bucket_boundaries(list(lengths), config.buckets,
                                   None if uniform(weights) else weights)
    shapes = {"features": [None, n_features], "labels": [None], "feature_lengths": [],
              "label_lengths": [], "index": []}
    padding = {"features": 0.0, "labels": 0, "feature_lengths": 0, "label_lengths": 0,
               "index": 0}
    keys = BATCH_KEYS
    if AUX_KEYS[0] in ds.element_spec:
        keys = BATCH_KEYS + AUX_KEYS
        shapes.update(aux_labels=[None], aux_label_lengths=[])
        padding.update(aux_labels=0, aux_label_lengths=0)
    if key not in shapes:
        shapes[key], padding[key] = [], 0
    if sorted_items is None:
        ds = ds.bucket_by_sequence_length(
            element_length_func=lambda e: e[key],
            bucket_boundaries=boundaries,
            bucket_batch_sizes=[config.batch_size] * (len(boundaries) + 1),
            padded_shapes=shapes,
            padding_values=padding,
        )
    else:
        bucket = np.searchsorted(boundaries, np.asarray(lengths)[sorted_items], side="right")
        place = np.arange(len(bucket)) - np.searchsorted(bucket, bucket)  # in its bucket
        batch = np.cumsum(place % config.batch_size == 0) - 1  # each item's batch
        sizes = tf.constant(np.bincount(batch), tf.int64)
        ds = tf.data.Dataset.zip((ds, tf.data.Dataset.from_tensor_slices(batch)))
        ds = ds.group_by_window(
            key_func=lambda e, b: b,
            reduce_func=lambda b, items: items.map(lambda e, _: e).padded_batch(
                config.batch_size, shapes, padding),
            window_size_func=lambda b: sizes[b])
    if key not in keys:
        ds = ds.map(lambda b: {k: b[k] for k in keys})
    return ds.prefetch(tf.data.AUTOTUNE).with_options(pipeline_options())


def pipeline_options() -> tf.data.Options:
    """tf.data options of every batch pipeline: autotuning off. Its model thread sleeps
    ever longer between tuning passes and deleting an iterator waits for it to wake, so
    each epoch's (and each evaluation's) finished iterator held the training loop for up
    to tens of seconds (3-26 s measured after 20-40-s epochs). Without it, ``AUTOTUNE``
    parallelism is a fixed default (the cores) and prefetch sizes its own buffer: as fast
    between epochs, no stall at their ends (docs/experiments.md, "Speed")."""
    options = tf.data.Options()
    options.autotune.enabled = False
    return options


def make_dataset(examples: Examples | ShardIndex, config: BatchConfig = BatchConfig(),
                 training: bool = False, seed: int = 0, epoch: int = 0) -> tf.data.Dataset:
    """Padded batches of similar length; shuffled and augmented when ``training``.

    ``examples``: features in memory (:class:`Examples`) or a shard set to stream
    (:class:`~speechrnn.shards.ShardIndex`). The batches of a training epoch depend only on
    (``seed``, ``epoch``); its items are drawn by their sampling weights (``weights`` of
    either, see :func:`epoch_counts`). With ``config.sortagrad`` the first training epoch
    (0) comes shortest first (in memory only).
    """
    if isinstance(examples, ShardIndex):
        if training and config.sortagrad:
            raise InputError("batch.sortagrad needs the features in memory (batch.source: "
                             "memory): a shard set cannot be streamed in order of length")
        return _stream(examples, config, training, seed, epoch)
    if not len(examples):
        raise InputError("no usable utterances to batch")
    t = _tensors(examples)
    n_feat = examples.features[0].shape[1]

    def element(i, copy):
        f0, l0 = t["feature_starts"][i], t["label_starts"][i]
        n, m = t["feature_lengths"][i], t["label_lengths"][i]
        e = {"features": t["features"][f0:f0 + n], "labels": t["labels"][l0:l0 + m],
             "feature_lengths": n, "label_lengths": m, "index": i, "copy": copy}
        if aux:
            a0, k = t["aux_starts"][i], t["aux_lengths"][i]
            e.update(aux_labels=t["aux_labels"][a0:a0 + k], aux_label_lengths=k)
        return e

    lengths = [len(f) for f in examples.features]
    aux = training and examples.aux_labels is not None  # what training's auxiliary head learns
    keys = BATCH_KEYS + AUX_KEYS if aux else BATCH_KEYS
    sortagrad = training and config.sortagrad and epoch == 0  # the first epoch shortest first
    if training:
        order, copies = epoch_items(len(examples), seed, epoch, examples.weights,
                                    lengths if sortagrad else None)
    else:
        order = np.arange(len(examples), dtype=np.int32)
        copies = np.zeros_like(order)
    ds = tf.data.Dataset.from_tensor_slices((order, copies)).map(element)
    if training:
        augment = augmentation(
            config, seed, epoch, examples.feature_config,
            (lambda e: t["scales"][e["index"]]) if examples.scales is not None else None,
            lambda e: t["min_frames"][e["index"]])
        if augment is not None:
            ds = ds.map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.map(lambda e: {k: e[k] for k in keys})
    return _batches(ds, lengths, config, n_feat, weights=examples.weights,
                    sorted_items=order if sortagrad else None)


# --------------------------------------------------------------------------- shards


def _records(index: ShardIndex, order: np.ndarray, cycle: int, passes=None,
             drawn=None) -> tf.data.Dataset:
    """``(item index, copy, serialised record)`` of the shards in ``order``, ``cycle`` files
    read at a time, round robin (in order: the same sequence on every run). ``passes``: the
    copy number each read of a shard in ``order`` gives its items (None: 0); ``drawn``: how
    many copies of each item the epoch draws (None: one of each): a read with copy number c
    keeps the items drawn more than c times."""
    files = np.array([str(p) for p in index.files])
    counts = np.asarray(index.counts, np.int64)
    offsets = np.cumsum(counts) - counts  # the first item of each shard
    order = np.asarray(order, np.int64)
    passes = np.zeros(len(order), np.int32) if passes is None else np.asarray(passes, np.int32)
    keep = None if drawn is None else tf.constant(np.asarray(drawn, np.int32))

    def numbered(path, offset, copy):
        ds = tf.data.TFRecordDataset(path).enumerate().map(lambda i, r: (offset + i, copy, r))
        if keep is not None:
            ds = ds.filter(lambda i, c, r: keep[i] > c)
        return ds

    ds = tf.data.Dataset.from_tensor_slices((files[order], offsets[order], passes))
    if cycle <= 1:
        return ds.flat_map(numbered)
    return ds.interleave(numbered, cycle_length=cycle, block_length=1,
                         num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _record_parser(index: ShardIndex, aux: bool = False):
    """Serialised record -> an item: the batch fields, ``frames`` (its length as
    extracted), ``min_frames`` (what CTC needs: tempo's floor) and ``scale`` (VTLP);
    ``aux``: the auxiliary labels too."""
    n_features, stride, scales = index.n_features, index.subsampling, index.has_scales
    spec = {"features": tf.io.FixedLenFeature([], tf.string),
            "labels": tf.io.VarLenFeature(tf.int64)}
    if aux:
        spec["aux_labels"] = tf.io.VarLenFeature(tf.int64)
    if scales:
        spec["scale"] = tf.io.FixedLenFeature([], tf.string)

    def need(labels):  # input frames CTC needs for labels (ctc_min_frames x the stride)
        repeats = tf.reduce_sum(tf.cast(labels[1:] == labels[:-1], tf.int32))
        return (tf.size(labels) + repeats) * stride

    def parse(number, copy, record):
        x = tf.io.parse_single_example(record, spec)
        feats = tf.reshape(tf.io.decode_raw(x["features"], tf.float32), [-1, n_features])
        labels = tf.cast(tf.sparse.to_dense(x["labels"]), tf.int32)
        n = tf.shape(feats)[0]
        e = {"features": feats, "labels": labels, "feature_lengths": n,
             "label_lengths": tf.shape(labels)[0], "index": tf.cast(number, tf.int32),
             "copy": copy, "frames": n, "min_frames": need(labels)}
        if scales:
            e["scale"] = tf.reshape(tf.io.decode_raw(x["scale"], tf.float32), [n_features])
        if aux:
            aux_labels = tf.cast(tf.sparse.to_dense(x["aux_labels"]), tf.int32)
            e.update(aux_labels=aux_labels, aux_label_lengths=tf.shape(aux_labels)[0],
                     min_frames=tf.maximum(e["min_frames"], need(aux_labels)))
        return e

    return parse


def _shuffle_seed(seed: int, epoch: int) -> int:
    return int(np.random.default_rng([seed, epoch, 1]).integers(1, 2**31 - 1))


def _stream(index: ShardIndex, config: BatchConfig, training: bool, seed: int,
            epoch: int) -> tf.data.Dataset:
    """:func:`make_dataset` over a shard set. Training: the shard files in an order fixed by
    (seed, epoch), :data:`SHARDS_AT_ONCE` read interleaved, a shuffle buffer seeded from
    (seed, epoch) (with TensorFlow's global seed, which training sets to ``train.seed``).
    With sampling weights (``index.weights``) a shard is read once for each copy of its
    most-drawn item (:func:`epoch_counts`), those reads shuffled among the others, and each
    read keeps the items drawn that often. Items are bucketed by their length as extracted
    (known from the index), so that :func:`count_batches` is exact with tempo too.
    Otherwise: the items in order."""
    if not len(index):
        raise InputError("no usable utterances to batch")
    n = len(index.files)
    if training and uniform(index.weights):
        ds = _records(index, epoch_order(n, seed, epoch), min(n, SHARDS_AT_ONCE))
    elif training:
        drawn = epoch_counts(index.weights, seed, epoch)
        counts = np.asarray(index.counts, np.int64)
        starts = np.cumsum(counts) - counts
        reads = np.array([drawn[s:s + c].max() if c else 0 for s, c in zip(starts, counts)],
                         np.int64)  # reads of each shard: the copies of its most-drawn item
        files, passes = copies_of(reads)
        order = np.random.default_rng([seed, epoch]).permutation(len(files))
        ds = _records(index, files[order], min(len(files), SHARDS_AT_ONCE), passes[order],
                      drawn)
    else:
        ds = _records(index, np.arange(n), 1)
    if training:
        ds = ds.shuffle(max(1, config.shuffle_buffer), seed=_shuffle_seed(seed, epoch),
                        reshuffle_each_iteration=False)
    aux = training and index.has_aux
    ds = ds.map(_record_parser(index, aux), num_parallel_calls=tf.data.AUTOTUNE)
    if training:
        augment = augmentation(config, seed, epoch, index.feature_config,
                               (lambda e: e["scale"]) if index.has_scales else None,
                               lambda e: e["min_frames"])
        if augment is not None:
            ds = ds.map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.map(lambda e: {k: e[k] for k in (*BATCH_KEYS, *(AUX_KEYS if aux else ()),
                                             "frames")})
    return _batches(ds, index.frames, config, index.n_features, key="frames",
                    weights=index.weights)


def count_batches(data: Examples | ShardIndex, config: BatchConfig) -> int:
    """Batches in a training epoch (the same in every epoch): over the length buckets, the
    sum of ceil(items / batch size). In memory with ``batch.tempo`` (which buckets items by
    their length after tempo) the epoch is built and counted instead, as it always was.

    With sampling weights (``data.weights``) an epoch's items are drawn, and the items of
    a bucket are their expected number, the sum of their weights: exact when every weight
    is a whole number, else the expectation (an epoch's count may differ by about a batch
    per bucket). With ``batch.tempo`` in memory: the count of epoch 0."""
    weights = None if uniform(data.weights) else np.asarray(data.weights, np.float64)
    if isinstance(data, Examples):
        if config.tempo:
            return sum(1 for _ in make_dataset(data, config, training=True))
        lengths = np.array([len(f) for f in data.features], np.int64)
    else:
        lengths = np.asarray(data.frames, np.int64)
    boundaries = bucket_boundaries(lengths.tolist(), config.buckets, weights)
    per_bucket = np.bincount(np.searchsorted(boundaries, lengths, side="right"),
                             weights=weights, minlength=len(boundaries) + 1)
    if weights is None:
        return int(sum(-(-int(k) // config.batch_size) for k in per_bucket))
    return int(sum(math.ceil(k / config.batch_size - 1e-9) for k in per_bucket))


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

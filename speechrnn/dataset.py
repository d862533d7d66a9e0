"""Batches: manifest rows -> features in memory -> a bucketed, padded ``tf.data`` pipeline.

Each batch is a dict of ``features`` (B, T, F) float32, ``feature_lengths`` (B,),
``labels`` (B, L) int32 padded with the blank (0), ``label_lengths`` (B,) and ``index``
(B,): the row each item came from. Lengths are the true, unpadded ones; every later
stage uses them so that padding never changes a result.

Features are held in memory (float32, about 1.4 MB per audio-minute with 39 features),
which suits corpora up to tens of hours on a 24 GB machine; the feature cache makes
reloading them cheap.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf

from .audio import AudioError
from .config import BatchConfig, FeatureConfig, SpecAugmentConfig, output_frames
from .errors import InputError
from .features import FeatureExtractor, utterance_std, vtlp_matrix
from .manifest import Utterance
from .progress import parallel_map
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
        if mfcc_utterance:
            raw = extractor.raw(row.audio, *row.segment)
            feats, scale = extractor.normalize(raw), utterance_std(raw)
        else:
            feats, scale = extractor(row.audio, *row.segment), None
        if np.ptp(feats, axis=0).max() < 1e-4:
            raise AudioError(row.audio, "silent audio (no signal to learn from)")
        labels = np.asarray(alphabet.encode(row.text), dtype=np.int32)
        if len(labels) == 0:
            raise TextError("empty transcript")
        frames = output_frames(len(feats), subsampling)
        need = ctc_min_frames(labels.tolist())
        if need > frames:
            raise TextError(f"transcript too long for the audio under CTC ({need} frames "
                            f"needed, {frames} available)")
        return feats, labels, scale

    results, errors = parallel_map(one, rows, workers, desc, (AudioError, TextError), progress)
    skipped = []
    for i, err in errors:
        reason = err.reason if isinstance(err, AudioError) else str(err)
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


def make_dataset(examples: Examples, config: BatchConfig = BatchConfig(),
                 training: bool = False, seed: int = 0, epoch: int = 0) -> tf.data.Dataset:
    """Padded batches of similar length; shuffled and augmented when ``training``.

    The batches of a training epoch depend only on (``seed``, ``epoch``).
    """
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
    aug = config.spec_augment
    bank = None
    if training and config.vtlp:
        if examples.scales is None:
            raise InputError("batch.vtlp needs MFCC features with features.cmvn: utterance")
        alphas = np.linspace(1 - config.vtlp, 1 + config.vtlp, 21)
        bank = tf.constant(np.stack([vtlp_matrix(examples.feature_config, a) for a in alphas]))
    if training and (aug.enabled or bank is not None or config.tempo):
        def augment(e):
            item_seed = tf.stack([tf.constant(seed * 1_000_003 + epoch, tf.int32), e["index"]])
            feats = e["features"]
            if bank is not None:
                feats = vtlp(feats, t["scales"][e["index"]], bank,
                             tf.random.experimental.stateless_fold_in(item_seed, 1))
            if config.tempo:
                feats = tempo(feats, t["min_frames"][e["index"]], config.tempo,
                              tf.random.experimental.stateless_fold_in(item_seed, 2))
            length = tf.shape(feats)[0]
            if aug.enabled:
                feats = spec_augment(feats, length, aug, item_seed)
            return {**e, "features": feats, "feature_lengths": length}

        ds = ds.map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    boundaries = bucket_boundaries([len(f) for f in examples.features], config.buckets)
    ds = ds.bucket_by_sequence_length(
        element_length_func=lambda e: e["feature_lengths"],
        bucket_boundaries=boundaries,
        bucket_batch_sizes=[config.batch_size] * (len(boundaries) + 1),
        padded_shapes={"features": [None, n_feat], "labels": [None], "feature_lengths": [],
                       "label_lengths": [], "index": []},
        padding_values={"features": 0.0, "labels": 0, "feature_lengths": 0,
                        "label_lengths": 0, "index": 0},
    )
    return ds.prefetch(tf.data.AUTOTUNE)

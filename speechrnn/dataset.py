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
import os
from dataclasses import dataclass, field

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402

from .audio import AudioError  # noqa: E402
from .config import BatchConfig, SpecAugmentConfig  # noqa: E402
from .features import FeatureExtractor  # noqa: E402
from .manifest import Utterance  # noqa: E402
from .progress import parallel_map  # noqa: E402
from .text import Alphabet, TextError, ctc_min_frames  # noqa: E402

log = logging.getLogger(__name__)


@dataclass
class Examples:
    """Features and labels of the usable rows of a manifest; ``skipped`` says why not."""

    rows: list[Utterance]
    features: list[np.ndarray]
    labels: list[np.ndarray]
    skipped: list[tuple[Utterance, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def seconds(self) -> float:
        return float(sum(r.duration for r in self.rows))


def output_frames(frames: int, subsampling: int) -> int:
    """Frames left after a stride-``subsampling`` front end with 'same' padding."""
    return -(-frames // subsampling)


def load_examples(rows: list[Utterance], extractor: FeatureExtractor, alphabet: Alphabet,
                  subsampling: int = 1, workers: int = 2, progress: bool | None = None,
                  desc: str = "features") -> Examples:
    """Extract (or read cached) features for ``rows``; report and skip the unusable ones:
    unreadable audio, text outside the alphabet, transcripts longer than CTC allows."""

    def one(row: Utterance):
        feats = extractor(row.audio, *row.segment)
        labels = np.asarray(alphabet.encode(row.text), dtype=np.int32)
        if len(labels) == 0:
            raise TextError("empty transcript")
        frames = output_frames(len(feats), subsampling)
        need = ctc_min_frames(labels.tolist())
        if need > frames:
            raise TextError(f"transcript too long for the audio under CTC ({need} frames "
                            f"needed, {frames} available)")
        return feats, labels

    results, errors = parallel_map(one, rows, workers, desc, (AudioError, TextError), progress)
    skipped = []
    for i, err in errors:
        reason = err.reason if isinstance(err, AudioError) else str(err)
        skipped.append((rows[i], reason))
        log.warning("skipping %s (%s): %s", rows[i].id or "utterance", rows[i].audio, reason)
    kept = [i for i, r in enumerate(results) if r is not None]
    return Examples(rows=[rows[i] for i in kept], features=[results[i][0] for i in kept],
                    labels=[results[i][1] for i in kept], skipped=skipped)


def spec_augment(features: tf.Tensor, lengths: tf.Tensor, cfg: SpecAugmentConfig) -> tf.Tensor:
    """Zero random frequency bands and time spans of a padded batch (B, T, F).

    Time masks stay inside each item's valid length and cover at most ``time_ratio`` of it.
    Randomness follows TensorFlow's global seed (``tf.random.set_seed``).
    """
    shape = tf.shape(features)
    batch, time, feats = shape[0], shape[1], shape[2]
    keep = tf.ones_like(features, dtype=tf.bool)
    channel = tf.range(feats)[tf.newaxis, tf.newaxis, :]
    step = tf.range(time)[tf.newaxis, :, tf.newaxis]
    for _ in range(cfg.freq_masks):
        width = tf.random.uniform([batch, 1, 1], 0, cfg.freq_width + 1, tf.int32)
        start = tf.cast(tf.random.uniform([batch, 1, 1])
                        * tf.cast(feats - width + 1, tf.float32), tf.int32)
        keep &= ~((channel >= start) & (channel < start + width))
    lengths = tf.cast(lengths, tf.int32)[:, tf.newaxis, tf.newaxis]
    limit = tf.minimum(cfg.time_width,
                       tf.cast(cfg.time_ratio * tf.cast(lengths, tf.float32), tf.int32))
    for _ in range(cfg.time_masks):
        width = tf.cast(tf.random.uniform([batch, 1, 1])
                        * tf.cast(limit + 1, tf.float32), tf.int32)
        start = tf.cast(tf.random.uniform([batch, 1, 1])
                        * tf.cast(lengths - width + 1, tf.float32), tf.int32)
        keep &= ~((step >= start) & (step < start + width))
    return tf.where(keep, features, tf.zeros_like(features))


def bucket_boundaries(lengths: list[int], buckets: int) -> list[int]:
    """Upper frame-length edges that split ``lengths`` into about equal-count buckets."""
    if buckets <= 1 or len(lengths) < 2 * buckets:
        return []
    edges = np.quantile(lengths, np.linspace(0, 1, buckets + 1)[1:-1])
    return sorted({int(e) + 1 for e in edges})


def make_dataset(examples: Examples, config: BatchConfig = BatchConfig(),
                 training: bool = False, seed: int = 0) -> tf.data.Dataset:
    """Padded batches of similar length; shuffled and augmented when ``training``."""
    if not len(examples):
        raise ValueError("no usable utterances to batch")
    n_feat = examples.features[0].shape[1]
    feat_lengths = np.array([len(f) for f in examples.features], dtype=np.int32)
    label_lengths = np.array([len(x) for x in examples.labels], dtype=np.int32)
    # One flat tensor per field plus offsets: each element slices its own rows out.
    feat_values = tf.constant(np.concatenate(examples.features).astype(np.float32))
    label_values = tf.constant(np.concatenate(examples.labels).astype(np.int32))
    feat_starts = tf.constant(np.concatenate([[0], np.cumsum(feat_lengths)[:-1]]), tf.int32)
    label_starts = tf.constant(np.concatenate([[0], np.cumsum(label_lengths)[:-1]]), tf.int32)
    feat_len_t = tf.constant(feat_lengths)
    label_len_t = tf.constant(label_lengths)

    def element(i):
        return {
            "features": feat_values[feat_starts[i]:feat_starts[i] + feat_len_t[i]],
            "labels": label_values[label_starts[i]:label_starts[i] + label_len_t[i]],
            "feature_lengths": feat_len_t[i],
            "label_lengths": label_len_t[i],
            "index": i,
        }

    ds = tf.data.Dataset.range(len(examples)).map(lambda i: tf.cast(i, tf.int32))
    if training:
        ds = ds.shuffle(min(config.shuffle_buffer, len(examples)), seed=seed,
                        reshuffle_each_iteration=True)
    ds = ds.map(element, num_parallel_calls=tf.data.AUTOTUNE)
    boundaries = bucket_boundaries(feat_lengths.tolist(), config.buckets)
    ds = ds.bucket_by_sequence_length(
        element_length_func=lambda e: e["feature_lengths"],
        bucket_boundaries=boundaries,
        bucket_batch_sizes=[config.batch_size] * (len(boundaries) + 1),
        padded_shapes={"features": [None, n_feat], "labels": [None], "feature_lengths": [],
                       "label_lengths": [], "index": []},
        padding_values={"features": 0.0, "labels": 0, "feature_lengths": 0,
                        "label_lengths": 0, "index": 0},
    )
    aug = config.spec_augment
    if training and aug.enabled:
        def augment(batch):
            batch = dict(batch)
            batch["features"] = spec_augment(batch["features"], batch["feature_lengths"], aug)
            return batch

        ds = ds.map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)

"""Feature shards: features extracted once, on every core, into TFRecord files that training
streams (``batch.source: shards``), for corpora whose features do not fit in memory.

A shard set is a folder (one per manifest set: ``<data.shard_dir()>/train`` and ``/dev``)::

    shard-00000.tfrecord  one tf.train.Example per usable utterance, in manifest order
    shard-00000.json      the shard's items (lengths, manifest rows) and skipped rows
    ...
    index.json            the set: shards, items per shard, each item's frame and label
                          length, n_features, skipped rows with reasons, the digest
    cmvn.json             features.cmvn global: the statistics the features are normalised
    stats.json            with (CMVN's JSON format), and the per-shard sums they came from

A record holds ``features`` (float32 bytes, row-major ``(frames, n_features)``), ``frames``,
``n_features``, ``labels`` (int64 list), ``index`` (the row's position in the manifest rows,
the training manifests concatenated) and, with ``features.cmvn: utterance``, ``scale``
(float32 bytes: the utterance's std before CMVN, what VTLP needs).

Why TFRecord: ``tf.data`` reads it in C++ (``TFRecordDataset``, parallel interleave; no
Python and no GIL in the input pipeline), a shard is one large sequential file (kind to any
disk or network filesystem), and the format is simple enough to write without TensorFlow.

Who writes: the workers. Each worker process (``ProcessPoolExecutor``, started with *spawn*:
a fresh interpreter that never imports TensorFlow nor inherits its threads; BLAS held to one
thread) extracts one shard's rows with librosa and writes that shard itself, with
:mod:`speechrnn.tfrecord` (TFRecord framing without TensorFlow). Features never cross a
process boundary, writing scales with the cores, and the parent only plans, counts progress
and writes the index: extraction (``speechrnn data features``) needs no TensorFlow at all.

Crash safety: a shard is written to a temporary name and renamed when complete; its sidecar
``.json`` (with the set's digest) follows it the same way, and ``index.json`` comes last. A
rerun keeps every shard whose sidecar carries the current digest and whose file is whole, and
extracts the rest.

Staleness: the digest covers this format's version, the feature config (for global CMVN the
statistics themselves when they come from outside, e.g. the training set's for dev), the
alphabet, the model stride (the CTC length check), ``shard_minutes`` and the manifests' rows.
The audio files' bytes are not hashed (a file replaced under the same name goes unnoticed:
delete the shard folder).

Global CMVN, computed: a first pass sums each shard's raw features (float64 sums and sums of
squares of every readable row, as training in memory does), the sums are merged into
:class:`~speechrnn.features.CMVN` (``cmvn.json``), and the second pass writes normalised
features. With the feature cache on (``data.cache``) the second pass reads the first's.

Bad rows are skipped with the reasons :func:`speechrnn.dataset.load_examples` gives (both
use :func:`example_item`), one log line each.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import multiprocessing
import os
import signal
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from threadpoolctl import threadpool_limits

from .audio import AudioError
from .config import FeatureConfig, output_frames
from .errors import InputError
from .features import CACHE_VERSION, CMVN, FeatureExtractor, utterance_std
from .files import atomic_write, atomic_write_text
from .lexicon import recipe_targets
from .manifest import Utterance, read_manifest
from .progress import progress_bar
from .text import Alphabet, TextError, ctc_min_frames
from .tfrecord import encode_example, write_record

if TYPE_CHECKING:
    from .config import Config

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
INDEX = "index.json"


# --------------------------------------------------------------------------- one item


def example_item(row: Utterance, extractor, alphabet: Alphabet, subsampling: int = 1,
                 aux: Alphabet | None = None):
    """``(features, labels, scale, aux_labels)`` of one manifest row (``scale``: the std
    before CMVN for MFCC with utterance CMVN, else None; ``aux_labels``: the transcript in
    the auxiliary head's units ``aux``, else None). Raises :class:`AudioError` or
    :class:`TextError` for an unusable row: unreadable or silent audio, text outside the
    alphabet, a transcript longer than CTC allows (:func:`skip_reason` says why)."""
    if isinstance(extractor, FeatureExtractor) and extractor.config.cmvn == "utterance":
        raw = extractor.raw(row.audio, *row.segment)
        feats, scale = extractor.normalize(raw), utterance_std(raw)
    else:
        feats, scale = extractor(row.audio, *row.segment), None
    if np.ptp(feats, axis=0).max() < 1e-4:
        raise AudioError(row.audio, "silent audio (no signal to learn from)")
    labels = np.asarray(alphabet.encode(row.text), dtype=np.int32)
    if len(labels) == 0:
        raise TextError("empty transcript")
    aux_labels = None if aux is None else np.asarray(aux.encode(row.text), dtype=np.int32)
    frames = output_frames(len(feats), subsampling)
    need = max(ctc_min_frames(x.tolist()) for x in (labels, aux_labels) if x is not None)
    if need > frames:
        raise TextError(f"transcript too long for the audio under CTC ({need} frames "
                        f"needed, {frames} available)")
    return feats, labels, scale, aux_labels


def skip_reason(err: BaseException) -> str:
    return err.reason if isinstance(err, AudioError) else str(err)


def log_skipped(row: Utterance, reason: str) -> None:
    log.warning("skipping %s (%s): %s", row.id or "utterance", row.audio, reason)


def item_record(features: np.ndarray, labels: np.ndarray, row: int,
                scale: np.ndarray | None = None, aux_labels: np.ndarray | None = None) -> bytes:
    """One utterance's record (see the module docstring)."""
    record = {"features": np.ascontiguousarray(features, "<f4").tobytes(),
              "frames": [features.shape[0]], "n_features": [features.shape[1]],
              "labels": [int(x) for x in labels], "index": [row]}
    if scale is not None:
        record["scale"] = np.ascontiguousarray(scale, "<f4").tobytes()
    if aux_labels is not None:
        record["aux_labels"] = [int(x) for x in aux_labels]
    return encode_example(record)


# --------------------------------------------------------------------------- the set


def shard_name(number: int, suffix: str = ".tfrecord") -> str:
    return f"shard-{number:05d}{suffix}"


def plan_shards(rows: Sequence[Utterance], shard_minutes: float) -> list[tuple[int, int]]:
    """Row ranges ``[start, stop)`` of the shards: consecutive rows, about ``shard_minutes``
    of audio each (by the manifests' durations)."""
    limit, spans, start, total = 60.0 * shard_minutes, [], 0, 0.0
    for i, row in enumerate(rows):
        total += max(float(row.duration), 0.0)
        if total >= limit:
            spans.append((start, i + 1))
            start, total = i + 1, 0.0
    if start < len(rows):
        spans.append((start, len(rows)))
    return spans


def shard_digest(rows: Sequence[Utterance], features: FeatureConfig, alphabet: Alphabet,
                 stride: int, shard_minutes: float, cmvn: CMVN | str | None,
                 aux: Alphabet | None = None) -> str:
    """What a shard set is built from; ``cmvn``: the global statistics used, "computed"
    (from ``rows``) or None; ``aux``: the auxiliary labels' units."""
    if isinstance(cmvn, CMVN):
        cmvn = {"mean": cmvn.mean.tolist(), "std": cmvn.std.tolist()}
    settings = {k: v for k, v in dataclasses.asdict(features).items() if k != "cmvn_stats"}
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps([FORMAT_VERSION, CACHE_VERSION, settings, alphabet.key, stride,
                         shard_minutes, cmvn] + ([aux.key] if aux is not None else []),
                        sort_keys=True).encode())
    for row in rows:
        h.update(json.dumps(dataclasses.astuple(row), ensure_ascii=False).encode() + b"\n")
    return h.hexdigest()


def _write_json(path: Path, obj: Any) -> None:
    """Written whole or not at all (a temporary file renamed)."""
    atomic_write_text(path, json.dumps(obj, separators=(",", ":")))


def _read_json(path: Path) -> dict | None:
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


class ShardIndex:
    """An opened shard set (its ``index.json``): what :func:`speechrnn.dataset.make_dataset`
    streams. ``len()`` is the number of usable items; item ``i`` (in manifest order, the
    ``index`` of a batch) is manifest row ``item_rows[i]``. ``rows`` (the manifest rows the set
    was built from) gives ``rows`` of the items and the skipped ones' rows. ``weights``: each
    item's sampling weight in training (:func:`speechrnn.dataset.epoch_counts`; None, as
    opened: every item 1.0), set from the manifest rows' weights by :meth:`weigh`. Weights
    are not part of the set (nor of its digest): changing them extracts nothing."""

    def __init__(self, folder: str | Path, meta: dict, rows: Sequence[Utterance] | None = None):
        self.folder = Path(folder)
        self.digest: str = meta["digest"]
        self.n_features: int = int(meta["n_features"])
        self.subsampling: int = int(meta["stride"])
        self.feature_config = FeatureConfig(**meta["features"])
        self.seconds: float = float(meta["seconds"])
        self.manifest_rows: int = int(meta["rows"])
        shards = meta["shards"]
        self.shards = [{k: s[k] for k in ("file", "rows", "items", "bytes")} for s in shards]

        def flat(key):
            parts = [np.asarray(s[key], np.int64) for s in shards]
            return np.concatenate(parts) if parts else np.zeros(0, np.int64)

        self.item_rows, self.frames, self.label_lengths = \
            flat("row"), flat("frames"), flat("labels")
        self.has_aux: bool = bool(meta.get("aux"))  # records carry aux_labels
        self._skipped = meta["skipped"]
        self._source = rows
        self.weights: np.ndarray | None = None

    def weigh(self, row_weights) -> ShardIndex:
        """Give each item the sampling weight of its manifest row (``row_weights``: one per
        row the set was built from; None: every item 1.0). Returns the index itself."""
        if row_weights is None:
            self.weights = None
            return self
        row_weights = np.asarray(row_weights, np.float64)
        if len(row_weights) != self.manifest_rows:
            raise InputError(f"{self.folder}: {len(row_weights)} row weights for a shard set "
                             f"of {self.manifest_rows} manifest rows")
        self.weights = row_weights[self.item_rows]
        return self

    @classmethod
    def load(cls, folder: str | Path, rows: Sequence[Utterance] | None = None) -> ShardIndex:
        folder = Path(folder)
        meta = _read_json(folder / INDEX)
        if meta is None or meta.get("version") != FORMAT_VERSION:
            raise InputError(f"{folder}: no feature shards here (speechrnn data features "
                             "extracts them)")
        return cls(folder, meta, rows)

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def files(self) -> list[Path]:
        return [self.folder / s["file"] for s in self.shards]

    @property
    def counts(self) -> list[int]:
        return [int(s["items"]) for s in self.shards]

    @property
    def hours(self) -> float:
        return self.seconds / 3600

    @property
    def has_scales(self) -> bool:
        """Records carry the pre-CMVN std (utterance CMVN): VTLP can warp them."""
        return self.feature_config.cmvn == "utterance"

    @property
    def cmvn(self) -> CMVN | None:
        """The global statistics the features are normalised with (features.cmvn global)."""
        return CMVN.load(self.folder / "cmvn.json") if self.feature_config.cmvn == "global" \
            else None

    def complete(self) -> bool:
        """Every shard file there, with its recorded size."""
        try:
            return all((self.folder / s["file"]).stat().st_size == s["bytes"]
                       for s in self.shards)
        except OSError:
            return False

    def _need_rows(self) -> Sequence[Utterance]:
        if self._source is None:
            raise InputError(f"{self.folder}: shard index opened without its manifest rows")
        return self._source

    @property
    def rows(self) -> list[Utterance]:
        """The usable items' manifest rows, in item order."""
        source = self._need_rows()
        return [source[int(i)] for i in self.item_rows]

    @property
    def skipped(self) -> list[tuple[Utterance, str]]:
        """``(row, reason)`` of each manifest row left out."""
        out = []
        for s in self._skipped:
            if self._source is not None:
                row = self._source[s["row"]]
            else:
                row = Utterance(s["audio"], "", 0.0, id=s["id"])
            out.append((row, s["reason"]))
        return out


# --------------------------------------------------------------------------- workers


@dataclass(frozen=True)
class _Task:
    number: int
    folder: str
    start: int
    rows: tuple[Utterance, ...]
    features: FeatureConfig
    alphabet: Alphabet  # the units (a phone alphabet carries its lexicon)
    aux: Alphabet | None  # the auxiliary head's units, or None
    stride: int
    cache: str | None
    cmvn: CMVN | None
    digest: str


def _no_progress() -> None:
    pass


_tick: Callable[[], None] = _no_progress  # called once per item done (progress)
_worker_state: list = []


def _init_worker(counter) -> None:
    """In each worker process: count items into ``counter``; Ctrl-C is the parent's; one
    BLAS thread (the processes already fill the cores)."""

    global _tick

    def tick():
        with counter.get_lock():
            counter.value += 1

    _tick = tick
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker_state.append(threadpool_limits(1))


def _write_shard(task: _Task) -> dict:
    """Extract one shard's rows and write the shard, then its sidecar; its metadata."""
    folder, name = Path(task.folder), shard_name(task.number)
    extractor = FeatureExtractor(task.features, task.cache, cmvn=task.cmvn)
    alphabet = task.alphabet
    meta: dict = {"file": name, "rows": [task.start, task.start + len(task.rows)], "items": 0,
                  "seconds": 0.0, "row": [], "frames": [], "labels": [], "skipped": []}
    (folder / shard_name(task.number, ".json")).unlink(missing_ok=True)
    with atomic_write(folder / name) as f:  # whole or not at all
        for i, row in enumerate(task.rows, task.start):
            try:
                feats, labels, scale, aux_labels = example_item(row, extractor, alphabet,
                                                                task.stride, task.aux)
            except (AudioError, TextError) as err:
                meta["skipped"].append({"row": i, "id": row.id, "audio": row.audio,
                                        "reason": skip_reason(err)})
            else:
                write_record(f, item_record(feats, labels, i, scale, aux_labels))
                meta["row"].append(i)
                meta["frames"].append(len(feats))
                meta["labels"].append(len(labels))
                meta["seconds"] += float(row.duration)
            _tick()
    meta["items"] = len(meta["row"])
    meta["bytes"] = (folder / name).stat().st_size
    _write_json(folder / shard_name(task.number, ".json"), {"digest": task.digest, **meta})
    return meta


def _shard_sums(task: _Task) -> dict:
    """Sums and sums of squares (float64) of the raw features of one shard's readable rows."""
    extractor = FeatureExtractor(dataclasses.replace(task.features, cmvn="none",
                                                     cmvn_stats=None), task.cache)
    n = task.features.n_features
    total, sq, count = np.zeros(n), np.zeros(n), 0
    for row in task.rows:
        try:
            x = np.asarray(extractor.raw(row.audio, *row.segment), dtype=np.float64)
        except AudioError:
            pass  # reported by the second pass
        else:
            total += x.sum(0)
            sq += (x * x).sum(0)
            count += len(x)
        _tick()
    return {"frames": count, "sum": total.tolist(), "sumsq": sq.tolist()}


def merge_sums(parts: Sequence[dict]) -> CMVN:
    """Global CMVN from per-shard sums (:func:`_shard_sums`)."""
    total = sq = None
    for p in parts:  # in shard order
        s, s2 = np.asarray(p["sum"], np.float64), np.asarray(p["sumsq"], np.float64)
        total, sq = (s, s2) if total is None else (total + s, sq + s2)
    return CMVN.from_sums(total, sq, sum(int(p["frames"]) for p in parts))


def _run(fn: Callable[[_Task], dict], tasks: list[_Task], workers: int, bar) -> list[dict]:
    """``fn`` of every task, in order: in this process for one worker, else in ``workers``
    spawned processes; ``bar`` counts items as the workers finish them."""
    global _tick
    if workers <= 1 or len(tasks) <= 1:
        previous, _tick = _tick, lambda: bar.update(1)
        try:
            return [fn(task) for task in tasks]
        finally:
            _tick = previous
    ctx = multiprocessing.get_context("spawn")  # no TensorFlow, no inherited threads
    counter = ctx.Value("q", 0)
    results: list[Any] = [None] * len(tasks)
    pool = ProcessPoolExecutor(min(workers, len(tasks)), mp_context=ctx,
                               initializer=_init_worker, initargs=(counter,))
    try:
        futures = {pool.submit(fn, task): k for k, task in enumerate(tasks)}
        pending, seen = set(futures), 0
        while pending:
            done, pending = wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)
            for future in done:
                results[futures[future]] = future.result()
            now = counter.value
            bar.update(now - seen)
            seen = now
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return results


# --------------------------------------------------------------------------- building


def _global_stats(folder: Path, tasks: list[_Task], digest: str, workers: int,
                  progress: bool | None, desc: str) -> CMVN:
    """First pass: per-shard sums of the raw features, merged; kept in ``stats.json`` (and
    ``cmvn.json``) so that a rerun after a crash does not repeat it."""
    saved = _read_json(folder / "stats.json")
    if saved is not None and saved.get("digest") == digest:
        parts = saved["shards"]
    else:
        with progress_bar(sum(len(t.rows) for t in tasks), f"{desc} (CMVN statistics)",
                          progress) as bar:
            parts = _run(_shard_sums, tasks, workers, bar)
        _write_json(folder / "stats.json", {"digest": digest, "shards": parts})
    cmvn = merge_sums(parts)
    cmvn.save(folder / "cmvn.json")
    return cmvn


def _finished(folder: Path, number: int, digest: str) -> dict | None:
    """A shard's sidecar, if the shard is there, whole, and built from ``digest``."""
    meta = _read_json(folder / shard_name(number, ".json"))
    if meta is None or meta.get("digest") != digest:
        return None
    try:
        whole = (folder / meta["file"]).stat().st_size == meta["bytes"]
    except (OSError, KeyError):
        return None
    return meta if whole else None


@dataclass(frozen=True)
class ShardSpec:
    """What a shard set's records hold (and so what its digest covers besides the rows)."""

    features: FeatureConfig = FeatureConfig()
    alphabet: Alphabet = dataclasses.field(default_factory=Alphabet)  # the labels' units
    stride: int = 1  # the model's time stride (the CTC length check)
    shard_minutes: float = 30.0  # audio per shard file
    # with features.cmvn global: the statistics to normalise with (None: computed from the
    # rows by a first pass); ignored otherwise
    cmvn: CMVN | None = None
    aux: Alphabet | None = None  # the auxiliary labels' units (None: no auxiliary labels)

    @property
    def computed_cmvn(self) -> bool:
        return self.features.cmvn == "global" and self.cmvn is None

    def digest(self, rows: Sequence[Utterance]) -> str:
        cmvn = self.cmvn if self.features.cmvn == "global" else None
        return shard_digest(rows, self.features, self.alphabet, self.stride,
                            self.shard_minutes, "computed" if self.computed_cmvn else cmvn,
                            self.aux)


def build_shards(rows: Sequence[Utterance], folder: str | Path, spec: ShardSpec = ShardSpec(),
                 *, cache: str | None = None, workers: int | None = None,
                 progress: bool | None = None, desc: str = "features",
                 build: bool = True) -> ShardIndex | None:
    """Extract the features of ``rows`` into a shard set in ``folder`` as ``spec`` says,
    unless a current one is there (only missing or stale shards are extracted); return its
    index.

    ``cache``: the feature cache folder. ``workers``: processes (None: every core).
    ``progress``: a bar of utterances done. ``build=False``: only look (a worker waiting
    for the chief's shards): None unless a current set is there.
    """
    folder = Path(folder)
    digest = spec.digest(rows)
    meta = _read_json(folder / INDEX)
    if meta is not None and meta.get("version") == FORMAT_VERSION and \
            meta.get("digest") == digest:
        index = ShardIndex(folder, meta, rows)
        if index.complete():
            return index
    if not build:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    (folder / INDEX).unlink(missing_ok=True)
    workers = workers or os.cpu_count() or 1
    spans = plan_shards(rows, spec.shard_minutes)

    def task(number: int, stats: CMVN | None) -> _Task:
        start, stop = spans[number]
        return _Task(number, str(folder), start, tuple(rows[start:stop]), spec.features,
                     spec.alphabet, spec.aux, spec.stride, cache, stats, digest)

    cmvn = spec.cmvn if spec.features.cmvn == "global" else None
    if spec.computed_cmvn:
        cmvn = _global_stats(folder, [task(k, None) for k in range(len(spans))], digest,
                             workers, progress, desc)
    shards = [_finished(folder, k, digest) for k in range(len(spans))]
    todo = [k for k, meta in enumerate(shards) if meta is None]
    with progress_bar(len(rows), desc, progress) as bar:
        bar.update(len(rows) - sum(spans[k][1] - spans[k][0] for k in todo))
        for k, meta in zip(todo, _run(_write_shard, [task(k, cmvn) for k in todo], workers,
                                      bar)):
            shards[k] = meta
            for s in meta["skipped"]:
                log_skipped(rows[s["row"]], s["reason"])
    _tidy(folder, len(spans), spec, cmvn)
    meta = _index_meta(spec, digest, len(rows), shards)
    _write_json(folder / INDEX, meta)
    return ShardIndex(folder, meta, rows)


def _tidy(folder: Path, n_shards: int, spec: ShardSpec, cmvn: CMVN | None) -> None:
    """Remove what is not part of the set (shards of an earlier plan, temporary files);
    keep the statistics the features were normalised with in ``cmvn.json``."""
    keep = {INDEX, "cmvn.json", "stats.json"} | {shard_name(k, suffix) for k in range(n_shards)
                                                   for suffix in (".tfrecord", ".json")}
    for path in folder.iterdir():
        if path.is_file() and path.name not in keep and path.name.startswith((".tmp-",
                                                                                "shard-")):
            path.unlink(missing_ok=True)
    if not spec.computed_cmvn:  # computed statistics were saved by the first pass
        (folder / "stats.json").unlink(missing_ok=True)
        if cmvn is None:
            (folder / "cmvn.json").unlink(missing_ok=True)
        else:
            cmvn.save(folder / "cmvn.json")


def _index_meta(spec: ShardSpec, digest: str, n_rows: int, shards: list[dict]) -> dict:
    """``index.json``: the set's settings, each shard's items and the skipped rows."""
    return {"version": FORMAT_VERSION, "digest": digest,
            "features": dataclasses.asdict(spec.features), "alphabet": spec.alphabet.key,
            "aux": spec.aux.key if spec.aux is not None else None,
            "stride": spec.stride, "shard_minutes": spec.shard_minutes,
            "n_features": spec.features.n_features, "rows": n_rows,
            "items": sum(s["items"] for s in shards),
            "seconds": sum(s["seconds"] for s in shards),
            "shards": [{k: v for k, v in s.items() if k not in ("digest", "skipped",
                                                                 "seconds")}
                       for s in shards],
            "skipped": [s for shard in shards for s in shard["skipped"]]}


def config_shards(cfg: Config, rows: dict[str, list[Utterance]] | None = None,
                  workers: int | None = None, progress: bool | None = None,
                  alphabet: Alphabet | None = None, build: bool = True,
                  aux: Alphabet | None = None) -> dict[str, ShardIndex] | None:
    """The train and dev shard sets of a pipeline config, under ``cfg.data.shard_dir()``
    (``train``: every training manifest, ``dev``), built when missing or stale. ``rows``:
    the manifests' rows when already read. With global CMVN, dev is normalised with the
    training set's statistics (``features.cmvn_stats``, or computed from the shards).
    ``build=False``: None unless both sets are there and current. ``alphabet``: the
    units the labels are in, ``aux`` those of the training set's auxiliary labels (None:
    the recipe's, :func:`speechrnn.lexicon.recipe_targets`)."""
    if rows is None:
        rows = {"train": [r for p in cfg.data.training_manifests() for r in read_manifest(p)],
                "dev": read_manifest(cfg.data.manifest("dev"))}
    if alphabet is None:
        alphabet, aux = recipe_targets(cfg, progress=progress is not False)
    spec = ShardSpec(cfg.features, alphabet, cfg.model.stride, cfg.data.shard_minutes)
    run = {"cache": cfg.data.cache or None, "workers": workers, "progress": progress,
           "build": build}
    stats = CMVN.load(cfg.features.cmvn_stats) \
        if cfg.features.cmvn == "global" and cfg.features.cmvn_stats else None
    root = cfg.data.shard_dir()
    train = build_shards(rows["train"], root / "train",
                         dataclasses.replace(spec, cmvn=stats, aux=aux),
                         desc="train features", **run)
    dev = train and build_shards(rows["dev"], root / "dev",
                                 dataclasses.replace(spec, cmvn=train.cmvn),
                                 desc="dev features", **run)
    return {"train": train, "dev": dev} if dev else None

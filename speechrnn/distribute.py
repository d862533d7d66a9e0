"""Scale-out: training on one device, on the GPUs of one machine, or on several machines.

A thin layer over ``tf.distribute``:

- one device (the default): TensorFlow's default strategy, the training loop as it is;
- ``MirroredStrategy``: every GPU of this machine holds a replica of the model;
- ``MultiWorkerMirroredStrategy``: one process per machine (or per GPU host), configured
  by ``TF_CONFIG`` (``{"cluster": {"worker": ["host:port", ...]}, "task": {"type":
  "worker", "index": i}}``) or by ``speechrnn train --workers host:port,... --worker-index
  i`` (:func:`set_cluster`).

``train.batch_size`` is the *global* batch: every worker reads the same batches (their
order depends only on the seed and the epoch) and each replica takes its share of every
batch (items ``r, r + n, ...`` for replica ``r`` of ``n``); the per-replica CTC losses are
summed and divided by the global batch size, so the loss and gradients are those of one
device with the same batch. Worker 0 is the chief: only it logs to MLflow, writes
checkpoints and the model, and registers it; every worker resumes from the chief's
checkpoint (the work directory must be on a shared file system).
"""

from __future__ import annotations

import json
import logging
import os
import socket
from dataclasses import dataclass

from .config import Config
from .errors import InputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Cluster:
    """This process's place in a training cluster (one worker, index 0, when alone)."""

    workers: tuple[str, ...] = ()
    index: int = 0

    @property
    def size(self) -> int:
        return max(1, len(self.workers))

    @property
    def is_chief(self) -> bool:
        return self.index == 0

    @classmethod
    def from_env(cls) -> Cluster:
        """The cluster ``TF_CONFIG`` describes (none set: a cluster of one)."""
        raw = os.environ.get("TF_CONFIG")
        if not raw:
            return cls()
        try:
            spec = json.loads(raw)
            workers = tuple(spec["cluster"].get("chief", []) + spec["cluster"]["worker"])
            task = spec.get("task", {})
            index = int(task.get("index", 0)) + (
                len(spec["cluster"].get("chief", [])) if task.get("type") == "worker" else 0)
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise InputError(f"TF_CONFIG is not a valid cluster description ({err})") from None
        if not 0 <= index < len(workers):
            raise InputError(f"TF_CONFIG: task index {index} is not among the "
                             f"{len(workers)} workers")
        return cls(workers, index)


def set_cluster(workers: list[str] | tuple[str, ...], index: int) -> Cluster:
    """Describe a cluster in ``TF_CONFIG`` (what ``--workers`` / ``--worker-index`` do)."""
    workers = tuple(w.strip() for w in workers if w.strip())
    if not workers or not 0 <= index < len(workers):
        raise InputError(f"--worker-index {index} is not among the {len(workers)} workers "
                         "given by --workers")
    os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": list(workers)},
                                          "task": {"type": "worker", "index": index}})
    return Cluster(workers, index)


def local_workers(n: int) -> list[str]:
    """``n`` worker addresses on this machine (127.0.0.1 and a free port each): a cluster
    to try multi-worker training on one machine."""

    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [f"127.0.0.1:{s.getsockname()[1]}" for s in sockets]
    finally:
        for s in sockets:
            s.close()


def strategy_kind(cfg: Config, cluster: Cluster | None = None, gpus: int | None = None) -> str:
    """``none``, ``mirrored`` or ``multi_worker``: what ``train.distribute`` asks for here."""
    cluster = cluster or Cluster.from_env()
    if cfg.train.distribute != "auto":
        if cfg.train.distribute == "multi_worker" and cluster.size < 2:
            raise InputError("train.distribute: multi_worker needs a cluster of two or more "
                             "workers (TF_CONFIG, or --workers and --worker-index)")
        return cfg.train.distribute
    if cluster.size > 1:
        return "multi_worker"
    if gpus is None:
        import tensorflow as tf

        gpus = len(tf.config.list_physical_devices("GPU"))
    return "mirrored" if gpus > 1 else "none"


def make_strategy(cfg: Config):
    """The ``tf.distribute`` strategy ``cfg`` asks for on this machine. Create it before
    any other TensorFlow work: a multi-worker strategy must start the collective runtime
    first."""
    import tensorflow as tf

    kind = strategy_kind(cfg)
    if kind == "multi_worker":
        cluster = Cluster.from_env()
        print(f"worker {cluster.index} of {cluster.size} ({', '.join(cluster.workers)}): "
              "waiting for every worker to start (TF_CONFIG)", flush=True)
        return tf.distribute.MultiWorkerMirroredStrategy()
    if kind == "mirrored":
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def describe(strategy) -> dict:
    """What a run logs about how it was distributed."""
    import tensorflow as tf

    multi = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    cluster = Cluster.from_env() if multi else Cluster()
    name = "MultiWorkerMirroredStrategy" if multi else "MirroredStrategy" if isinstance(
        strategy, tf.distribute.MirroredStrategy) else "one device"
    return {"strategy": name, "replicas": strategy.num_replicas_in_sync,
            "workers": cluster.size, "worker_index": cluster.index,
            "gpus": len(tf.config.list_physical_devices("GPU"))}


def is_chief(strategy) -> bool:
    """Whether this process logs, checkpoints and exports (always, without a cluster)."""
    import tensorflow as tf

    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return Cluster.from_env().is_chief
    return True


def split_batch(strategy, batch: dict):
    """Each replica's share of a global batch: items ``r, r + n, ...`` for replica ``r`` of
    ``n``, with a ``weight`` per item. A batch whose size is not a multiple of ``n`` is
    filled up with copies of its first item of weight 0, so that every replica has the same
    number of items (and none has none). With one replica, the batch as it is."""
    import tensorflow as tf

    n = strategy.num_replicas_in_sync
    if n == 1:
        return batch
    size = int(batch["features"].shape[0])
    fill = -size % n
    weight = tf.concat([tf.ones([size]), tf.zeros([fill])], 0)
    if fill:
        batch = {k: tf.concat([v, tf.repeat(v[:1], fill, axis=0)], 0) for k, v in batch.items()}
    batch = {**batch, "weight": weight}

    def share(context):
        r = context.replica_id_in_sync_group
        return {k: v[r::n] for k, v in batch.items()}

    return strategy.experimental_distribute_values_from_function(share)

"""Reliability: the faults training survives, each injected on purpose and counted.

    python bench/reliability.py [--cases name,...] [--quick] [--json bench/results/reliability.json]

Each entry of ``CASES`` injects one kind of fault ``tries`` times and returns a row:
``survived`` (the promise held), ``lost`` (saved work that could not be used afterwards)
and a note. Training rows, on the tiny synthetic corpus (espeak-ng, under
data/bench/reliability) and a tiny model:

- ``concurrent``: two ``speechrnn train`` on one work directory: the second must stop at
  once, naming the first's pid; the first must finish; lost = 0 when its checkpoint and
  model load afterwards;
- ``kill_checkpoint``: a process saving checkpoints in a loop (``Checkpointer.save``, 36 MB
  of arrays each) is SIGKILLed at a random moment, 10 times (3 with ``--quick``); survived:
  a checkpoint restores afterwards, every array from the same save; lost: restores that fail;
- ``full_disk``: a checkpoint, the best model and the feature cache (a ``speechrnn train``)
  written onto a small tmpfs filled up (``mount -t tmpfs``, as root; where that fails the
  full disk is simulated: ENOSPC raised as the folder is committed); survived: a one-line
  error saying "no space left on device", no temporary left, and the previous checkpoint
  or model intact.

Serving row, on the main job's model (``--model``, default runs/synth/model):

- ``serve_soak``: 500 requests (``--requests``), 20 at once (``--concurrency``), half good
  (test audio, each answer checked against the local transcript), half bad: malformed
  JSON, wrong columns, non-base64, 30 MB of base64, non-audio, NaN audio, zero-length
  audio, 2 hours of audio, 10 s of white noise (must give no words); a 503 (busy) is retried
  after its Retry-After. Survived: the expected answer and the server still answering;
  lost: good requests not answered right. The server's RSS (with its children) after
  warm-up, at its peak and after the soak is in the note; after/warm-up must stay <= 1.2.

``--cases`` takes the names above (default: all). Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import errno
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("SPEECHRNN_PROGRESS", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
from report import print_table, write_report  # noqa: E402
from serve_load import descendants, free_port, rss_mb, wait_for  # noqa: E402, F401

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "data" / "bench" / "reliability"
TINY = {"model": {"conv_filters": 16, "lstm_layers": 1, "lstm_units": 16, "dropout": 0.0},
        "batch": {"batch_size": 4, "buckets": 1}}


# --------------------------------------------------------------------------- helpers


def corpus() -> Path:
    """The tiny synthetic corpus (16 train, 4 dev, 4 test utterances), built once."""
    from speechrnn import pipeline
    from speechrnn.config import Config, DataConfig

    out = WORK / "corpus"
    pipeline.prepare(Config(data=DataConfig(kind="synth", out=str(out), synth_train=16,
                                            synth_dev=4, synth_test=4)), progress=False)
    return out


def write_config(name: str, epochs: int, cache: str = "") -> Path:
    import yaml

    path = WORK / "configs" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({
        "name": name, **TINY,
        "data": {"kind": "synth", "out": str(WORK / "corpus"), "synth_train": 16,
                 "synth_dev": 4, "synth_test": 4, "cache": cache},
        "train": {"epochs": epochs, "learning_rate": 0.003,
                  "workdir": str(WORK / "runs" / name)},
        "tracking": {"enabled": False}}))
    return path


def speechrnn_train(config: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("TF_CONFIG", None)
    return subprocess.Popen([sys.executable, "-m", "speechrnn", "train", "--config",
                             str(config), "--quiet", *extra], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


class Variable:
    """What a checkpoint needs of a TensorFlow variable, on numpy: no TensorFlow start-up
    in each process that is killed."""

    def __init__(self, name: str, shape: tuple):
        self.name, self.value = name, np.zeros(shape, np.float32)

    @property
    def shape(self):
        return self.value.shape

    def numpy(self):
        return self.value

    def assign(self, value):
        self.value = np.asarray(value, np.float32)


def fake_state(megabytes: float = 36.0):
    """A model (``.weights``) and optimizer variables: a third and two thirds of
    ``megabytes`` of float32 arrays, as Adam keeps two moments per weight."""
    import types

    rows = max(1, int(megabytes * 2**20 / 4 / 6 / 1024))
    weights = [Variable(f"w{i}", (rows, 1024)) for i in range(2)]
    moments = [Variable(f"m{i}", (rows, 1024)) for i in range(4)]
    return types.SimpleNamespace(weights=weights), moments


def fill(model, variables, value: float) -> None:
    for v in (*model.weights, *variables):
        v.assign(np.full(v.shape, value, np.float32))


def restored(folder: Path, megabytes: float) -> tuple[bool, str]:
    """Does a checkpoint restore from ``folder``, every array from the same save?"""
    from speechrnn.checkpoint import Checkpointer, TrainError

    model, variables = fake_state(megabytes)
    fill(model, variables, -1.0)
    try:
        state = Checkpointer(folder).restore(model, variables, "bench")
    except TrainError as err:
        return False, str(err)
    if state is None:
        return False, "no checkpoint"
    whole = all(np.all(v.value == state.epoch) for v in (*model.weights, *variables))
    return whole, "" if whole else f"arrays of another save than epoch {state.epoch}"


def short(message: str, length: int = 100) -> str:
    """An error message with the bench's folder left out, cut at ``length``."""
    message = " ".join(message.replace(f"{WORK}/", "").split())
    return message if len(message) <= length else message[:length - 3] + "..."


def temporaries(folder: Path) -> list[str]:
    return [str(p.relative_to(folder)) for p in folder.rglob(".tmp-*")]


def saver(folder: str, megabytes: str) -> None:
    """The child of ``kill_checkpoint``: save checkpoints in a loop, saying when each
    starts and ends."""
    from speechrnn.checkpoint import Checkpointer, TrainState

    model, variables = fake_state(float(megabytes))
    checkpoints = Checkpointer(Path(folder))
    for epoch in range(1, 10**6):
        fill(model, variables, float(epoch))
        print(f"start {epoch}", flush=True)
        checkpoints.save(model, variables, TrainState(epoch=epoch, config_digest="bench"))
        print(f"saved {epoch}", flush=True)


# --------------------------------------------------------------------------- the cases


def concurrent(args) -> dict:
    """Two trainings on one work directory."""
    quick = args.quick
    corpus()
    config = write_config("concurrent", epochs=5 if quick else 8)
    workdir = WORK / "runs" / "concurrent"
    first = speechrnn_train(config, "--fresh")
    lock = workdir / "train.lock"
    deadline = time.monotonic() + 300
    while not (lock.exists() and lock.read_text().strip()) and first.poll() is None:
        if time.monotonic() > deadline:
            first.kill()
            break
        time.sleep(0.2)
    start = time.monotonic()
    second = speechrnn_train(config)
    _, err = second.communicate(timeout=300)
    seconds = time.monotonic() - start
    running = first.poll() is None
    _, first_err = first.communicate(timeout=900)
    refused = second.returncode == 2 and f"pid {first.pid}" in err and \
        "in use by another training" in err and running
    finished = first.returncode == 0
    usable, why = model_and_checkpoint_usable(workdir)
    message = (err.strip().splitlines() or [""])[-1]
    note = (f"second: exit {second.returncode} after {seconds:.1f} s (process start "
            f"included), first still running: {running}; first: exit {first.returncode}"
            + ("" if usable else f"; unusable: {why}") + f" | {short(message, 160)}")
    if not finished:
        note += f" | first: {first_err.strip()[-300:]}"
    return {"case": "two concurrent trainings on one workdir", "tries": 1,
            "survived": int(refused and finished), "lost": int(not usable), "note": note}


def model_and_checkpoint_usable(workdir: Path) -> tuple[bool, str]:
    from speechrnn.checkpoint import _read_arrays, _read_state
    from speechrnn.model import load_network

    try:
        model, *_ = load_network(workdir / "model")
        state = _read_state(workdir / "checkpoints" / "last")
        _read_arrays(workdir / "checkpoints" / "last" / "weights.npz", model.weights, "weights")
    except Exception as err:  # anything that stops a rerun from using them
        return False, f"{type(err).__name__}: {err}"
    return state.finished, "" if state.finished else "the last checkpoint is not finished"


def kill_checkpoint(args) -> dict:
    """SIGKILL while Checkpointer.save writes."""
    quick = args.quick
    tries, megabytes = (3 if quick else 10), 36.0
    rng = random.Random(19)
    survived = lost = inside = 0
    left, failures = 0, []
    for i in range(tries):
        folder = WORK / "kill" / f"try{i}"
        shutil.rmtree(folder, ignore_errors=True)
        child = subprocess.Popen([sys.executable, __file__, "--saver", str(folder),
                                  str(megabytes)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        lines = [child.stdout.readline() for _ in range(2)]  # start 1, saved 1
        t0 = time.monotonic()
        child.stdout.readline()  # start 2
        child.stdout.readline()  # saved 2: how long a save takes
        save_seconds = time.monotonic() - t0
        time.sleep(rng.uniform(0, 2 * save_seconds))
        child.send_signal(signal.SIGKILL)
        out, _ = child.communicate()
        lines += out.splitlines()
        last = next((ln for ln in reversed(lines) if ln.strip()), "")
        inside += last.startswith("start")
        left += len(temporaries(folder))
        ok, why = restored(folder, megabytes)
        survived += ok
        lost += not ok
        if not ok:
            failures.append(why)
    note = (f"{inside} of {tries} kills inside a save; {left} temporary folders left "
            "(removed by the next save)")
    if failures:
        note += "; " + "; ".join(failures)[:300]
    return {"case": "kill during checkpoint save", "tries": tries, "survived": survived,
            "lost": lost, "note": note}


def error_of(action, undo) -> str:
    """The TrainError ``action`` raises (or "no error"); ``undo`` (if any) afterwards."""
    from speechrnn.checkpoint import TrainError

    try:
        action()
        return "no error"
    except TrainError as err:
        return str(err)
    finally:
        if undo:
            undo()


@contextlib.contextmanager
def small_disk(folder: Path, megabytes: int):
    """``folder`` on a tmpfs of ``megabytes`` (True), or a plain folder (False) where
    mounting is not allowed."""
    if os.path.ismount(folder):  # left by a run that crashed
        subprocess.run(["umount", str(folder)], check=False)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    mounted = os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(folder)],
        capture_output=True).returncode == 0
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", str(folder)], check=False)
        shutil.rmtree(folder, ignore_errors=True)


def fill_up(folder: Path, leave: int) -> None:
    """Take the free space of ``folder``'s file system but ``leave`` bytes."""
    free = shutil.disk_usage(folder).free
    with open(folder / "filler", "wb") as f:
        f.write(b"\0" * max(0, free - leave))


def simulated_full_disk():
    """Where there is no small disk to fill: ENOSPC as a folder is committed."""
    import speechrnn.files as files

    def full(folder):
        raise OSError(errno.ENOSPC, "No space left on device")

    real = files._fsync_tree
    files._fsync_tree = full
    return lambda: setattr(files, "_fsync_tree", real)


def full_disk(args) -> dict:
    """No space left while checkpointing, saving the best model and caching features."""
    from speechrnn.checkpoint import Checkpointer, TrainState

    results, notes = [], []
    folder = WORK / "small-disk"
    with small_disk(folder, 64) as mounted:
        # 1. a checkpoint: the next one does not fit
        megabytes = 12.0
        model, variables = fake_state(megabytes)
        checkpoints = Checkpointer(folder / "checkpoints")
        fill(model, variables, 1.0)
        checkpoints.save(model, variables, TrainState(epoch=1, config_digest="bench"))
        undo = None
        if mounted:
            fill_up(folder, int(megabytes * 2**20 / 2))
        else:
            undo = simulated_full_disk()
        fill(model, variables, 2.0)
        error = error_of(lambda: checkpoints.save(
            model, variables, TrainState(epoch=2, config_digest="bench")), undo)
        ok, why = restored(folder / "checkpoints", megabytes)
        clear = "no space left on device" in error and "intact" in error
        results.append((clear and ok and not temporaries(folder), not ok))
        notes.append(f"checkpoint: {short(error)}" + ("" if ok else f" ({why})"))
        (folder / "filler").unlink(missing_ok=True)

        # 2. the best model (save_best, as training calls it)
        results.append(best_model_on_full_disk(folder, mounted, notes))
        (folder / "filler").unlink(missing_ok=True)

        # 3. the feature cache, in a whole `speechrnn train`
        if mounted:
            results.append(cache_on_full_disk(folder, notes))
    tries = len(results)
    return {"case": "full disk" + ("" if mounted else " (simulated ENOSPC)"), "tries": tries,
            "survived": sum(ok for ok, _ in results), "lost": sum(bad for _, bad in results),
            "note": " | ".join(notes)}


def best_model_on_full_disk(folder: Path, mounted: bool, notes: list) -> tuple[bool, bool]:
    import types

    from speechrnn.config import Config, ModelConfig, TrainConfig
    from speechrnn.model import build_model, load_network
    from speechrnn.text import Alphabet
    from speechrnn.train import save_best

    cfg = Config(model=ModelConfig(conv_filters=64, lstm_layers=2, lstm_units=128),
                 train=TrainConfig(workdir=str(folder / "run")))
    job = types.SimpleNamespace(cfg=cfg, model=build_model(cfg.model, 39, Alphabet()),
                                data=types.SimpleNamespace(alphabet=Alphabet()),
                                best_dir=folder / "run" / "best")
    rates = types.SimpleNamespace(wer=0.5, cer=0.25)
    save_best(job, types.SimpleNamespace(epoch=0), rates, [])
    size = sum(p.stat().st_size for p in job.best_dir.iterdir())
    undo = None
    if mounted:
        fill_up(folder, size // 2)
    else:
        undo = simulated_full_disk()
    error = error_of(lambda: save_best(job, types.SimpleNamespace(epoch=1), rates, []), undo)
    try:
        intact = load_network(job.best_dir)[3]["epoch"] == 0
    except Exception as err:
        intact, error = False, f"{error}; the model does not load: {err}"
    clear = "no space left on device" in error and "intact" in error
    notes.append(f"best model: {short(error)}")
    return clear and intact and not temporaries(folder), not intact


def cache_on_full_disk(folder: Path, notes: list) -> tuple[bool, bool]:
    corpus()
    cache = folder / "cache"
    config = write_config("full-disk", epochs=1, cache=str(cache))
    cache.mkdir()
    fill_up(folder, 100 * 1024)  # room for a few of the corpus's features
    proc = speechrnn_train(config, "--fresh")
    _, err = proc.communicate(timeout=600)
    message = (err.strip().splitlines() or [""])[-1]
    clear = proc.returncode == 2 and "no space left on device" in message
    notes.append(f"feature cache: exit {proc.returncode}: {short(message)}")
    return clear and not temporaries(cache), False


# --------------------------------------------------------------------------- serving


def _audio(seconds: float, sr: int = 16000, fill=None, subtype="PCM_16") -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    data = rng.normal(0, 0.1, int(seconds * sr)) if fill is None else \
        np.full(int(seconds * sr), fill)
    sf.write(buf, data.astype(np.float32), sr, format="WAV", subtype=subtype)
    return buf.getvalue()


def _frame(*items: bytes) -> bytes:
    return json.dumps({"dataframe_split": {"columns": ["audio"], "data": [
        [base64.b64encode(x).decode()] for x in items]}}).encode()


def _post(url: str, body: bytes, retries: int = 20) -> tuple[int, str, int]:
    """(status, body, 503s seen): a 503 (server busy) is retried after its Retry-After."""
    busy = 0
    for _ in range(retries):
        request = urllib.request.Request(url, data=body,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=300) as r:
                return r.status, r.read().decode(), busy
        except urllib.error.HTTPError as err:
            if err.code != 503:
                return err.code, err.read().decode(), busy
            busy += 1
            time.sleep(float(err.headers.get("Retry-After", 1)) * random.random())
        except (urllib.error.URLError, ConnectionError) as err:
            return -1, str(err), busy
    return 503, "busy", busy


def serve_soak(args) -> dict:
    """At least 500 requests, 20 at once, good and bad mixed, against one server: every good
    request answered with the local transcript, every bad one a 4xx or an error in its
    row, the server alive throughout, its RSS after the soak near that after warm-up."""
    import speechrnn
    from speechrnn.manifest import read_manifest

    rows = read_manifest(args.manifest)[:40]
    good = [Path(r.audio).read_bytes() for r in rows]
    local = speechrnn.load_model(args.model)
    expected = [local.transcribe(r.audio).text for r in rows]
    bad = {  # body, what a survivor answers: a 4xx, or 200 with an error in the item's row
        "malformed JSON": b'{"dataframe_split": {"columns": ["audio"], "data": [[',
        "wrong columns": json.dumps({"dataframe_split": {"columns": ["sound"],
                                                          "data": [["eA=="]]}}).encode(),
        "not base64": json.dumps({"dataframe_split": {"columns": ["audio"],
                                                       "data": [["%%%not base64%%%"]]}}).encode(),
        "huge base64 (30 MB)": _frame(os.urandom(30 * 1024 * 1024 // 4 * 3)),
        "not audio": _frame(os.urandom(50_000)),
        "NaN audio": _frame(_audio(1.0, fill=np.nan, subtype="FLOAT")),
        "zero-length audio": _frame(_audio(0.0)),
        "2-hour audio": _frame(_audio(7200, sr=1000, fill=0.0, subtype="PCM_U8")),
        "white noise (10 s)": _frame(_audio(10.0)),
    }
    plan = []
    rng = random.Random(0)
    for i in range(args.requests):
        if i % 2 == 0:
            k = rng.randrange(len(good))
            plan.append(("good", k))
        else:
            plan.append(("bad", rng.choice(sorted(bad))))
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "speechrnn", "serve", "--model",
                             str(args.model), "--port", str(port)], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/invocations"
    samples: list[float] = []
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            samples.append(rss_mb(proc.pid))
            time.sleep(0.2)

    try:
        wait_for(f"http://127.0.0.1:{port}/ping", proc)
        for body in good[:20]:  # warm-up
            _post(url, _frame(body))
        warm = rss_mb(proc.pid)
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()

        def one(item):
            kind, key = item
            status, text, busy = _post(url, _frame(good[key]) if kind == "good" else bad[key])
            if kind == "good":
                ok = status == 200 and json.loads(text)["predictions"][0]["text"] == \
                    expected[key]
            elif key == "white noise (10 s)":
                ok = status == 200 and json.loads(text)["predictions"][0]["text"] == ""
            else:
                ok = 400 <= status < 500 or (status == 200 and all(
                    p["error"] for p in json.loads(text)["predictions"]))
            return kind, key, ok, busy

        with ThreadPoolExecutor(args.concurrency) as pool:
            results = list(pool.map(one, plan))
        stop.set()
        sampler.join()
        after = rss_mb(proc.pid)
        alive = proc.poll() is None and _post(url, _frame(good[0]))[0] == 200
    finally:
        stop.set()
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    failed = [f"{k}" for kind, k, ok, _ in results if not ok]
    lost = sum(1 for kind, _, ok, _ in results if kind == "good" and not ok)
    return {"case": "serve soak (mixed, 20 at once)", "tries": len(results),
            "survived": sum(ok for *_, ok, _ in results) if alive else 0, "lost": lost,
            "note": f"RSS warm {warm:.0f} MB, after {after:.0f} MB (x{after / warm:.2f}), "
                    f"peak {max(samples, default=after):.0f} MB; 503 retried "
                    f"{sum(r[3] for r in results)}x; failed: "
                    f"{', '.join(sorted(set(failed))) or 'none'}",
            "rss_warm_mb": round(warm, 1), "rss_after_mb": round(after, 1),
            "rss_peak_mb": round(max(samples, default=after), 1),
            "rss_ratio": round(after / warm, 3)}


CASES = [concurrent, kill_checkpoint, full_disk, serve_soak]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default="",
                        help="comma-separated: " + ", ".join(c.__name__ for c in CASES))
    parser.add_argument("--quick", action="store_true", help="fewer tries")
    parser.add_argument("--model", default="runs/synth/model",
                        help="serve_soak: a model trained with tracking on (the main job's)")
    parser.add_argument("--manifest", type=Path, default=Path("data/synth/test.jsonl"),
                        help="serve_soak: the good requests' audio")
    parser.add_argument("--requests", type=int, default=500, help="serve_soak: requests")
    parser.add_argument("--concurrency", type=int, default=20, help="serve_soak: at once")
    parser.add_argument("--json", type=Path, default=Path("bench/results/reliability.json"))
    parser.add_argument("--saver", nargs=2, help=argparse.SUPPRESS)  # kill_checkpoint's child
    args = parser.parse_args(argv)
    if args.saver:
        saver(*args.saver)
        return 0
    names = [n.strip() for n in args.cases.split(",") if n.strip()]
    known = {c.__name__: c for c in CASES}
    unknown = [n for n in names if n not in known]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; known: {', '.join(known)}")
    rows = []
    for case in [known[n] for n in names] if names else CASES:
        start = time.monotonic()
        rows.append(case(args))
        print(f"{rows[-1]['case']}: {rows[-1]['survived']}/{rows[-1]['tries']} survived, "
              f"{rows[-1]['lost']} lost ({time.monotonic() - start:.0f} s)", flush=True)
    print()
    print_table([("case", "case", 42), ("tries", "tries", 7), ("survived", "survived", 10),
                 ("lost", "lost", 6)], rows)
    for row in rows:
        print(f"- {row['case']}: {row['note']}")
    write_report(args.json, {"benchmark": "reliability", "quick": args.quick, "rows": rows})
    return 0 if all(r["survived"] == r["tries"] and not r["lost"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Load on the served model: concurrent requests, success rate, latency percentiles.

    python bench/serve_load.py --model runs/synth/model [--requests 50] [--concurrency 50]

Starts ``speechrnn serve`` on a free local port, sends ``--requests`` requests (each one
audio file of the manifest, base64 WAV in MLflow's ``dataframe_split`` JSON) from
``--concurrency`` threads at once, checks every answer against ``speechrnn transcribe``'s
text for the same file, and reports p50/p95/max latency and throughput.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from report import print_table, write_report  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, proc, timeout: float = 180.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the server exited")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    raise RuntimeError(f"{url} did not come up")


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and everything below it, in MB (from /proc)."""
    total = 0
    for p in [pid, *descendants(pid)]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``, from /proc."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def request(url: str, audio: bytes) -> tuple[float, int, str]:
    body = json.dumps({"dataframe_split": {"columns": ["audio"], "data": [
        [base64.b64encode(audio).decode()]]}}).encode()
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(urllib.request.Request(
                url, data=body, headers={"Content-Type": "application/json"}),
                timeout=300) as r:
            status, text = r.status, json.loads(r.read())["predictions"][0]["text"]
    except urllib.error.HTTPError as err:
        status, text = err.code, ""
    return time.perf_counter() - start, status, text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, required=True,
                        help="a model directory trained with tracking on (or an MLflow URI)")
    parser.add_argument("--manifest", type=Path, default=Path("data/synth/test.jsonl"))
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--json", type=Path, default=Path("bench/results/serve_load.json"))
    args = parser.parse_args(argv)

    import speechrnn
    from speechrnn.manifest import read_manifest

    rows = read_manifest(args.manifest)[:args.requests]
    files = [rows[i % len(rows)].audio for i in range(args.requests)]
    local = speechrnn.load_model(args.model)
    expected = {f: local.transcribe(f).text for f in set(files)}
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "speechrnn", "serve", "--model",
                             str(args.model), "--port", str(port)], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(f"http://127.0.0.1:{port}/ping", proc)
        url = f"http://127.0.0.1:{port}/invocations"
        request(url, Path(files[0]).read_bytes())  # warm-up: the model loads lazily
        payloads = [Path(f).read_bytes() for f in files]
        start = time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as pool:
            results = list(pool.map(lambda a: request(url, a), payloads))
        wall = time.perf_counter() - start
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    latency = np.array([r[0] for r in results])
    ok = sum(r[1] == 200 for r in results)
    same = sum(r[2] == expected[f] for r, f in zip(results, files))
    audio_seconds = sum(r.duration for r in (rows[i % len(rows)] for i in range(len(files))))
    row = {"requests": len(results), "concurrency": args.concurrency, "ok": ok,
           "same_text": same, "p50_s": round(float(np.percentile(latency, 50)), 3),
           "p95_s": round(float(np.percentile(latency, 95)), 3),
           "max_s": round(float(latency.max()), 3),
           "requests_per_s": round(len(results) / wall, 2),
           "audio_s_per_s": round(audio_seconds / wall, 1)}
    print(f"served model {args.model}: {args.requests} requests, {args.concurrency} at once")
    print_table([("requests", "requests", 10), ("ok", "ok", 5), ("same_text", "same text", 11),
                 ("p50_s", "p50 s", 8), ("p95_s", "p95 s", 8), ("max_s", "max s", 8),
                 ("requests_per_s", "req/s", 8), ("audio_s_per_s", "audio-s/s", 11)], [row])
    write_report(args.json, {"benchmark": "serve_load", "model": str(args.model),
                             "input": str(args.manifest), **row})
    return 0 if ok == same == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())

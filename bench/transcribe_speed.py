"""Transcription speed: audio-seconds transcribed per wall-second, and peak memory.

    python bench/transcribe_speed.py [--model DIR] [--manifest M] [--long-minutes 60]
        [--lm LM.arpa | --lm-from TRAIN.jsonl] [--lm-weight W --word-bonus B]
        [--lm-beam-width 16]
        [--backends onnx,keras]

For each backend (ONNX Runtime, Keras), in its own process so that each peak RSS is its
own: features + network + decoding (with word timings) of ``--limit`` utterances already
in memory, at batch 1 (``Transcriber.transcribe``, one utterance at a time) and batched
(``transcribe_batch``, 8 at a time), with greedy and beam search (width 16, no LM), and
the WER of each against the manifest. With a word LM (``--lm``: an ARPA file; ``--lm-from``:
a trigram of a manifest's transcripts, :class:`speechrnn.lm.WordLM`), ONNX Runtime also
decodes at batch 1 with beam search (``--lm-beam-width``, 16) + LM, once with each engine:
the Python prefix beam search and the C++ one (flashlight-text, :mod:`speechrnn.fastbeam`, skipped
when it is not installed). The first utterance, which builds the decoder, is not timed;
its time is ``build_s``. Target for beam + LM: >= 150 audio-s/s with the C++ engine.
Then one long recording (``--long-minutes``, built from the held-out FSDD speaker's
recordings when the corpora are here) through ``speechrnn transcribe``: its speed and the
peak RSS of that process. Target: >= 200 audio-s/s at batch 1 with ONNX Runtime for the
default model; < 2 GB peak RSS for an hour.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("SPEECHRNN_PROGRESS", "0")
sys.path.insert(0, str(Path(__file__).parent))
from report import print_table, write_report  # noqa: E402

TARGET = 200.0
LM_TARGET = 150.0  # beam 16 + word LM, batch 1, ONNX Runtime, C++ engine
RSS_TARGET_MB = 2048
BATCH = 8


def first_existing(*paths: str) -> Path | None:
    return next((Path(p) for p in paths if Path(p, "model.json").exists()
                 or Path(p).suffix == ".jsonl" and Path(p).exists()), None)


def load_lm(arpa: Path | None, source: Path | None):
    """The word LM of ``--lm`` (an ARPA file) or ``--lm-from`` (a manifest), or None."""
    from speechrnn.lm import WordLM
    from speechrnn.lm_build import lm_from_sources

    if arpa is not None:
        return WordLM.from_arpa(arpa)
    if source is not None:
        return lm_from_sources([source], order=3)
    return None


def measure(model: Path, manifest: Path, backend: str, limit: int, lm=None,
            threads: int = 0, lm_weight: float = 0.8, word_bonus: float = 1.0,
            lm_beam_width: int = 16) -> list[dict]:
    from speechrnn import fastbeam
    from speechrnn.audio import SAMPLE_RATE, load_audio
    from speechrnn.decoding import DecodingOptions
    from speechrnn.evaluate import error_rates
    from speechrnn.manifest import read_manifest
    from speechrnn.text import normalize_text
    from speechrnn.transcribe import load_transcriber

    transcriber = load_transcriber(model, backend=backend, threads=threads,
                                   options=DecodingOptions())
    rows = read_manifest(manifest)[:limit]
    audios = [load_audio(r.audio) for r in rows]
    references = [normalize_text(r.text) for r in rows]
    seconds = sum(len(a) for a in audios) / SAMPLE_RATE
    runs = [(method, "-", batch, DecodingOptions(method=method), None)
            for method in ("greedy", "beam") for batch in (1, BATCH)]
    if lm is not None and backend == "onnx":
        for engine in ("python", "flashlight"):
            if engine == "flashlight" and not fastbeam.available():
                print("beam_lm with flashlight skipped: flashlight-text is not installed",
                      file=sys.stderr)
                continue
            runs.append(("beam_lm", engine, 1, DecodingOptions(
                method="beam", beam_width=lm_beam_width, engine=engine, lm_weight=lm_weight,
                word_bonus=word_bonus), lm))
    results = []
    for method, engine, batch, options, run_lm in runs:
        transcriber.lm = run_lm
        start = time.perf_counter()  # warm-up (graph tracing; building the LM decoder)
        transcriber.transcribe(audios[0], SAMPLE_RATE, options)
        build = time.perf_counter() - start
        start = time.perf_counter()
        if batch == 1:
            texts = [transcriber.transcribe(a, SAMPLE_RATE, options).text for a in audios]
        else:
            texts = [h.text for i in range(0, len(audios), batch)
                     for h in transcriber.transcribe_batch(audios[i:i + batch], options)]
        wall = time.perf_counter() - start
        results.append({"backend": transcriber.backend, "decoder": method, "engine": engine,
                        "batch": batch, "beam_width": options.beam_width if method != "greedy"
                        else "-", "audio_s_per_s": round(seconds / wall, 1),
                        "wer_pct": round(100 * error_rates(references, texts).wer, 2),
                        **({"build_s": round(build, 2)} if run_lm is not None else {})})
    rss = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return [{**r, "peak_rss_mb": rss, "audio_seconds": round(seconds, 1)} for r in results]


def long_file(minutes: float, manifest: Path, corpora: Path) -> Path:
    from speechrnn.audio import SAMPLE_RATE, load_audio, save_audio
    from speechrnn.corpora.fsdd import long_recording, scan
    from speechrnn.manifest import read_manifest

    path = Path(f"data/bench/long-{minutes:g}min.wav")
    if path.exists():
        return path
    if (corpora / "fsdd").is_dir():
        rows = [r for r in scan(corpora / "fsdd", []) if r.speaker == "jackson"]
        audio, _ = long_recording(rows, minutes * 60, seed=0)
    else:  # the manifest's utterances over and over
        import numpy as np

        clips = [load_audio(r.audio) for r in read_manifest(manifest)[:50]]
        reps = int(minutes * 60 * SAMPLE_RATE / sum(len(c) for c in clips)) + 1
        audio = np.concatenate(clips * reps)[:int(minutes * 60 * SAMPLE_RATE)]
    save_audio(path, audio)
    return path


def measure_long(model: Path, path: Path) -> dict:
    from speechrnn.audio import audio_duration

    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "speechrnn", "transcribe", "--model",
                           str(model), str(path), "--format", "json", "--quiet"],
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    words = len(json.loads(proc.stdout)["words"])
    seconds = audio_duration(path)
    return {"file": str(path), "audio_minutes": round(seconds / 60, 1), "words": words,
            "audio_s_per_s": round(seconds / wall, 1), "wall_seconds": round(wall, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=first_existing(
        "runs/fsdd-digits/model", "runs/synth/model"))
    parser.add_argument("--manifest", type=Path, default=first_existing(
        "data/fsdd/test.jsonl", "data/synth/test.jsonl"))
    parser.add_argument("--corpora", type=Path, default=Path(os.environ.get(
        "SPEECHRNN_CORPORA", Path(__file__).resolve().parents[2] / "shared" / "corpora")))
    parser.add_argument("--limit", type=int, default=64, help="utterances to transcribe")
    parser.add_argument("--long-minutes", type=float, default=60.0,
                        help="length of the long recording (0: skip it)")
    parser.add_argument("--json", type=Path, default=Path("bench/results/transcribe_speed.json"))
    lm_source = parser.add_mutually_exclusive_group()
    lm_source.add_argument("--lm", type=Path, help="word LM for beam + LM rows: an ARPA file")
    lm_source.add_argument("--lm-from", type=Path, metavar="MANIFEST",
                           help="word LM for beam + LM rows: a trigram of these transcripts")
    parser.add_argument("--lm-weight", type=float, default=0.8,
                        help="LM weight of the beam + LM rows (a recipe's dev-tuned value)")
    parser.add_argument("--word-bonus", type=float, default=1.0)
    parser.add_argument("--lm-beam-width", type=int, default=16,
                        help="beam width of the beam + LM rows (the target is for 16)")
    parser.add_argument("--backends", default="onnx,keras",
                        help="comma-separated: onnx, keras (default: both)")
    parser.add_argument("--threads", type=int, default=0,
                        help="ONNX Runtime intra-op threads (default 0: all cores)")
    parser.add_argument("--backend", help=argparse.SUPPRESS)  # child process mode
    args = parser.parse_args(argv)
    if args.model is None or args.manifest is None:
        parser.error("no trained model or manifest found: train one first "
                     "(bash setup.sh && .venv/bin/python pipelines/run.py), or pass "
                     "--model and --manifest")
    if args.backend:
        lm = load_lm(args.lm, args.lm_from)
        print(json.dumps(measure(args.model, args.manifest, args.backend, args.limit, lm,
                                 args.threads, args.lm_weight, args.word_bonus,
                                 args.lm_beam_width)))
        return 0
    long = None
    if args.long_minutes > 0:  # first: RUSAGE_CHILDREN is the peak over all children so far
        long = measure_long(args.model, long_file(args.long_minutes, args.manifest,
                                                  args.corpora))
    backends = [b for b in args.backends.split(",") if b]
    lm_args = (["--lm", str(args.lm)] if args.lm else []) + \
        (["--lm-from", str(args.lm_from)] if args.lm_from else [])
    results = []
    for backend in backends:
        proc = subprocess.run([sys.executable, __file__, "--model", str(args.model),
                               "--manifest", str(args.manifest), "--limit", str(args.limit),
                               "--backend", backend, "--threads", str(args.threads),
                               "--lm-weight", str(args.lm_weight),
                               "--word-bonus", str(args.word_bonus),
                               "--lm-beam-width", str(args.lm_beam_width),
                               *lm_args], capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return 1
        results += json.loads(proc.stdout.strip().splitlines()[-1])
    speed = {(r["backend"], r["decoder"], r["engine"], r["batch"]): r["audio_s_per_s"]
             for r in results}
    report = {"benchmark": "transcribe_speed", "model": str(args.model),
              "input": str(args.manifest), "threads": args.threads, "results": results,
              "target_audio_s_per_s": TARGET}
    if ("onnx", "greedy", "-", 1) in speed:
        report["meets_target"] = speed["onnx", "greedy", "-", 1] >= TARGET
    if {("onnx", "greedy", "-", 1), ("keras", "greedy", "-", 1)} <= speed.keys():
        report["onnx_over_keras_batch1_greedy"] = round(
            speed["onnx", "greedy", "-", 1] / speed["keras", "greedy", "-", 1], 2)
    if args.lm or args.lm_from:
        report["lm"] = str(args.lm or f"trigram of {args.lm_from}")
        report["lm_weight"], report["word_bonus"] = args.lm_weight, args.word_bonus
        report["lm_beam_width"] = args.lm_beam_width
        report["lm_target_audio_s_per_s"] = LM_TARGET
        fast = speed.get(("onnx", "beam_lm", "flashlight", 1))
        slow = speed.get(("onnx", "beam_lm", "python", 1))
        if fast is not None and args.lm_beam_width == 16:  # the target's width
            report["meets_lm_target"] = fast >= LM_TARGET
        if fast is not None and slow is not None:
            report["beam_lm_flashlight_over_python"] = round(fast / slow, 2)
        if fast is not None and ("onnx", "greedy", "-", 1) in speed:  # robust to a busy CPU
            report["beam_lm_flashlight_over_greedy"] = round(
                fast / speed["onnx", "greedy", "-", 1], 2)
    print(f"transcription speed (features + network + decoding) on {args.manifest}, "
          f"model {args.model}" + (f", LM {report['lm']}" if "lm" in report else ""))
    print_table([("backend", "backend", 9), ("decoder", "decoder", 9),
                 ("engine", "engine", 12), ("batch", "batch", 7), ("beam_width", "beam", 6),
                 ("audio_s_per_s", "audio-s/s", 12), ("wer_pct", "WER %", 9),
                 ("peak_rss_mb", "peak RSS MB", 13)], results)
    if "onnx_over_keras_batch1_greedy" in report:
        print(f"ONNX Runtime / Keras (batch 1, greedy): "
              f"{report['onnx_over_keras_batch1_greedy']:.2f}x   (target: ONNX batch 1 >= "
              f"{TARGET:.0f} audio-s/s)")
    if "beam_lm_flashlight_over_python" in report:
        print(f"beam + LM, C++ (flashlight) / Python: "
              f"{report['beam_lm_flashlight_over_python']:.2f}x, / greedy: "
              f"{report.get('beam_lm_flashlight_over_greedy', 0):.2f}x   (target: C++ >= "
              f"{LM_TARGET:.0f} audio-s/s)")
    if long:
        report["long_file"] = {**long, "rss_target_mb": RSS_TARGET_MB,
                               "meets_rss_target": long["peak_rss_mb"] < RSS_TARGET_MB}
        print(f"long file: {long['audio_minutes']} min, {long['words']} words, "
              f"{long['audio_s_per_s']:,.1f} audio-s/s, peak RSS {long['peak_rss_mb']} MB "
              f"(target < {RSS_TARGET_MB} MB)")
    write_report(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

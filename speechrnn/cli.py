"""The ``speechrnn`` command.

    speechrnn data import KIND --source DIR --out DIR   corpus on disk -> manifests
    speechrnn data synth --out DIR                       offline synthetic corpus
    speechrnn data prepare --config FILE [--set k=v]     the manifests a pipeline config names
    speechrnn data stats MANIFEST...                     utterances, hours, speakers, lengths
    speechrnn train --config FILE [--set k=v] [--fresh]  train (or resume), tracked in MLflow
    speechrnn evaluate --model M --manifest FILE         WER/CER, S/I/D, report (+ MLflow)
    speechrnn transcribe --model M PATH...               text, json, srt or vtt per file
    speechrnn ui                                         MLflow UI on the project's store
    speechrnn serve --model M                            the model over HTTP
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .audio import AudioError
from .config import ConfigError
from .manifest import ManifestError, format_stats, manifest_stats, read_manifest
from .text import normalize_text

USER_ERRORS = (AudioError, ConfigError, ManifestError, FileNotFoundError, ValueError,
               RuntimeError)


def _speakers(value: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in value.split(",") if s.strip())


def _import_options(args) -> object:
    from .corpora import ImportOptions

    return ImportOptions(
        out=Path(args.out), format=args.format, seed=args.seed, digits=args.digits,
        hop_ms=args.hop_ms, subsampling=args.subsampling, workers=args.workers,
        test_speakers=getattr(args, "test_speakers", ()),
        dev_speakers=getattr(args, "dev_speakers", ()),
        test_fraction=getattr(args, "test_fraction", None),
        dev_fraction=getattr(args, "dev_fraction", None),
        progress=False if args.quiet else None,
    )


def _report(result) -> None:
    for name, rows in result.manifests.items():
        print(f"{result.files[name]}: {len(rows)} utterances, "
              f"{sum(r.duration for r in rows) / 3600:.3f} h, "
              f"{len({r.speaker for r in rows})} speakers")
    print(f"rejected: {len(result.rejected)} (reasons in {result.files['rejected']})")
    for r in result.rejected[:10]:
        print(f"  {r.audio or r.id}: {r.reason}")
    if len(result.rejected) > 10:
        print(f"  ... {len(result.rejected) - 10} more")


def cmd_import(args) -> int:
    from .corpora import IMPORTERS, import_corpus
    from .corpora.fsdd import import_fsdd

    options = _import_options(args)
    if args.kind == "fsdd":
        if not Path(args.source).exists():
            raise FileNotFoundError(f"{args.source}: corpus source not found")
        result = import_fsdd(Path(args.source), options, per_speaker=args.per_speaker,
                             perturb=args.perturb)
    else:
        assert args.kind in IMPORTERS
        result = import_corpus(args.kind, args.source, options)
    _report(result)
    return 0


def cmd_synth(args) -> int:
    from .corpora import make_synth_corpus

    result = make_synth_corpus(_import_options(args), train=args.train, dev=args.dev,
                               test=args.test, digit_share=args.digit_share)
    _report(result)
    return 0


def cmd_prepare(args) -> int:
    from .config import Config, load_config
    from .corpora import prepare_data

    cfg = load_config(Config, args.config, args.overrides)
    result = prepare_data(cfg.data, args.corpora, force=args.force,
                          progress=False if args.quiet else None)
    if result is None:
        print(f"manifests already in {cfg.data.out} (--force rebuilds them)")
    else:
        _report(result)
    return 0


def cmd_train(args) -> int:
    from .config import load_pipeline_config
    from .corpora import prepare_data

    cfg = load_pipeline_config(args.config, args.overrides)
    prepare_data(cfg.data, args.corpora, progress=False if args.quiet else None)
    from .train import Interrupted, experiment_name, train  # imports TensorFlow

    tracker = None
    if cfg.tracking.enabled and not args.no_track:
        from .tracking import Tracker

        tracker = Tracker(experiment_name(cfg), cfg.tracking.uri)
    try:
        result = train(cfg, tracker, fresh=args.fresh, progress=False if args.quiet else None)
    except Interrupted:
        print("interrupted: checkpoint saved; run the same command again to resume",
              file=sys.stderr)
        return 130
    summary = {"model_dir": str(result.model_dir), "run_id": result.run_id,
               "best_epoch": result.best_epoch + 1, "best_dev_wer": result.best_wer,
               "stop_reason": result.stop_reason, **result.model}
    print(json.dumps(summary, indent=2))
    return 0


def _decoding(args):
    """DecodingOptions and word LM from the shared decoding flags."""
    from .decoding import DecodingOptions
    from .lm import WordLM

    texts = [r.text for m in args.lm_from for r in read_manifest(m)]
    for path in args.lm_text:
        try:
            texts += Path(path).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise FileNotFoundError(f"{path}: cannot read LM text ({err})") from None
    lm = WordLM.from_texts([normalize_text(t) for t in texts if t.strip()],
                           order=args.lm_order) if texts else None
    if lm is not None and args.decoder == "greedy":
        raise ValueError("a language model needs --decoder beam")
    options = DecodingOptions(method=args.decoder, beam_width=args.beam_width,
                              lm_weight=args.lm_weight, word_bonus=args.word_bonus)
    return options, lm


def _transcriber(args):
    from .transcribe import load_model

    options, lm = _decoding(args)
    return load_model(args.model, backend=args.backend, options=options, lm=lm)


def cmd_evaluate(args) -> int:
    from .evaluate import evaluate_model, write_report

    transcriber = _transcriber(args)
    rows = read_manifest(args.manifest)
    rates, scores = evaluate_model(transcriber, rows, progress=False if args.quiet else None)
    summary = {"model": str(args.model), "manifest": str(args.manifest),
               "decoder": args.decoder, "beam_width": args.beam_width,
               "lm": transcriber.lm is not None, "backend": transcriber.backend,
               **rates.as_dict()}
    if args.out or args.run_id:
        import tempfile

        out = Path(args.out or tempfile.mkdtemp(prefix="speechrnn-eval-"))
        files = write_report(out, summary, scores)
        if args.run_id:
            from .tracking import log_to_run

            name = args.name or Path(args.manifest).stem
            tag = f"{name}_{args.decoder}" + ("_lm" if transcriber.lm is not None else "")
            log_to_run(args.run_id, {f"{tag}_{k}": getattr(rates, k) for k in
                                     ("wer", "cer", "substitutions", "deletions",
                                      "insertions")}, files, f"evaluation/{tag}")
            summary["run_id"] = args.run_id
    print(json.dumps(summary, indent=2))
    return 0


def _inputs(paths: list[str]) -> tuple[list[Path], list[str]]:
    """Files named, found in folders (recursively) or matched by globs; and what failed."""
    import glob

    from .transcribe import AUDIO_SUFFIXES

    files, missing = [], []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            found = sorted(f for f in path.rglob("*") if f.suffix.lower() in AUDIO_SUFFIXES)
            why = "no audio files in this folder"
        elif not path.exists() and any(c in p for c in "*?["):
            found = sorted(Path(f) for f in glob.glob(p, recursive=True) if Path(f).is_file())
            why = "no file matches this pattern"
        else:
            found, why = [path], ""  # a missing file is reported when it is read
        files += found
        if not found:
            missing.append(f"{p}: {why}")
    return files, missing


def _output_name(path: Path, fmt: str, used: set[str]) -> str:
    name, n = f"{path.stem}.{fmt}", 1
    while name in used:
        n += 1
        name = f"{path.stem}-{n}.{fmt}"
    used.add(name)
    return name


def cmd_transcribe(args) -> int:
    from .progress import progress_bar
    from .transcribe import format_transcript

    files, failures = _inputs(args.paths)
    for line in failures:
        print(f"speechrnn: error: {line}", file=sys.stderr)
    if args.format in ("srt", "vtt") and len(files) > 1 and not args.output_dir:
        raise ValueError(f"{args.format} output of several files needs --output-dir")
    transcriber = _transcriber(args)
    out_dir = Path(args.output_dir) if args.output_dir else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    failed = len(failures)
    with progress_bar(len(files), "transcribing", None if len(files) > 1 and not args.quiet
                      else False) as bar:
        for path in files:
            try:
                result = transcriber.transcribe(  # a bar of its own for a long file
                    path, progress=None if len(files) == 1 and not args.quiet else False)
            except AudioError as err:
                failed += 1
                bar.write(f"speechrnn: error: {err}", file=sys.stderr)
                bar.update(1)
                continue
            text = format_transcript(result, args.format, args.max_words_per_cue)
            if out_dir:
                (out_dir / _output_name(path, args.format, used)).write_text(text)
            elif args.format == "txt" and len(files) > 1:
                sys.stdout.write(f"{path}\t{text}")
            else:
                sys.stdout.write(text)
            sys.stdout.flush()
            bar.update(1)
    if failed:
        print(f"speechrnn: {failed} of {len(files) + len(failures)} inputs failed",
              file=sys.stderr)
    return 1 if failed else 0


def _server(kind: str, args) -> int:
    import subprocess

    from .tracking import server_command

    command, env = server_command(kind, args.host, args.port, getattr(args, "model", None))
    what = "MLflow UI" if kind == "ui" else f"model {args.model}"
    print(f"serving {what} at http://{args.host}:{args.port} (Ctrl-C stops)", flush=True)
    try:
        return subprocess.call(command, env=env)
    except KeyboardInterrupt:
        return 0


def cmd_ui(args) -> int:
    return _server("ui", args)


def cmd_serve(args) -> int:
    return _server("serve", args)


def cmd_stats(args) -> int:
    report = {}
    for path in args.manifest:
        stats = manifest_stats(read_manifest(path))
        report[str(path)] = stats
        if not args.json:
            print(format_stats(str(path), stats))
    if args.json:
        print(json.dumps(report, indent=2))
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="folder for manifests, audio and reports")
    p.add_argument("--format", choices=("jsonl", "tsv"), default="jsonl")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--digits", choices=("spell", "reject"), default="spell",
                   help="digits in transcripts: spell them out, or reject the row")
    p.add_argument("--hop-ms", type=float, default=10.0, help="feature hop (CTC length check)")
    p.add_argument("--subsampling", type=int, default=3,
                   help="model time subsampling (CTC length check)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _pipeline_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, required=True, help="a YAML pipeline config")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. train.epochs=5 (repeatable)")
    p.add_argument("--corpora", help="folder holding the corpora (or SPEECHRNN_CORPORA)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="a model directory (runs/<config>/model), "
                   "runs:/<run_id>/model or models:/<name>/<version>")
    p.add_argument("--backend", choices=("auto", "onnx", "keras"), default="auto",
                   help="network runtime (auto: ONNX Runtime when installed)")
    p.add_argument("--decoder", choices=("greedy", "beam"), default="greedy")
    p.add_argument("--beam-width", type=int, default=16)
    p.add_argument("--lm-from", type=Path, action="append", default=[],
                   help="word LM from these manifests' transcripts (beam; repeatable)")
    p.add_argument("--lm-text", type=Path, action="append", default=[],
                   help="word LM from this text file, a sentence a line (beam; repeatable)")
    p.add_argument("--lm-order", type=int, default=3)
    p.add_argument("--lm-weight", type=float, default=0.8)
    p.add_argument("--word-bonus", type=float, default=1.0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    from .corpora import IMPORTERS

    parser = argparse.ArgumentParser(prog="speechrnn", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    data = sub.add_parser("data", help="corpora and manifests").add_subparsers(
        dest="data_command", required=True)

    p = data.add_parser("import", help="turn a corpus on disk into manifests")
    p.add_argument("kind", choices=sorted(IMPORTERS))
    p.add_argument("--source", required=True, help="corpus folder (or table file: generic)")
    _common(p)
    p.add_argument("--test-speakers", type=_speakers, default=(),
                   help="comma-separated speakers held out for test")
    p.add_argument("--dev-speakers", type=_speakers, default=(),
                   help="comma-separated speakers held out for dev")
    p.add_argument("--test-fraction", type=float, default=None,
                   help="fraction of speakers for test when the corpus has no split")
    p.add_argument("--dev-fraction", type=float, default=None,
                   help="fraction of (training) speakers moved to dev")
    p.add_argument("--per-speaker", type=int, default=300,
                   help="fsdd: connected strings per training speaker (a third for dev/test)")
    p.add_argument("--perturb", type=float, default=0.15,
                   help="fsdd: speed perturbation of training strings (0 for none)")
    p.set_defaults(func=cmd_import)

    p = data.add_parser("synth", help="synthesise the offline default corpus")
    _common(p)
    p.add_argument("--train", type=int, default=1200)
    p.add_argument("--dev", type=int, default=120)
    p.add_argument("--test", type=int, default=200)
    p.add_argument("--digit-share", type=float, default=0.4,
                   help="fraction of utterances that are digit strings")
    p.set_defaults(func=cmd_synth)

    p = data.add_parser("prepare", help="build the manifests a pipeline config names")
    _pipeline_args(p)
    p.add_argument("--force", action="store_true", help="rebuild even if manifests exist")
    p.set_defaults(func=cmd_prepare)

    p = data.add_parser("stats", help="summarise manifests")
    p.add_argument("manifest", nargs="+", type=Path)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("train", help="train a model (resumes an interrupted run)")
    _pipeline_args(p)
    p.add_argument("--fresh", action="store_true", help="ignore checkpoints, start over")
    p.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="WER and CER of a model on a manifest")
    _model_args(p)
    p.add_argument("--manifest", type=Path, required=True)
    p.add_argument("--out", help="folder for utterances.csv, alignment.txt, word_errors.csv "
                   "and summary.json")
    p.add_argument("--run-id", help="log the scores and report to this MLflow run")
    p.add_argument("--name", help="metric prefix in MLflow (default: the manifest's name)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("transcribe", help="transcribe audio files, folders or globs")
    _model_args(p)
    p.add_argument("paths", nargs="+", help="audio files, folders (searched recursively), "
                   "or glob patterns")
    p.add_argument("--format", choices=("txt", "json", "srt", "vtt"), default="txt")
    p.add_argument("--output-dir", help="write <name>.<format> files here (else stdout)")
    p.add_argument("--max-words-per-cue", type=int, default=12,
                   help="srt/vtt: words per subtitle cue at most (1: a cue per word)")
    p.set_defaults(func=cmd_transcribe)

    p = sub.add_parser("ui", help="the MLflow UI on the project's store")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: local only)")
    p.add_argument("--port", type=int, default=5000)
    p.set_defaults(func=cmd_ui)

    p = sub.add_parser("serve", help="serve a model over HTTP (MLflow scoring protocol)")
    p.add_argument("--model", required=True, help="runs:/<run_id>/model, "
                   "models:/<name>/<version>, or a model directory trained with tracking on")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: local only)")
    p.add_argument("--port", type=int, default=5001)
    p.set_defaults(func=cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except USER_ERRORS as err:
        print(f"speechrnn: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("speechrnn: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

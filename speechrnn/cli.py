"""speechrnn: train your own speech recognizer (MFCC features, a bidirectional LSTM trained
with CTC, MLflow tracking), then transcribe, evaluate and serve it.

example:
  speechrnn train --config pipelines/configs/synth.yaml --set train.epochs=5
  speechrnn transcribe --model runs/synth/model recording.flac

commands:
  speechrnn data import KIND --source DIR --out DIR   corpus on disk -> manifests
  speechrnn data synth --out DIR                       offline synthetic corpus
  speechrnn data prepare --config FILE [--set k=v]     the manifests a pipeline config names
  speechrnn data features --config FILE [--workers N]  features -> TFRecord shards (all cores)
  speechrnn data stats MANIFEST...                     utterances, hours, speakers, lengths
  speechrnn train --config FILE [--set k=v] [--fresh]  train (or resume), tracked in MLflow
  speechrnn evaluate --model M --manifest FILE         WER/CER, S/I/D, report (+ MLflow)
  speechrnn transcribe --model M PATH...               text, json, srt or vtt per file
  speechrnn lm --text FILE --out lm.arpa               word n-gram LM (ARPA) for beam search
  speechrnn ui                                         MLflow UI on the project's store
  speechrnn serve --model M                            the model over HTTP

"speechrnn COMMAND --help" describes each command; "-v" shows tracebacks and more logging.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import time
import traceback
from collections import Counter
from dataclasses import replace
from pathlib import Path

from . import __version__, pipeline
from .checkpoint import Interrupted
from .config import (
    DataConfig,
    EvalConfig,
    FeatureConfig,
    ModelConfig,
    ctc_frames_per_second,
    load_pipeline_config,
)
from .corpora import IMPORTERS, ImportOptions, import_corpus, make_synth_corpus
from .corpora.fsdd import import_fsdd
from .decoding import Decoding, DecodingOptions
from .distribute import set_cluster
from .errors import InputError, NotFoundError, SpeechRNNError
from .formats import format_transcript
from .inference import InferenceOptions
from .lexicon import Lexicon, build_lexicon, recipe_words, source_words
from .lm import WordLM
from .lm_build import build_lm, lm_from_sources
from .manifest import format_stats, manifest_stats, read_manifest
from .model_dir import resolve_model
from .pipeline import evaluate, find_audio, prepare, transcribe
from .recipe import run_recipe
from .serve import ServeLimits, serve
from .tracking.servers import ui_command


def _speakers(value: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in value.split(",") if s.strip())


def _import_options(args) -> object:
    fps = ctc_frames_per_second(FeatureConfig(hop_ms=args.hop_ms, win_ms=max(
        FeatureConfig.win_ms, args.hop_ms)), ModelConfig(subsampling=args.subsampling))
    return ImportOptions(
        out=Path(args.out), format=args.format, seed=args.seed, digits=args.digits,
        ctc_frames_per_second=fps, workers=args.workers,
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
    options = _import_options(args)
    if args.kind == "fsdd":
        if not Path(args.source).exists():
            raise NotFoundError(f"{args.source}: corpus source not found")
        result = import_fsdd(Path(args.source), options, per_speaker=args.per_speaker,
                             perturb=args.perturb)
    else:
        assert args.kind in IMPORTERS
        result = import_corpus(args.kind, args.source, options)
    _report(result)
    return 0


def cmd_synth(args) -> int:
    result = make_synth_corpus(_import_options(args), train=args.train, dev=args.dev,
                               test=args.test, digit_share=args.digit_share)
    _report(result)
    return 0


def cmd_prepare(args) -> int:
    cfg = load_pipeline_config(args.config, args.overrides)
    result = prepare(cfg, args.corpora, force=args.force,
                     progress=False if args.quiet else None)
    if result is None:
        print(f"manifests already in {cfg.data.out} (--force rebuilds them)")
    else:
        _report(result)
    return 0


def cmd_features(args) -> int:
    cfg = load_pipeline_config(args.config, args.overrides)
    progress = False if args.quiet else None
    pipeline.prepare(cfg, args.corpora, progress=progress)
    for split, index in pipeline.extract_features(cfg, workers=args.workers, progress=progress,
                                          corpora=args.corpora).items():
        print(f"{split}: {len(index)} items, {index.hours:.3f} h, {len(index.files)} shards, "
              f"{len(index.skipped)} skipped ({index.folder})")
        for row, why in index.skipped[:10]:
            print(f"  {row.audio}: {why}")
        if len(index.skipped) > 10:
            print(f"  ... {len(index.skipped) - 10} more (in {index.folder / 'index.json'})")
    return 0


def cmd_train(args) -> int:
    cfg = load_pipeline_config(args.config, args.overrides)
    if args.workers:
        set_cluster(args.workers.split(","), args.worker_index)
    progress = False if args.quiet else None
    pipeline.prepare(cfg, args.corpora, progress=progress)
    try:
        result = pipeline.train(cfg, fresh=args.fresh, track=not args.no_track,
                                progress=progress, corpora=args.corpora)
    except Interrupted:
        print("interrupted: checkpoint saved; run the same command again to resume",
              file=sys.stderr)
        return 130
    summary = {"model_dir": str(result.model_dir), "run_id": result.run_id,
               "best_epoch": result.best_epoch + 1, "best_dev_wer": result.best_wer,
               "stop_reason": result.stop_reason, **result.model}
    print(json.dumps(summary, indent=2))
    return 0


def cmd_run(args) -> int:
    cfg = load_pipeline_config(args.config, args.overrides + args.sets.split())
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    try:
        run_recipe(cfg, stages, args.corpora, fresh=args.fresh,
                   progress=False if args.quiet else None)
    except Interrupted:
        print("interrupted: checkpoint saved; run the same command again to resume",
              file=sys.stderr)
        return 130
    return 0


def _decoding(args):
    """The :class:`~speechrnn.decoding.Decoding` of the shared decoding flags; None (the
    model's own decoding, else greedy) when no flag chooses one. ``--beam-width``,
    ``--lm-weight``, ``--word-bonus`` or ``--engine`` alone change the model's own beam
    search (its LM kept; beam search without an LM when it saved none)."""

    if args.lm and (args.lm_from or args.lm_text):
        raise InputError("--lm (an ARPA file) or --lm-from/--lm-text (build one), not both")
    wants_lm = bool(args.lm or args.lm_from or args.lm_text)
    given = {k: v for k, v in (("beam_width", args.beam_width), ("lm_weight", args.lm_weight),
                               ("word_bonus", args.word_bonus)) if v is not None}
    if args.engine != "auto":
        given["engine"] = args.engine
    if args.decoder is None and not wants_lm:
        if not given:
            return None
        path = resolve_model(args.model)
        own = InferenceOptions.of_model(path)
        if own.decoder != "beam":
            return Decoding(DecodingOptions("beam", **given))
        return Decoding(replace(own.decoding, **given), own.load_lm(path))
    lm = WordLM.load(args.lm) if args.lm else \
        lm_from_sources(args.lm_from, args.lm_text, order=args.lm_order)
    method = args.decoder or ("beam" if wants_lm else "greedy")
    return Decoding(DecodingOptions(method=method, **given), lm)


def cmd_lm(args) -> int:
    if not (args.text or args.manifest):
        raise InputError("give --text FILE or --manifest FILE (repeatable) to build from")
    stats = build_lm(args.text, args.manifest, args.out, order=args.order,
                     method=args.method, prune=tuple(args.prune) if args.prune else "auto")
    print(json.dumps(stats, indent=2, default=str))
    return 0


def cmd_lexicon(args) -> int:
    if not (args.config or args.manifest or args.text):
        raise InputError("give --config C.yaml, or --manifest FILE / --text FILE "
                         "(repeatable): the words to spell")
    words = Counter(source_words(args.manifest, args.text))
    if args.config:  # the recipe's words: its training and dev transcripts, its LM text
        cfg = load_pipeline_config(args.config, args.overrides)
        prepare(cfg, args.corpora, progress=False if args.quiet else None)
        words.update(recipe_words(cfg, args.corpora)[1])
    words = dict(words.most_common())
    if args.check:
        lexicon = Lexicon.load(args.check)
        uncovered = lexicon.uncovered(words)
        print(json.dumps({"lexicon": str(args.check), "words": len(words),
                          "uncovered": len(uncovered), "lexicon_coverage":
                          lexicon.coverage()}, indent=2))
        _list_words("no pronunciation", {w: f"{words[w]} uses" for w in uncovered})
        return 1 if uncovered else 0
    if not args.out:
        raise InputError("give --out lexicon.txt (or --check LEXICON to check one)")
    lexicon = build_lexicon(words, args.dictionary, g2p=not args.no_g2p)
    lexicon.save(args.out)
    print(json.dumps({"lexicon": str(args.out), **lexicon.coverage()}, indent=2))
    _list_words("no pronunciation", lexicon.missing)
    return 0


def _list_words(what: str, words: dict[str, str], shown: int = 20) -> None:
    for word, why in list(words.items())[:shown]:
        print(f"  {what}: {word} ({why})")
    if len(words) > shown:
        print(f"  ... {len(words) - shown} more")


def cmd_evaluate(args) -> int:
    report = evaluate(args.model, args.manifest, _decoding(args), out=args.out,
                      run_id=args.run_id, name=args.name, backend=args.backend,
                      vad=not args.no_vad, progress=False if args.quiet else None,
                      speaker_cmvn=args.speaker_cmvn)
    print(json.dumps(report.summary(), indent=2))
    return 0


def _output_name(path: Path, fmt: str, used: set[str]) -> str:
    name, n = f"{path.stem}.{fmt}", 1
    while name in used:
        n += 1
        name = f"{path.stem}-{n}.{fmt}"
    used.add(name)
    return name


def cmd_transcribe(args) -> int:
    files, failures = find_audio(args.paths)
    for line in failures:
        print(f"speechrnn: error: {line}", file=sys.stderr)
    if args.format in ("srt", "vtt") and len(files) > 1 and not args.output_dir:
        raise InputError(f"{args.format} output of several files needs --output-dir")
    out_dir = Path(args.output_dir) if args.output_dir else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    done = 0
    for result in transcribe(args.model, files, _decoding(args), backend=args.backend,
                             vad=not args.no_vad, speaker_cmvn=args.speaker_cmvn,
                             progress=False if args.quiet else None):
        done += 1
        text = format_transcript(result, args.format, args.max_words_per_cue)
        if out_dir:
            (out_dir / _output_name(Path(result.source), args.format, used)).write_text(text)
        elif args.format == "txt" and len(files) > 1:
            sys.stdout.write(f"{result.source}\t{text}")
        else:
            sys.stdout.write(text)
        sys.stdout.flush()
    failed = len(failures) + len(files) - done
    if failed:
        print(f"speechrnn: {failed} of {len(files) + len(failures)} inputs failed",
              file=sys.stderr)
    return 1 if failed else 0


def cmd_ui(args) -> int:
    command, env = ui_command(args.host, args.port)
    print(f"serving the MLflow UI at http://{args.host}:{args.port} (Ctrl-C stops)", flush=True)
    # MLflow's server and its workers in a process group of their own, stopped with us
    # whatever stops us (Ctrl-C, SIGTERM, an error)
    proc = subprocess.Popen(command, env=env, start_new_session=True)
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        _stop_group(proc)


def _stop_group(proc, grace: float = 10.0) -> None:
    """SIGTERM to ``proc``'s process group, SIGKILL to what is left after ``grace`` s."""

    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
            os.killpg(proc.pid, 0)  # workers of the group still alive?
        except subprocess.TimeoutExpired:
            continue
        except ProcessLookupError:
            return
        time.sleep(0.5)


def cmd_serve(args) -> int:
    limits = ServeLimits(args.max_request_mb, args.max_audio_s, args.timeout_s,
                         args.max_concurrent, args.max_queue)
    print(f"serving model {args.model} at http://{args.host}:{args.port} (Ctrl-C stops)",
          flush=True)
    serve(args.model, args.host, args.port, limits)
    return 0


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
    p.add_argument("--format", choices=("jsonl", "tsv"), default=DataConfig.format)
    p.add_argument("--seed", type=int, default=DataConfig.seed)
    p.add_argument("--digits", choices=("spell", "reject"), default="spell",
                   help="digits in transcripts: spell them out, or reject the row")
    p.add_argument("--hop-ms", type=float, default=FeatureConfig.hop_ms,
                   help="feature hop (CTC length check)")
    p.add_argument("--subsampling", type=int, default=ModelConfig.subsampling,
                   help="model time subsampling (CTC length check)")
    p.add_argument("--workers", type=int, default=2, help="parallel audio checks")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _pipeline_args(p: argparse.ArgumentParser, required: bool = True,
                   config_help: str = "a YAML pipeline config") -> None:
    p.add_argument("--config", type=Path, required=required, help=config_help)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. train.epochs=5 (repeatable)")
    p.add_argument("--corpora", help="folder holding the corpora (or SPEECHRNN_CORPORA)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _text_sources(p: argparse.ArgumentParser) -> None:
    p.add_argument("--text", type=Path, action="append", default=[],
                   help="a text file, a sentence a line (.gz too; repeatable)")
    p.add_argument("--manifest", type=Path, action="append", default=[],
                   help="a manifest whose transcripts are added (repeatable)")


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="a model directory (runs/<config>/model), "
                   "runs:/<run_id>/model or models:/<name>/<version>")
    p.add_argument("--backend", choices=("auto", "onnx", "keras"), default="auto",
                   help="network runtime (auto: ONNX Runtime when installed)")
    p.add_argument("--decoder", choices=("greedy", "beam"),
                   help="default: the model's own (beam + LM when its recipe saved one, "
                   "inference.json), else greedy; beam when an LM is given")
    p.add_argument("--beam-width", type=int, help="beam search's width (default: the "
                   f"model's own, else {EvalConfig.beam_width}); alone, it widens the model's "
                   "own beam search")
    p.add_argument("--lm-from", type=Path, action="append", default=[],
                   help="word LM from these manifests' transcripts (beam; repeatable)")
    p.add_argument("--lm-text", type=Path, action="append", default=[],
                   help="word LM from this text file, a sentence a line (beam; repeatable)")
    p.add_argument("--lm", type=Path, help="word LM: an ARPA file (speechrnn lm, KenLM's "
                   "lmplz; .gz too) (beam)")
    p.add_argument("--lm-order", type=int, default=EvalConfig.lm_order)
    p.add_argument("--lm-weight", type=float, help="default: the model's own, else "
                   f"{EvalConfig.lm_weight}")
    p.add_argument("--word-bonus", type=float, help="default: the model's own, else "
                   f"{EvalConfig.word_bonus}")
    p.add_argument("--engine", choices=("auto", "flashlight", "python"), default="auto",
                   help="beam search with an LM: flashlight-text's C++ decoder (auto: when "
                   "installed) or speechrnn's own")
    p.add_argument("--no-vad", action="store_true", help="decode every sound as speech "
                   "(by default noise, hum, tones, music and silence give no words)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="speechrnn", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="more logging, and a traceback with any error")
    parser.add_argument("--version", action="version", version=f"speechrnn {__version__}")
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
    p.add_argument("--per-speaker", type=int, default=DataConfig.per_speaker,
                   help="fsdd: connected strings per training speaker (a third for dev/test)")
    p.add_argument("--perturb", type=float, default=DataConfig.perturb,
                   help="fsdd: speed perturbation of training strings (0 for none)")
    p.set_defaults(func=cmd_import)

    p = data.add_parser("synth", help="synthesise the offline default corpus")
    _common(p)
    p.add_argument("--train", type=int, default=DataConfig.synth_train)
    p.add_argument("--dev", type=int, default=DataConfig.synth_dev)
    p.add_argument("--test", type=int, default=DataConfig.synth_test)
    p.add_argument("--digit-share", type=float, default=DataConfig.synth_digit_share,
                   help="fraction of utterances that are digit strings")
    p.set_defaults(func=cmd_synth)

    p = data.add_parser("prepare", help="build the manifests a pipeline config names")
    _pipeline_args(p)
    p.add_argument("--force", action="store_true", help="rebuild even if manifests exist")
    p.set_defaults(func=cmd_prepare)

    p = data.add_parser("features", help="extract the train and dev features into TFRecord "
                        "shards (what batch.source: shards streams)")
    _pipeline_args(p)
    p.add_argument("--workers", type=int, default=None,
                   help="extraction processes (default: every core)")
    p.set_defaults(func=cmd_features)

    p = data.add_parser("stats", help="summarise manifests")
    p.add_argument("manifest", nargs="+", type=Path)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("train", help="train a model (resumes an interrupted run)")
    _pipeline_args(p)
    p.add_argument("--fresh", action="store_true", help="ignore checkpoints, start over")
    p.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    p.add_argument("--workers", metavar="HOST:PORT,...",
                   help="train on several machines: every worker's address, the chief first "
                   "(sets TF_CONFIG; each machine runs the same command)")
    p.add_argument("--worker-index", type=int, default=0,
                   help="this machine's place in --workers (0: the chief)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("run", help="a recipe end to end: prepare, train, evaluate (LM weights "
                       "tuned on dev, saved with the model), transcribe")
    _pipeline_args(p)
    p.add_argument("--stages", default="prepare,train,evaluate,transcribe",
                   help="comma-separated, any of prepare, train, evaluate, transcribe")
    p.add_argument("--sets", default="", help="overrides as one space-separated string "
                   "(for MLproject parameters)")
    p.add_argument("--fresh", action="store_true", help="ignore checkpoints, start over")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("evaluate", help="WER and CER of a model on a manifest")
    _model_args(p)
    p.add_argument("--manifest", type=Path, required=True)
    p.add_argument("--out", help="folder for utterances.csv, alignment.txt, word_errors.csv "
                   "and summary.json")
    p.add_argument("--run-id", help="log the scores and report to this MLflow run")
    p.add_argument("--name", help="metric prefix in MLflow (default: the manifest's name)")
    p.add_argument("--speaker-cmvn", action=argparse.BooleanOptionalAction, default=None,
                   help="normalise each utterance with the statistics of all its speaker's "
                   "utterances in the manifest (default: as the model's recipe chose)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("transcribe", help="transcribe audio files, folders or globs")
    _model_args(p)
    p.add_argument("paths", nargs="+", help="audio files, folders (searched recursively), "
                   "or glob patterns")
    p.add_argument("--format", choices=("txt", "json", "srt", "vtt"), default="txt")
    p.add_argument("--output-dir", help="write <name>.<format> files here (else stdout)")
    p.add_argument("--max-words-per-cue", type=int, default=12,
                   help="srt/vtt: words per subtitle cue at most (1: a cue per word)")
    p.add_argument("--speaker-cmvn", action="store_true",
                   help="the inputs are one speaker's: normalise each with statistics pooled "
                   "over all of them (short clips, e.g. single words, gain most)")
    p.set_defaults(func=cmd_transcribe)

    p = sub.add_parser("lm", help="build a word LM (ARPA) from text files and manifests")
    _text_sources(p)
    p.add_argument("--out", type=Path, required=True, help="the ARPA file (.gz: gzipped)")
    p.add_argument("--order", type=int, default=EvalConfig.lm_order)
    p.add_argument("--method", choices=("kneser-ney", "witten-bell"), default="kneser-ney")
    p.add_argument("--prune", type=int, nargs="+", metavar="N",
                   help="count thresholds per order, e.g. 0 1 1 drops bigrams and trigrams "
                   "seen once (default: that from a million words on, else nothing)")
    p.set_defaults(func=cmd_lm)

    p = sub.add_parser("lexicon", help="build or check a pronunciation lexicon (39 "
                       "ARPAbet phones): CMUdict, espeak-ng for the words it lacks")
    _pipeline_args(p, required=False, config_help="a pipeline config: its training and dev "
                   "transcripts and its LM text (eval.lm_text)")
    _text_sources(p)
    p.add_argument("--out", type=Path, help="the lexicon to write (lexicon.txt, and its "
                   ".json: coverage, generated and missing words)")
    p.add_argument("--check", type=Path, metavar="LEXICON",
                   help="instead of building: list the words LEXICON has no pronunciation for "
                   "(exit status 1 if any)")
    p.add_argument("--dictionary", type=Path, help="a CMUdict-format pronouncing "
                   "dictionary (default: CMUdict from the pocketsphinx package)")
    p.add_argument("--no-g2p", action="store_true", help="no espeak-ng spellings: a word "
                   "the dictionary lacks is reported as missing")
    p.set_defaults(func=cmd_lexicon)

    p = sub.add_parser("ui", help="the MLflow UI on the project's store")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: local only)")
    p.add_argument("--port", type=int, default=5000)
    p.set_defaults(func=cmd_ui)

    p = sub.add_parser("serve", help="serve a model over HTTP (MLflow scoring protocol)")
    p.add_argument("--model", required=True, help="runs:/<run_id>/model, "
                   "models:/<name>/<version>, or a model directory trained with tracking on")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: local only)")
    p.add_argument("--port", type=int, default=5001)
    limits = ServeLimits()
    p.add_argument("--max-request-mb", type=float, default=limits.max_request_mb,
                   help="larger request bodies get 413 (default: %(default)s)")
    p.add_argument("--max-audio-s", type=float, default=limits.max_audio_s,
                   help="longer audio items get an error in their row (default: %(default)s)")
    p.add_argument("--timeout-s", type=float, default=limits.timeout_s,
                   help="requests running longer get 504 (default: %(default)s)")
    p.add_argument("--max-concurrent", type=int, default=limits.max_concurrent,
                   help="requests transcribed at once (default: %(default)s)")
    p.add_argument("--max-queue", type=int, default=limits.max_queue,
                   help="requests waiting for a turn; more get 503 (default: %(default)s)")
    p.set_defaults(func=cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (SpeechRNNError, OSError) as err:  # OSError: a file that cannot be read or written
        if args.verbose:
            traceback.print_exc()
        print(f"speechrnn: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("speechrnn: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

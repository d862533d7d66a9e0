"""speechrnn against its peers, on the same audio and the same machine.

    python bench/compare.py --corpora ../shared/corpora                # quick suite
    python bench/compare.py --corpora ../shared/corpora --suite full   # full suite

Tasks: FSDD connected digit strings with one speaker held out (each fold: train on the
other four speakers plus the synthetic digit strings ``fsdd-digits.yaml`` adds; test on the
held-out speaker's odd takes, tune on his even takes), and the speechocean762 test set
(30 speakers unseen in training). Systems:

- ours: ``speechrnn`` with the task's config, trained for the suite's time budget;
- DS2 recipe: the keras.io CTC recipe (``deepspeech2.py``), trained on the same examples
  for the same number of wall-clock seconds ours trained;
- PocketSphinx 5 (``sphinx.py``): pre-trained; bundled LM, and a digit grammar for digits.

Every measurement runs in a process of its own, so each peak RSS is that job's alone, and
writes ``bench/results/compare-<suite>/<task>.<system>.<phase>.json``; a rerun skips the
jobs already done (``--fresh`` redoes them), so an interrupted suite continues. At the
end: ``bench/results/compare-<suite>.json`` and ``bench/RESULTS.md`` (``--markdown``).
Decoding: "plain" is greedy for the CTC models and the bundled LM for PocketSphinx; "best"
is beam search (the task's ``eval`` settings) with a word LM of the training transcripts
for the CTC models, the tuned digit grammar for PocketSphinx (the bundled LM on
speechocean762). Transcription speed: audio already in memory, one utterance at a time,
features to text (with word timings for the CTC models), after one warm-up utterance; a
CTC model's network runs once per utterance and each decoder's time is added to it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("SPEECHRNN_PROGRESS", "0")
sys.path.insert(0, str(Path(__file__).parent))
from report import machine, markdown_table, print_table, sections  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "pipelines" / "configs"
SYSTEMS = ("ours", "ds2", "sphinx")
NAMES = {"ours": "speechrnn (ours)", "ds2": "keras.io CTC recipe (DS2)",
         "sphinx": "PocketSphinx 5"}
FSDD_SPEAKERS = ("jackson", "george", "lucas", "nicolas", "yweweler")


@dataclass(frozen=True)
class Suite:
    name: str
    fsdd_speakers: tuple[str, ...]
    fsdd_minutes: float  # training budget per system and fold
    so762_minutes: float
    fsdd_test: int | None  # test utterances per fold (None: all 100)
    so762_test: int | None  # of 600
    tune: int  # dev strings to tune PocketSphinx's grammar settings on


SUITES = {
    "quick": Suite("quick", ("jackson", "george"), 3, 3, 50, 60, 30),
    "full": Suite("full", FSDD_SPEAKERS, 18, 58, None, None, 100),  # the configs' budgets
    "smoke": Suite("smoke", ("jackson",), 0.1, 0.1, 5, 5, 3),  # the machinery, in minutes
}


@dataclass(frozen=True)
class Task:
    name: str
    config: Path
    overrides: tuple[str, ...]
    test_limit: int | None
    digits: bool
    # TensorFlow's oneDNN kernels for the DS2 recipe's jobs. On long inputs oneDNN falls
    # back to its reference kernel for the Conv2D weight gradient: a 32 x 1533-frame
    # speechocean762 batch ran > 8 min (then killed) against 135 s with oneDNN off, which
    # in turn is ~25 % slower on FSDD's short batches. Each task gets the faster setting.
    ds2_onednn: bool = True


def tasks(suite: Suite) -> list[Task]:
    out = []
    for speaker in suite.fsdd_speakers:
        # jackson's fold is fsdd-digits.yaml's own data; the others reuse its synthetic
        # strings (they do not depend on the held-out speaker) instead of making them again
        data = ["data.out=data/fsdd"] if speaker == "jackson" else [
            f"data.out=data/bench/fsdd-{speaker}", "data.synth_extra=0",
            "data.extra_train=[data/fsdd/synth-extra/train.jsonl]"]
        out.append(Task(f"fsdd-{speaker}", CONFIGS / "fsdd-digits.yaml", (
            f"data.test_speakers=[{speaker}]", f"data.dev_speakers=[{speaker}]", *data,
            f"train.time_budget_min={suite.fsdd_minutes}"), suite.fsdd_test, True))
    out.append(Task("speechocean762", CONFIGS / "speechocean762.yaml",
                    (f"train.time_budget_min={suite.so762_minutes}",), suite.so762_test, False,
                    ds2_onednn=False))
    return [_named(t, suite) for t in out]


def _named(task: Task, suite: Suite) -> Task:
    where = f"runs/bench/{suite.name}/{task.name}"
    return replace(task, overrides=task.overrides + (
        f"train.workdir={where}/ours", f"tracking.experiment=speechrnn-bench-{suite.name}",
        f"tracking.run_name={task.name}", f"tracking.register_as=speechrnn-bench-{task.name}"))


def config(task: Task):
    from speechrnn.config import load_pipeline_config

    return load_pipeline_config(task.config, task.overrides)


def spread(rows: list, limit: int | None) -> list:
    """``limit`` rows evenly spread over the manifest (so over its speakers); all: None."""
    if limit is None or limit >= len(rows):
        return rows
    step = len(rows) / limit
    return [rows[int(i * step)] for i in range(limit)]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --------------------------------------------------------------------------- jobs


def prepare(task: Task, corpora: str | None) -> dict:
    from speechrnn import pipeline

    if task.name.startswith("fsdd-") and task.name != "fsdd-jackson":
        base = Task("fsdd-jackson", task.config, ("data.out=data/fsdd",), None, True)
        pipeline.prepare(config(base), corpora)  # the shared synthetic strings
    pipeline.prepare(config(task), corpora)
    return {}


def train_ours(task: Task, fresh: bool) -> dict:
    from speechrnn import pipeline

    result = pipeline.train(config(task), fresh=fresh)
    seconds = sum(h["epoch_seconds"] for h in result.history)
    audio = sum(h["epoch_seconds"] * h["train_audio_s_per_s"] for h in result.history)
    return {"model": str(result.model_dir), "run_id": result.run_id,
            "train_seconds": seconds, "train_audio_seconds": audio,
            "train_audio_s_per_s": audio / seconds, "epochs": len(result.history),
            "best_dev_wer": result.best_wer}


def train_ds2(task: Task, seconds: float) -> dict:
    import deepspeech2 as ds2
    import keras

    from speechrnn.dataset import load_examples
    from speechrnn.manifest import read_manifest
    from speechrnn.text import Alphabet
    from speechrnn.train import configure_threads

    cfg = config(task)
    configure_threads(cfg.train.intra_op_threads, cfg.train.inter_op_threads)  # as ours
    keras.utils.set_random_seed(cfg.train.seed)
    alphabet = Alphabet()
    rows = [r for path in cfg.data.training_manifests() for r in read_manifest(path)]
    start = time.perf_counter()
    examples = load_examples(rows, ds2.Spectrogram(), alphabet, subsampling=ds2.SUBSAMPLING,
                             desc="spectrograms")
    features_seconds = time.perf_counter() - start
    recipe = ds2.RecipeConfig(seed=cfg.train.seed)
    model = ds2.DeepSpeech2(alphabet.size, recipe)
    done = ds2.train_for(model, examples, recipe, seconds)
    where = cfg.workdir.parent / "ds2"
    ds2.save(model, alphabet, recipe, where, done)
    return {"model": str(where), "features_seconds": features_seconds, **done}


def _test_audio(task: Task):
    """The test utterances, at the library's 16 kHz (the rate of every system compared)."""
    from speechrnn.audio import SAMPLE_RATE, load_audio
    from speechrnn.manifest import read_manifest

    rows = spread(read_manifest(config(task).data.manifest("test")), task.test_limit)
    return rows, [load_audio(r.audio, SAMPLE_RATE) for r in rows]


def _scores(rows, audios, hyps, seconds: float) -> dict:
    from speechrnn.audio import SAMPLE_RATE
    from speechrnn.evaluate import error_rates

    audio = sum(len(a) for a in audios) / SAMPLE_RATE
    rates = error_rates([r.text for r in rows], hyps)
    return {"wer": rates.wer, "cer": rates.cer, "utterances": rates.utterances,
            "audio_seconds": audio, "audio_s_per_s": audio / seconds,
            "examples": [{"id": r.id, "ref": r.text, "hyp": h} for r, h in
                         list(zip(rows, hyps))[:5]]}


def _measure(recognize, rows, audios) -> dict:
    """WER/CER and audio-seconds per second of ``recognize(audio) -> text`` at batch 1."""
    recognize(audios[0])  # warm-up: lazy loading
    start = time.perf_counter()
    hyps = [recognize(a) for a in audios]
    return _scores(rows, audios, hyps, time.perf_counter() - start)


def _measure_ctc(network, decoders: dict, rows, audios) -> dict:
    """For a CTC model: ``network(audio) -> log_probs`` once per utterance, then each of
    ``decoders`` (mode -> ``decode(log_probs) -> text``); a mode's time is the network's
    plus its decoder's, as if each ran alone."""
    network(audios[0])  # warm-up: graph tracing
    net = 0.0
    hyps: dict[str, list[str]] = {mode: [] for mode in decoders}
    spent = dict.fromkeys(decoders, 0.0)
    for audio in audios:
        start = time.perf_counter()
        log_probs = network(audio)
        net += time.perf_counter() - start
        for mode, decode in decoders.items():
            start = time.perf_counter()
            hyps[mode].append(decode(log_probs))
            spent[mode] += time.perf_counter() - start
    return {mode: _scores(rows, audios, hyps[mode], net + spent[mode]) for mode in decoders}


def eval_ours(task: Task) -> dict:
    from threadpoolctl import threadpool_limits

    from speechrnn import pipeline

    train = json.loads(result_path(task, "ours", "train").read_text())
    rows, audios = _test_audio(task)
    greedy = pipeline.recipe_decoding(config(task), "greedy")
    best = pipeline.recipe_decoding(config(task), "beam")
    model = pipeline.load(train["model"], best)
    with threadpool_limits(1, "blas"):  # as Transcriber.transcribe_batch runs it
        return {"backend": model.backend, **_measure_ctc(
            lambda a: model.log_probs(a),
            {"plain": lambda lp: model.decode(lp, greedy.options).text,
             "best": lambda lp: model.decode(lp, best.options).text}, rows, audios)}


def eval_ds2(task: Task) -> dict:
    import deepspeech2 as ds2

    from speechrnn import pipeline
    from speechrnn.decoding import decode

    train = json.loads(result_path(task, "ds2", "train").read_text())
    rows, audios = _test_audio(task)
    model, alphabet = ds2.load(Path(train["model"]))
    greedy = pipeline.recipe_decoding(config(task), "greedy")
    best = pipeline.recipe_decoding(config(task), "beam")
    seconds = ds2.FRAME_SECONDS
    return _measure_ctc(
        lambda a: model.predict_log_probs(ds2.spectrogram(a)),
        {"plain": lambda lp: decode(lp, alphabet, greedy.options, None, seconds).text,
         "best": lambda lp: decode(lp, alphabet, best.options, best.lm, seconds).text},
        rows, audios)


def eval_sphinx(task: Task) -> dict:
    import sphinx

    from speechrnn.audio import SAMPLE_RATE, load_audio
    from speechrnn.manifest import read_manifest

    rows, audios = _test_audio(task)
    plain = sphinx.PocketSphinx()
    out = {"version": sphinx.version(), "plain": _measure(plain.recognize, rows, audios)}
    if not task.digits:
        out["best"] = {**out["plain"], "same_as": "plain"}
        return out
    cfg = config(task)
    dev = spread(read_manifest(cfg.data.manifest("dev")), SUITES[CURRENT_SUITE].tune)
    options, dev_wer = sphinx.tune(sphinx.DIGITS_JSGF,
                                   [load_audio(r.audio, SAMPLE_RATE) for r in dev],
                                   [r.text for r in dev])
    best = sphinx.PocketSphinx(sphinx.DIGITS_JSGF, **options)
    out["best"] = {**_measure(best.recognize, rows, audios), "grammar": "digits JSGF",
                   "tuned": options, "dev_wer": dev_wer}
    return out


# --------------------------------------------------------------------------- suite

CURRENT_SUITE = "quick"
RESULTS = ROOT / "bench" / "results"


def result_path(task: Task, system: str, phase: str) -> Path:
    return RESULTS / f"compare-{CURRENT_SUITE}" / f"{task.name}.{system}.{phase}.json"


def run_job(task: Task, system: str, phase: str, corpora: str | None, fresh: bool) -> dict:
    """One job in a process of its own, unless its result is already there."""
    path = result_path(task, system, phase)
    if path.exists() and not fresh:
        return json.loads(path.read_text())
    print(f"\n== {task.name}: {system} {phase}", flush=True)
    command = [sys.executable, __file__, "--suite", CURRENT_SUITE, "--job",
               f"{task.name}:{system}:{phase}"] + (["--corpora", corpora] if corpora else []) \
        + (["--fresh"] if fresh else [])
    env = dict(os.environ)
    if system == "ds2" and not task.ds2_onednn:
        env["TF_ENABLE_ONEDNN_OPTS"] = "0"
    start = time.time()
    subprocess.run(command, check=True, cwd=ROOT, env=env)
    print(f"   ({(time.time() - start) / 60:.1f} min)", flush=True)
    return json.loads(path.read_text())


def job(name: str, corpora: str | None, fresh: bool) -> None:
    task_name, system, phase = name.split(":")
    task = next(t for t in tasks(SUITES[CURRENT_SUITE]) if t.name == task_name)
    start = time.time()
    if phase == "prepare":
        result = prepare(task, corpora)
    elif (system, phase) == ("ours", "train"):
        result = train_ours(task, fresh)
    elif (system, phase) == ("ds2", "train"):
        ours = json.loads(result_path(task, "ours", "train").read_text())
        result = train_ds2(task, ours["train_seconds"])
    else:
        result = {"ours": eval_ours, "ds2": eval_ds2, "sphinx": eval_sphinx}[system](task)
    result.update(wall_seconds=time.time() - start, peak_rss_mb=peak_rss_mb())
    if system == "ds2":
        result["tf_onednn"] = os.environ.get("TF_ENABLE_ONEDNN_OPTS") != "0"
    path = result_path(task, system, phase)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")


def run_suite(suite: Suite, corpora: str | None, fresh: bool) -> dict:
    if fresh:
        shutil.rmtree(RESULTS / f"compare-{suite.name}", ignore_errors=True)
    report = {"suite": suite.name, "settings": suite.__dict__, "tasks": {}}
    for task in tasks(suite):
        entry = {"prepare": {"data": run_job(task, "data", "prepare", corpora, False)},
                 "train": {}, "eval": {}}
        for system in ("ours", "ds2"):  # ds2 trains as long as ours did
            entry["train"][system] = run_job(task, system, "train", corpora, fresh)
        for system in SYSTEMS:
            entry["eval"][system] = run_job(task, system, "eval", corpora, False)
        report["tasks"][task.name] = entry
    jobs = [r for e in report["tasks"].values() for phase in e.values() for r in phase.values()]
    # the suite's length: its jobs' (a rerun that skips finished jobs still reports it)
    report.update(minutes=sum(r["wall_seconds"] for r in jobs) / 60, machine=machine(),
                  date=datetime.now(timezone.utc).strftime("%Y-%m-%d"))
    return report


# --------------------------------------------------------------------------- report


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def tables(report: dict) -> list[tuple[list[tuple[str, str, int]], list[dict]]]:
    accuracy, training, speed = [], [], []
    for name, entry in report["tasks"].items():
        ev = entry["eval"]
        row = {"task": name, "n": ev["ours"]["plain"]["utterances"]}
        for system in SYSTEMS:
            for mode in ("plain", "best"):
                r = ev[system][mode]
                row[f"{system}_{mode}"] = f"{_pct(r['wer'])} / {_pct(r['cer'])}"
        accuracy.append(row)
        for system in ("ours", "ds2"):
            t = entry["train"][system]
            training.append({"task": name, "system": NAMES[system],
                             "minutes": t["train_seconds"] / 60,
                             "audio_s_per_s": t["train_audio_s_per_s"],
                             "epochs": f"{t['epochs']:.2g}", "rss": t["peak_rss_mb"]})
        for system in SYSTEMS:
            e = ev[system]
            speed.append({"task": name, "system": NAMES[system],
                          "plain": e["plain"]["audio_s_per_s"],
                          "best": e["best"]["audio_s_per_s"], "rss": e["peak_rss_mb"]})
    return [
        ([("task", "task", 16), ("n", "utts", 6)] + [(f"{s}_{m}", f"{s} {m}", 15)
                                                     for s in SYSTEMS for m in ("plain", "best")],
         accuracy),
        ([("task", "task", 16), ("system", "system", 28), ("minutes", "train min", 11),
          ("audio_s_per_s", "audio-s/s", 11), ("epochs", "epochs", 8), ("rss", "RSS MB", 9)],
         training),
        ([("task", "task", 16), ("system", "system", 28), ("plain", "plain a-s/s", 13),
          ("best", "best a-s/s", 12), ("rss", "RSS MB", 9)], speed),
    ]


def _blank_note(report: dict) -> str:
    """Say which CTC models still emit nothing (WER and CER 100 %: blanks only)."""
    blank = [f"{NAMES[system]} on {name}" for name, entry in report["tasks"].items()
             for system in ("ours", "ds2")
             if entry["eval"][system]["plain"]["wer"] == entry["eval"][system]["plain"]["cer"]
             == 1.0]
    if not blank:
        return ""
    return ("\nA cell of 100.0 / 100.0 is a model that, within its budget, has not yet left "
            "CTC's all-blank phase (it outputs nothing): " + "; ".join(blank) + ".\n")


def markdown(report: dict, command: str) -> str:
    acc, train, speed = tables(report)
    m = report["machine"]

    table = markdown_table
    acc_cols = [("task", "test set", 0), ("n", "utterances", 0)] + [
        (f"{s}_{mode}", f"{NAMES[s]}, {label}", 0) for s in SYSTEMS
        for mode, label in (("plain", "plain"), ("best", "best"))]
    s = report["settings"]
    return f"""# speechrnn against its peers

Suite **{report['suite']}**, run {report['date']} on {m['cpus']} CPU cores
({m['processor']}, Python {m['python']}, no GPU), {report['minutes']:.0f} minutes:

    {command}

Numbers come from `bench/results/compare-{report['suite']}.json` (written by the same run);
how each is measured, and the sources of the peers, are in `bench/README.md`.
FSDD folds train for {s['fsdd_minutes']:g} minutes per system, speechocean762 for
{s['so762_minutes']:g} minutes (checked at the end of each of our epochs, so ours trains up to one
epoch longer); the DS2 recipe trains for exactly as many seconds as ours did.

## Accuracy: WER % / CER %

"plain": greedy CTC decoding (ours, DS2), PocketSphinx with its bundled English LM.
"best": beam search 16 with a word LM of the training transcripts (ours, DS2); PocketSphinx
with a JSGF grammar of the ten digit words, tuned on the held-out speaker's dev strings
(FSDD), its bundled LM (speechocean762: nothing better to give it).
`fsdd-<speaker>`: connected digit strings of a speaker none of the systems trained on.

{table(acc_cols, acc[1])}
{_blank_note(report)}
## Training (on the task's training set; PocketSphinx ships trained)

{table(train[0], train[1])}

## Transcription at batch 1: audio-seconds per wall-second, peak RSS of the process

{table(speed[0], speed[1])}
"""


def main(argv=None) -> int:
    global CURRENT_SUITE
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--suite", choices=SUITES, default="quick")
    parser.add_argument("--corpora", default=os.environ.get("SPEECHRNN_CORPORA"),
                        help="folder holding fsdd/ and speechocean762/")
    parser.add_argument("--fresh", action="store_true", help="redo every job")
    parser.add_argument("--markdown", type=Path, default=ROOT / "bench" / "RESULTS.md")
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    CURRENT_SUITE = args.suite
    if args.job:
        job(args.job, args.corpora, args.fresh)
        return 0
    import sphinx

    if not sphinx.available():
        parser.error("PocketSphinx is not installed: pip install -e '.[bench]'")
    report = run_suite(SUITES[args.suite], args.corpora, args.fresh)
    out = RESULTS / f"compare-{args.suite}.json"
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"\nwrote {out}")
    for columns, rows in tables(report):
        print()
        print_table(columns, rows)
    command = "python bench/compare.py --corpora ../shared/corpora" + (
        f" --suite {args.suite}" if args.suite != "quick" else "")
    # what other benchmarks keep in the file (fsdd_loso.py's section) stays
    args.markdown.write_text(markdown(report, command) + sections(args.markdown))
    print(f"wrote {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

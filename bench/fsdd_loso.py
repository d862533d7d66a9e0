"""FSDD digits, each speaker held out in turn: connected strings and isolated digits.

    python bench/fsdd_loso.py [--corpora ../shared/corpora] [--speakers jackson,...]
                              [--budget-min 18] [--no-track] [--set KEY=VALUE ...]

For each of the five FSDD speakers, trains ``pipelines/configs/fsdd-digits.yaml`` with
that speaker held out whole (``data.test_speakers`` = ``data.dev_speakers`` = the speaker:
even takes build the dev strings, odd takes the test strings and ``isolated-test``), within
the recipe's time budget (or ``--budget-min``), and scores the held-out speaker's connected
strings (``test``) and single recordings (``isolated-test``), greedy and with beam search +
the recipe's unigram word LM. Prints a table (per speaker and the mean) and writes JSON.

Each speaker's data, run and model live under ``data/bench/loso/<speaker>`` and
``runs/loso-<speaker>``: a rerun resumes an interrupted training and skips finished ones.
The synthetic extra strings (the same for every speaker) are built once and linked.
About 20 minutes a speaker on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import markdown_table, print_table, write_report, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SPEAKERS = ("george", "jackson", "lucas", "nicolas", "yweweler")


def config(args, speaker: str):
    from recipes import variant

    return variant(args.config, [
        f"data.test_speakers=[{speaker}]", f"data.dev_speakers=[{speaker}]",
        f"data.out=data/bench/loso/{speaker}", f"train.workdir=runs/loso-{speaker}",
        f"name=fsdd-loso-{speaker}", *args.set], args.budget_min, not args.no_track)


def share_synthetic_extras(cfg, done: list) -> None:
    """Link the synthetic extra strings built for an earlier speaker into this one's data
    folder (hard links: no copy), so they are not synthesised again."""
    target = cfg.data.synth_extra_manifest().parent
    if not cfg.data.synth_extra or target.exists() or not done:
        return
    source = done[0].data.synth_extra_manifest().parent
    if source.exists():
        shutil.copytree(source, target, copy_function=os.link)


def run_speaker(args, speaker: str, done: list) -> dict:
    from recipes import train_and_score

    cfg = config(args, speaker)
    share_synthetic_extras(cfg, done)
    row = {"speaker": speaker, **train_and_score(
        cfg, {"test": "connected", "isolated-test": "isolated"}, args.corpora)}
    done.append(cfg)
    print(f"{speaker}: connected {row['connected_beam_wer']:.1f} % / isolated "
          f"{row['isolated_beam_wer']:.1f} % WER (beam + LM), {row['wall_min']} min",
          flush=True)
    return row


COLUMNS = [("speaker", "held out", 10), ("epochs", "epochs", 7),
           ("connected_greedy_wer", "strings greedy", 15),
           ("connected_beam_wer", "strings beam+LM", 16),
           ("isolated_greedy_wer", "isolated greedy", 16),
           ("isolated_beam_wer", "isolated beam+LM", 17)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpora", default=os.environ.get("SPEECHRNN_CORPORA",
                                                            str(ROOT.parent / "shared" /
                                                                "corpora")))
    parser.add_argument("--config", type=Path, default=ROOT / "pipelines" / "configs" /
                        "fsdd-digits.yaml")
    parser.add_argument("--speakers", default=",".join(SPEAKERS))
    parser.add_argument("--budget-min", type=float, default=0.0,
                        help="training budget per speaker (default: the recipe's)")
    parser.add_argument("--no-track", action="store_true", help="no MLflow runs")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a further config override for every speaker (repeatable)")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" /
                        "fsdd_loso.json")
    parser.add_argument("--markdown", default=str(ROOT / "bench" / "RESULTS.md"),
                        help="the Markdown file whose fsdd_loso section the table replaces "
                        "('' for none)")
    args = parser.parse_args(argv)
    os.chdir(ROOT)
    speakers = [s.strip() for s in args.speakers.split(",") if s.strip()]
    unknown = sorted(set(speakers) - set(SPEAKERS))
    if unknown:
        parser.error(f"unknown speaker(s) {unknown}; FSDD has {', '.join(SPEAKERS)}")
    done: list = []
    rows = [run_speaker(args, s, done) for s in speakers]
    keys = [k for k, *_ in COLUMNS[1:]]
    mean = {"speaker": "mean", **{k: round(sum(r[k] for r in rows) / len(rows), 2)
                                  for k in keys}}
    mean["epochs"] = round(mean["epochs"], 1)
    print("\nWER % on the held-out speaker (strings: connected 2-7 digits; isolated: "
          "single recordings as they are)")
    print_table(COLUMNS, rows + [mean])
    report = {"benchmark": "fsdd_loso", "config": str(args.config),
              "budget_min": args.budget_min or None, "overrides": args.set, "rows": rows,
              "mean": mean}
    write_report(args.json, report)
    if args.markdown:
        write_section(Path(args.markdown), "fsdd_loso", markdown(report, argv))
    return 0


def markdown(report: dict, argv=None) -> str:
    """The table as a section of bench/RESULTS.md: the command, then WER % per speaker."""
    from datetime import date

    command = " ".join(["python bench/fsdd_loso.py", *(sys.argv[1:] if argv is None
                                                       else argv)])
    config = Path(report["config"])
    if config.is_relative_to(ROOT):
        config = config.relative_to(ROOT)
    minutes = sum(r["wall_min"] for r in report["rows"])
    kept = sum(bool(r.get("kept")) for r in report["rows"])
    rescored = (f" ({kept} of the {len(report['rows'])} trainings were kept from an earlier "
                "run of the same recipe and only scored again)") if kept else ""
    budget = (f"{report['budget_min']:g} minutes of training" if report["budget_min"]
              else "the recipe's training budget")
    return f"""## FSDD digits from a speaker no stage has heard (leave one speaker out)

Run {date.today().isoformat()}, {minutes:.0f} min on 2 CPU cores{rescored}:

    {command}

`{config}` trained once per FSDD speaker, that speaker held out whole (his even takes:
dev strings for model selection; his odd takes: the test), each within {budget}.
WER %: "strings" are connected strings of 2-7 digits, "isolated" his single recordings as
they are (cut tight); beam search 16 with a unigram LM of the digit words.
JSON: `bench/results/fsdd_loso.json`.

{markdown_table(COLUMNS, report["rows"] + [report["mean"]])}
"""


if __name__ == "__main__":
    sys.exit(main())

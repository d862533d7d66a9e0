"""One recipe, many settings: each variant trained for the same time on the same data and
scored on dev, greedy and with beam search + the recipe's word LM.

    python bench/ablate.py [--config pipelines/configs/english.yaml]
                           [--variants bench/ablations/english.yaml] [--only a,b]
                           [--budget-min 15] [--corpora ../shared/corpora] [--no-track]

A variants file maps a name to the config overrides that make the variant (``--set``
syntax); ``baseline: []`` is the recipe as it is. Every variant trains within the same
budget (``--budget-min``, else the recipe's ``train.time_budget_min``) from the same
prepared data (``data.out``), in ``runs/ablate-<config>-<variant>``: a rerun resumes an
interrupted training and keeps finished ones, so a long table can be built over several
sittings. Dev is scored, never test: the table chooses settings. Beam search uses the
recipe's LM weight and word bonus as they are (no tuning). Prints the table and writes
``bench/results/ablate-<config>.json`` (after every variant, so an interrupted table keeps
its finished rows); run one benchmark at a time.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import print_table, write_report  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

COLUMNS = [("variant", "variant", 22), ("epochs", "epochs", 7), ("best_epoch", "best", 5),
           ("dev_greedy_wer", "dev greedy WER", 15), ("dev_greedy_cer", "CER", 6),
           ("dev_beam_wer", "dev beam+LM WER", 16), ("dev_beam_cer", "CER", 6),
           ("train_min", "train min", 10)]


def read_variants(path: Path) -> dict[str, list[str]]:
    """The variants file: ``{name: [override, ...]}`` (an error names the file)."""
    try:
        variants = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise SystemExit(f"{path}: cannot read the variants ({err})") from None
    if not isinstance(variants, dict) or not all(
            isinstance(v, list) and all(isinstance(o, str) and "=" in o for o in v)
            for v in (variants or {}).values()):
        raise SystemExit(f"{path}: expected a mapping of variant name -> list of "
                         "KEY=VALUE overrides")
    return {str(k): v for k, v in variants.items()}


def config(args, name: str, overrides: list[str]):
    from recipes import variant

    stem = Path(args.config).stem
    return variant(args.config, [
        *overrides, f"train.workdir=runs/ablate-{stem}-{name}",  # one experiment, a run each
        f"tracking.experiment=speechrnn-ablate-{stem}", f"tracking.run_name={name}",
        f"tracking.register_as=speechrnn-ablate-{stem}-{name}"], args.budget_min,
        not args.no_track)


def main(argv=None) -> int:
    from recipes import train_and_score

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=ROOT / "pipelines" / "configs" /
                        "english.yaml")
    parser.add_argument("--variants", type=Path,
                        help="default: bench/ablations/<config name>.yaml")
    parser.add_argument("--only", default="", help="comma-separated variants to run")
    parser.add_argument("--budget-min", type=float, default=0.0,
                        help="training budget per variant (default: the recipe's)")
    parser.add_argument("--corpora", default=os.environ.get("SPEECHRNN_CORPORA",
                                                            str(ROOT.parent / "shared" /
                                                                "corpora")))
    parser.add_argument("--no-track", action="store_true", help="no MLflow runs")
    parser.add_argument("--json", type=Path, help="default: bench/results/ablate-<config "
                        "name>.json")
    args = parser.parse_args(argv)
    args.config = args.config.resolve()
    stem = args.config.stem
    variants = read_variants(args.variants or ROOT / "bench" / "ablations" / f"{stem}.yaml")
    only = [v.strip() for v in args.only.split(",") if v.strip()]
    unknown = sorted(set(only) - set(variants))
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; the file has {', '.join(variants)}")
    os.chdir(ROOT)
    out = args.json or ROOT / "bench" / "results" / f"ablate-{stem}.json"
    rows = []
    for name in only or list(variants):
        cfg = config(args, name, variants[name])  # a bad override fails before training
        row = {"variant": name, "overrides": variants[name],
               **train_and_score(cfg, {"dev": "dev"}, args.corpora)}
        print(f"{name}: dev {row['dev_greedy_wer']:.1f} % greedy, {row['dev_beam_wer']:.1f} % "
              f"beam + LM ({row['epochs']} epochs, {row['wall_min']} min)", flush=True)
        rows.append(row)
        # after every variant, so that an interrupted table keeps the rows it has
        write_report(out, {"benchmark": "ablate", "config": str(args.config),
                           "budget_min": args.budget_min or None, "rows": rows})
    print(f"\nWER % on {stem}'s dev set, each variant trained "
          f"{args.budget_min or 'the recipe budget'} min")
    print_table(COLUMNS, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())

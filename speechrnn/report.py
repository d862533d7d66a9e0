"""What a run or an evaluation writes for people to read: figures and reports.

- :func:`plot_history`: training curves (logged to MLflow as ``training_curves.png``);
- :func:`write_report`: an evaluation's folder: ``utterances.csv`` (worst first),
  ``alignment.txt`` (the word alignment of the worst utterances), ``word_errors.csv``
  (which word became which, most frequent first) and ``summary.json``;
- :func:`write_error_analysis`: the error analysis of a training's best epoch on dev (logged
  to MLflow as ``errors/``): the audio of the worst utterances as 16 kHz WAV files with
  their table (:func:`write_worst`), and the word errors split into substitutions,
  deletions and insertions (:func:`write_word_error_table`).

Light to import: matplotlib loads (headless, ``Agg``) only when a figure is drawn.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path

import jiwer

from .audio import AudioError, load_audio, save_audio
from .evaluate import UtteranceScore, word_errors
from .files import atomic_write, atomic_write_text

log = logging.getLogger(__name__)

WORST = 20  # utterances whose audio the error analysis keeps
WORST_RATE = 16_000  # their WAV files' sample rate (mono, 16-bit PCM)
TOP_WORD_ERRORS = 30  # rows of each kind in word_errors.md (word_errors.tsv has them all)


def plot_history(history: list[dict]):
    """Training curves: losses, dev WER/CER and the learning rate against epochs (one dict
    per epoch with ``epoch``, ``train_loss``, ``dev_loss``, ``dev_wer``, ``dev_cer`` and
    ``learning_rate``). Returns the matplotlib figure, three axes side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(epochs, [h["train_loss"] for h in history], label="train loss")
    axes[0].plot(epochs, [h["dev_loss"] for h in history], label="dev loss")
    axes[0].set_ylabel("CTC loss")
    axes[1].plot(epochs, [100 * h["dev_wer"] for h in history], label="dev WER")
    axes[1].plot(epochs, [100 * h["dev_cer"] for h in history], label="dev CER")
    axes[1].set_ylabel("%")
    axes[2].plot(epochs, [h["learning_rate"] for h in history], label="learning rate")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def alignment_report(scores: list[UtteranceScore], worst: int = 20) -> str:
    """jiwer's word alignment of the ``worst`` utterances by WER."""
    bad = sorted((s for s in scores if s.wer > 0), key=lambda s: (-s.wer, s.id))[:worst]
    if not bad:
        return "no errors\n"
    parts = []
    for s in bad:
        out = jiwer.process_words(s.reference, s.hypothesis)
        body = jiwer.visualize_alignment(out, show_measures=False, skip_correct=False)
        body = body.split("\n", 1)[1] if body.startswith("=") else body
        parts.append(f"{s.id}  WER {100 * s.wer:.1f} %  "
                     f"(S {s.substitutions}, D {s.deletions}, I {s.insertions})\n"
                     + "\n".join(line for line in body.splitlines()
                                 if not line.startswith("sentence")).strip() + "\n")
    return "\n".join(parts)


def write_word_errors(path: Path, scores: list[UtteranceScore]) -> Path:
    """:func:`word_errors` as CSV (reference, hypothesis, count), most frequent first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["reference", "hypothesis", "count"])
        for (said, heard), n in sorted(word_errors(scores).items(),
                                       key=lambda kv: (-kv[1], kv[0])):
            w.writerow([said, heard, n])
    return path


def write_utterances(path: Path, scores: list[UtteranceScore]) -> Path:
    """Per-utterance scores as CSV, worst first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["id", "reference", "hypothesis", "wer", "cer", "substitutions",
                    "deletions", "insertions", "confidence"])
        for s in sorted(scores, key=lambda s: (-s.wer, -s.cer, s.id)):
            w.writerow([s.id, s.reference, s.hypothesis, f"{s.wer:.4f}", f"{s.cer:.4f}",
                        s.substitutions, s.deletions, s.insertions,
                        "" if s.confidence is None else f"{s.confidence:.4f}"])
    return path


def write_report(out: Path, summary: dict, scores: list[UtteranceScore]) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    atomic_write_text(out / "alignment.txt", alignment_report(scores))
    return [write_utterances(out / "utterances.csv", scores), out / "alignment.txt",
            write_word_errors(out / "word_errors.csv", scores), out / "summary.json"]


# --------------------------------------------------------------------------- error analysis


def worst_first(scores: list[UtteranceScore], n: int = WORST) -> list[int]:
    """Indexes (into ``scores``) of the ``n`` worst utterances, worst first: highest WER,
    ties by higher CER, then by the longer reference (in words), then by id. Utterances
    without errors are never listed (there may be fewer than ``n``)."""
    wrong = [i for i, s in enumerate(scores) if s.wer > 0 or s.cer > 0]
    return sorted(wrong, key=lambda i: (-scores[i].wer, -scores[i].cer,
                                        -len(scores[i].reference.split()), scores[i].id))[:n]


def _file_stem(name: str) -> str:
    """``name`` as a file name: what is not a letter, digit, ``.``, ``_`` or ``-`` becomes
    ``_``; at most 80 characters."""
    return re.sub(r"[^\w.-]", "_", name, flags=re.ASCII).strip("._")[:80] or "utterance"


def write_worst(out: Path, scores: list[UtteranceScore], rows: Sequence | None = None,
                n: int = WORST, sample_rate: int = WORST_RATE) -> list[Path]:
    """The ``n`` worst utterances (:func:`worst_first`): their audio, from the manifest
    ``rows`` aligned with ``scores`` (any format :func:`speechrnn.audio.load_audio` reads,
    segments included), as ``out/worst/<rank>_<id>.wav`` (mono, 16-bit, ``sample_rate``),
    and ``out/worst.tsv``: rank, id, speaker, wer, cer, reference, hypothesis, audio (the
    file's path under ``out``) and problem. An utterance whose audio cannot be read or
    written is in the table with the reason as its problem, without a file: the others
    are still written. Returns the files written, the table first."""

    if rows is not None and len(rows) != len(scores):
        raise ValueError(f"{len(rows)} manifest rows for {len(scores)} scores")
    folder = out / "worst"
    folder.mkdir(parents=True, exist_ok=True)
    picked = worst_first(scores, n)
    width = max(2, len(str(len(picked))))
    table, files = [], []
    for rank, i in enumerate(picked, 1):
        s, row = scores[i], rows[i] if rows is not None else None
        name = s.id or (Path(row.audio).stem if row is not None else str(i))
        audio_file, problem = "", ""
        if row is None:
            problem = "no manifest row"
        else:
            path = folder / f"{rank:0{width}d}_{_file_stem(name)}.wav"
            try:
                save_audio(path, load_audio(row.audio, sample_rate, *row.segment), sample_rate)
                audio_file = f"{folder.name}/{path.name}"
                files.append(path)
            except Exception as err:  # one bad file never stops the report
                problem = str(err) if isinstance(err, AudioError) else \
                    f"{type(err).__name__}: {err}"
                log.warning("error analysis: no audio for %s (%s)", name, problem)
        table.append([rank, name, getattr(row, "speaker", ""), f"{s.wer:.4f}", f"{s.cer:.4f}",
                      s.reference, s.hypothesis, audio_file, problem])
    path = out / "worst.tsv"
    with atomic_write(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(["rank", "id", "speaker", "wer", "cer", "reference", "hypothesis", "audio",
                    "problem"])
        w.writerows(table)
    return [path, *files]


KINDS = ("substitution", "deletion", "insertion")


def word_error_table(scores: list[UtteranceScore]) -> list[tuple[str, str, str, int]]:
    """:func:`word_errors` by kind: ``(kind, reference word, hypothesis word, count)``,
    substitutions, then deletions, then insertions, each most frequent first (then in
    alphabetical order); the missing side of a deletion or an insertion is ``""``."""
    out = []
    for (said, heard), n in word_errors(scores).items():
        kind = "deletion" if not heard else "insertion" if not said else "substitution"
        out.append((kind, said, heard, n))
    return sorted(out, key=lambda r: (KINDS.index(r[0]), -r[3], r[1], r[2]))


def write_word_error_table(out: Path, scores: list[UtteranceScore],
                           top: int = TOP_WORD_ERRORS) -> list[Path]:
    """:func:`word_error_table` over all of ``scores``, whole as ``out/word_errors.tsv``
    (kind, reference, hypothesis, count) and the ``top`` of each kind, with totals, as
    ``out/word_errors.md``."""
    out.mkdir(parents=True, exist_ok=True)
    rows = word_error_table(scores)
    tsv = out / "word_errors.tsv"
    with atomic_write(tsv, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(["kind", "reference", "hypothesis", "count"])
        w.writerows(rows)
    words = sum(len(s.reference.split()) for s in scores)
    lines = [f"# Word errors: {len(scores)} utterances, {words} reference words", ""]
    for kind in KINDS:
        mine = [r for r in rows if r[0] == kind]
        lines += [f"## {kind.capitalize()}s: {sum(r[3] for r in mine)} "
                  f"({len(mine)} distinct)", ""]
        if not mine:
            lines += ["none", ""]
            continue
        head = {"substitution": "| reference | hypothesis | count |",
                "deletion": "| reference (not heard) | count |",
                "insertion": "| hypothesis (not said) | count |"}[kind]
        lines += [head, "|" + "---|" * head.count(" | ") + "---|"]
        for _, said, heard, n in mine[:top]:
            cells = {"substitution": [said, heard], "deletion": [said],
                     "insertion": [heard]}[kind]
            lines.append("| " + " | ".join(_md(c) for c in cells) + f" | {n} |")
        if len(mine) > top:
            lines.append(f"\n... and {len(mine) - top} more in word_errors.tsv")
        lines.append("")
    md = out / "word_errors.md"
    atomic_write_text(md, "\n".join(lines), encoding="utf-8")
    return [tsv, md]


def _md(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|") or " "


def write_error_analysis(out: Path, scores: list[UtteranceScore],
                         rows: Sequence | None = None, worst: int = WORST) -> list[Path]:
    """The error analysis of a set (a training's dev set) in ``out``: :func:`write_worst`
    (``worst.tsv``, ``worst/<rank>_<id>.wav``) and :func:`write_word_error_table`
    (``word_errors.tsv``, ``word_errors.md``)."""
    out.mkdir(parents=True, exist_ok=True)
    return write_worst(out, scores, rows, worst) + write_word_error_table(out, scores)

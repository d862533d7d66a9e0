"""What a run or an evaluation writes for people to read: figures and reports.

- :func:`plot_history`: training curves (logged to MLflow as ``training_curves.png``);
- :func:`write_report`: an evaluation's folder: ``utterances.csv`` (worst first),
  ``alignment.txt`` (the word alignment of the worst utterances), ``word_errors.csv``
  (which word became which, most frequent first) and ``summary.json``.

Light to import: matplotlib loads (headless, ``Agg``) only when a figure is drawn.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import jiwer

from .evaluate import UtteranceScore, word_errors
from .files import atomic_write, atomic_write_text


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

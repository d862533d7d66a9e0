"""Evaluation: word and character error rates with jiwer, overall and per utterance.

References and hypotheses are compared under the training normalisation
(:func:`speechrnn.text.normalize_text`). :func:`evaluate_model` transcribes a manifest and
returns the corpus :class:`ErrorRates` and an :class:`UtteranceScore` per utterance;
:func:`write_report` writes ``utterances.csv`` (worst first), ``alignment.txt`` (the
word alignment of the worst utterances), ``word_errors.csv`` (which word became which, most
frequent first) and ``summary.json``.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import jiwer

from .text import TextError, normalize_text


@dataclass(frozen=True)
class ErrorRates:
    wer: float
    cer: float
    substitutions: int
    deletions: int
    insertions: int
    words: int  # reference words
    utterances: int

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class UtteranceScore:
    id: str
    reference: str
    hypothesis: str
    wer: float
    cer: float
    substitutions: int
    deletions: int
    insertions: int
    confidence: float | None = None


def _normal(text: str) -> str:
    try:
        return normalize_text(text)
    except TextError:
        return " ".join(text.lower().split())


def error_rates(references: list[str], hypotheses: list[str]) -> ErrorRates:
    """Corpus-level WER and CER (errors summed over utterances / reference length)."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    if not references:
        raise ValueError("nothing to score")
    words = jiwer.process_words(references, hypotheses)
    chars = jiwer.process_characters(references, hypotheses)
    return ErrorRates(
        wer=float(words.wer), cer=float(chars.cer), substitutions=words.substitutions,
        deletions=words.deletions, insertions=words.insertions,
        words=words.hits + words.substitutions + words.deletions,
        utterances=len(references))


def utterance_wer(reference: str, hypothesis: str) -> float:
    return float(jiwer.process_words(reference, hypothesis).wer)


def score_utterances(ids, references, hypotheses, confidences=None) -> list[UtteranceScore]:
    confidences = confidences or [None] * len(ids)
    out = []
    for uid, ref, hyp, conf in zip(ids, references, hypotheses, confidences):
        w = jiwer.process_words(ref, hyp)
        out.append(UtteranceScore(uid, ref, hyp, float(w.wer),
                                  float(jiwer.process_characters(ref, hyp).cer),
                                  w.substitutions, w.deletions, w.insertions, conf))
    return out


def evaluate_model(transcriber, rows, options=None, progress: bool | None = None,
                   batch_size: int = 16):
    """Transcribe manifest ``rows`` with a :class:`~speechrnn.transcribe.Transcriber` and
    score them: (ErrorRates, [UtteranceScore]). An utterance whose audio cannot be read is
    reported on one line and scored as an empty hypothesis (every word deleted)."""
    from .audio import AudioError, load_audio
    from .progress import progress_bar

    hyps: dict[int, tuple[str, float | None]] = {}
    with progress_bar(len(rows), "evaluating", progress) as bar:
        for start in range(0, len(rows), batch_size):
            audios, index = [], []
            for i in range(start, min(start + batch_size, len(rows))):
                try:
                    audios.append(load_audio(rows[i].audio, transcriber.sample_rate,
                                             *rows[i].segment))
                    index.append(i)
                except AudioError as err:
                    print(f"skipped {err}")
                    hyps[i] = ("", None)
            for i, h in zip(index, transcriber.transcribe_batch(audios, options) if audios
                            else []):
                hyps[i] = (h.text, h.confidence)
            bar.update(min(batch_size, len(rows) - start))
    refs = [_normal(r.text) for r in rows]
    texts = [_normal(hyps[i][0]) for i in range(len(rows))]
    scores = score_utterances([r.id for r in rows], refs, texts,
                              [hyps[i][1] for i in range(len(rows))])
    return error_rates(refs, texts), scores


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


def word_errors(scores: list[UtteranceScore]) -> Counter:
    """How often each word error occurs: ``(reference word, hypothesis word)`` -> count,
    with ``""`` for the missing side of a deletion or an insertion."""
    counts: Counter = Counter()
    for s in scores:
        ref, hyp = s.reference.split(), s.hypothesis.split()
        if not ref:  # jiwer needs a reference: everything said is an insertion
            counts.update(("", w) for w in hyp)
            continue
        for a in jiwer.process_words(s.reference, s.hypothesis).alignments[0]:
            said, heard = ref[a.ref_start_idx:a.ref_end_idx], hyp[a.hyp_start_idx:a.hyp_end_idx]
            if a.type == "substitute":
                counts.update(zip(said, heard))
            elif a.type == "delete":
                counts.update((w, "") for w in said)
            elif a.type == "insert":
                counts.update(("", w) for w in heard)
    return counts


def write_word_errors(path: Path, scores: list[UtteranceScore]) -> Path:
    """:func:`word_errors` as CSV (reference, hypothesis, count), most frequent first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["reference", "hypothesis", "count"])
        for (said, heard), n in sorted(word_errors(scores).items(),
                                       key=lambda kv: (-kv[1], kv[0])):
            w.writerow([said, heard, n])
    return path


def write_utterances(path: Path, scores: list[UtteranceScore]) -> Path:
    """Per-utterance scores as CSV, worst first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
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
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "alignment.txt").write_text(alignment_report(scores))
    return [write_utterances(out / "utterances.csv", scores), out / "alignment.txt",
            write_word_errors(out / "word_errors.csv", scores), out / "summary.json"]

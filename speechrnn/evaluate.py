"""Evaluation: word and character error rates with jiwer, overall and per utterance."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import jiwer


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

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


def evaluate_model(transcriber, rows, options=None, lm=None, progress: bool | None = None):
    """Transcribe manifest ``rows`` with a :class:`~speechrnn.transcribe.Transcriber` and
    score them. Returns (ErrorRates, [(id, reference, hypothesis, wer), ...]); an
    utterance whose audio cannot be read is reported and scored as an empty hypothesis."""
    from .audio import AudioError, load_audio
    from .decoding import DecodingOptions, decode
    from .progress import progress_bar

    options = options or DecodingOptions()
    refs, hyps = [], []
    with progress_bar(len(rows), "evaluating", progress) as bar:
        for row in rows:
            try:
                audio = load_audio(row.audio, transcriber.features.sample_rate, *row.segment)
                hyp = decode(transcriber.log_probs(audio), transcriber.alphabet, options, lm)
            except AudioError as err:
                print(f"skipped {err}")
                hyp = ""
            refs.append(row.text)
            hyps.append(hyp)
            bar.update(1)
    table = [(r.id, ref, hyp, utterance_wer(ref, hyp))
             for r, ref, hyp in zip(rows, refs, hyps)]
    return error_rates(refs, hyps), table

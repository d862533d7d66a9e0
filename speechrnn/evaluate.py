"""Evaluation: word and character error rates with jiwer, overall and per utterance (and a
phone model's phone error rate, over its best paths).

References and hypotheses are compared under the training normalisation
(:func:`speechrnn.text.normalize_text`). :func:`evaluate_model` transcribes a manifest and
returns the corpus :class:`ErrorRates` and an :class:`UtteranceScore` per utterance;
:func:`word_errors` counts which word became which. The files written from these are in
:mod:`speechrnn.report`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, replace

import jiwer

from .audio import AudioError, load_audio
from .errors import InputError
from .lexicon import phones_only, spell_references
from .progress import progress_bar
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
    per: float | None = None  # a phone model's phone error rate (best path)

    def as_dict(self) -> dict:
        out = asdict(self)
        if self.per is None:
            del out["per"]
        return out


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


def phone_error_rate(references: list[str], hypotheses: list[str]) -> float:
    """Phones wrong (substituted, deleted, inserted) / reference phones, over phone strings
    (``HH AH L OW | W ER L D``); word separators are not counted."""

    refs = [phones_only(r) for r in references]
    keep = [i for i, r in enumerate(refs) if r]
    if not keep:
        raise ValueError("no reference phones to score")
    return float(jiwer.wer([refs[i] for i in keep], [phones_only(hypotheses[i]) for i in keep]))


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
    reported on one line and scored as an empty hypothesis (every word deleted). With the
    transcriber's ``speaker_cmvn``, each utterance is normalised with its speaker's
    statistics (:func:`speaker_statistics`)."""
    return evaluate_each(transcriber, rows, [options], progress, batch_size)[0]


def speaker_statistics(transcriber, rows, progress: bool | None = None) -> dict:
    """``{speaker: CMVN}``: each speaker's statistics, pooled over all of that speaker's
    ``rows`` (their audio only, never their transcripts). Rows without a speaker, and
    unreadable ones, add nothing."""

    groups: dict[str, list] = {}
    for row in rows:
        if row.speaker:
            groups.setdefault(row.speaker, []).append(row)
    stats = {}
    with progress_bar(sum(map(len, groups.values())), "speaker statistics", progress) as bar:
        for speaker, members in groups.items():
            def audios(members=members):
                for row in members:
                    try:
                        yield load_audio(row.audio, transcriber.sample_rate, *row.segment)
                    except AudioError:
                        pass  # reported when the utterance is scored
                    bar.update(1)

            try:
                stats[speaker] = transcriber.speaker_stats(audios(), transcriber.sample_rate)
            except InputError:  # none of the speaker's audio readable
                pass
    return stats


def evaluate_each(transcriber, rows, choices, progress: bool | None = None,
                  batch_size: int = 16, label: str = "evaluating"):
    """:func:`evaluate_model` with each of several decoding options (None: the
    transcriber's own), the network run once per utterance: a (ErrorRates,
    [UtteranceScore]) per option."""

    stats = speaker_statistics(transcriber, rows, progress) if transcriber.speaker_cmvn else {}
    hyps: list[dict[int, tuple[str, float | None, str]]] = [{} for _ in choices]
    with progress_bar(len(rows), label, progress) as bar:
        for start in range(0, len(rows), batch_size):
            audios, index = [], []
            for i in range(start, min(start + batch_size, len(rows))):
                try:
                    audios.append(load_audio(rows[i].audio, transcriber.sample_rate,
                                             *rows[i].segment))
                    index.append(i)
                except AudioError as err:
                    print(f"skipped {err}")
                    for found in hyps:
                        found[i] = ("", None, "")
            cmvn = [stats.get(rows[i].speaker) for i in index] if stats else None
            each = transcriber.transcribe_batch_each(audios, list(choices), cmvn) if audios \
                else [[] for _ in choices]
            for found, batch in zip(hyps, each):
                found.update((i, (h.text, h.confidence, h.units))
                             for i, h in zip(index, batch))
            bar.update(min(batch_size, len(rows) - start))
    refs = [_normal(r.text) for r in rows]
    ref_phones = None
    if transcriber.alphabet.units == "phones":
        ref_phones = spell_references(transcriber.alphabet, refs)
    results = []
    for found in hyps:
        texts = [_normal(found[i][0]) for i in range(len(rows))]
        scores = score_utterances([r.id for r in rows], refs, texts,
                                  [found[i][1] for i in range(len(rows))])
        rates = error_rates(refs, texts)
        if ref_phones is not None and any(ref_phones):
            rates = replace(rates, per=phone_error_rate(
                ref_phones, [found[i][2] for i in range(len(rows))]))
        results.append((rates, scores))
    return results


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


def search_lm_weights(transcriber, rows, pairs, progress: bool | None = None):
    """Beam search with each (LM weight, word bonus) of ``pairs`` on manifest ``rows``
    (dev: never the test set). Returns the best :class:`DecodingOptions` (lowest WER, then
    CER, then the pair listed first) and a dict per pair (weight, bonus, WER, CER)."""

    base = replace(transcriber.options, method="beam")
    choices = [replace(base, lm_weight=weight, word_bonus=bonus) for weight, bonus in pairs]
    # the network runs once per utterance; each pair only decodes again
    results = evaluate_each(transcriber, rows, choices, progress,
                            label=f"tuning the LM weight on dev ({len(pairs)} pairs)")
    table = [{"lm_weight": o.lm_weight, "word_bonus": o.word_bonus, "wer": rates.wer,
              "cer": rates.cer} for o, (rates, _) in zip(choices, results)]
    best = min(range(len(table)), key=lambda i: (table[i]["wer"], table[i]["cer"], i))
    return choices[best], table

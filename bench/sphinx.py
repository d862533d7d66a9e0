"""Peer: PocketSphinx 5 (PyPI), with the English acoustic model and LM its wheel ships.

Two ways to use it, as its users do: open vocabulary with the bundled en-us trigram LM
(defaults untouched), and, for digit strings, a JSGF grammar of the ten digit words,
with the word insertion penalty and silence probability chosen on the dev set from a
small grid (untuned, the grammar inserts digits into pauses: 64 % WER instead of 23 % on
40 dev strings of jackson).
"""

from __future__ import annotations

import itertools

import numpy as np

SAMPLE_RATE = 16000  # the bundled acoustic model's rate
DIGITS_JSGF = """#JSGF V1.0;
grammar digits;
public <digits> = <digit>+;
<digit> = zero | one | two | three | four | five | six | seven | eight | nine;
"""
GRID = {"wip": (1e-2, 1e-4), "silprob": (0.005, 0.1)}  # 0.005: PocketSphinx's default


def available() -> bool:
    try:
        import pocketsphinx  # noqa: F401
    except ImportError:
        return False
    return True


def version() -> str:
    from importlib.metadata import version as v

    return v("pocketsphinx")


class PocketSphinx:
    """``recognize(audio)`` -> text, for float audio at 16 kHz. ``grammar``: JSGF text, or
    None for the bundled language model; ``options``: decoder settings (wip, silprob...)."""

    def __init__(self, grammar: str | None = None, **options):
        from pocketsphinx import Decoder

        self.options = options
        self.decoder = Decoder(samprate=SAMPLE_RATE, loglevel="FATAL", **options)
        if grammar is not None:
            self.decoder.add_jsgf_string("grammar", grammar)
            self.decoder.activate_search("grammar")

    def recognize(self, audio: np.ndarray) -> str:
        pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16).tobytes()
        self.decoder.start_utt()
        self.decoder.process_raw(pcm, full_utt=True)
        self.decoder.end_utt()
        hyp = self.decoder.hyp()
        return hyp.hypstr if hyp is not None else ""  # None: no path reached the end


def tune(grammar: str, audios: list[np.ndarray], references: list[str]) -> tuple[dict, float]:
    """The GRID setting with the lowest WER on (dev) ``audios``, and that WER."""
    from speechrnn.evaluate import error_rates

    best: tuple[dict, float] | None = None
    for values in itertools.product(*GRID.values()):
        options = dict(zip(GRID, values))
        recognizer = PocketSphinx(grammar, **options)
        wer = error_rates(references, [recognizer.recognize(a) for a in audios]).wer
        if best is None or wer < best[1]:
            best = (options, wer)
    return best

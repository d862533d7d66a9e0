"""Transcription: a trained model directory + audio -> text.

    from speechrnn.transcribe import Transcriber
    Transcriber("runs/synth/model").transcribe("clip.flac")
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from .audio import SAMPLE_RATE, AudioError, load_audio, prepare_audio
from .decoding import greedy_decode
from .features import CMVN, FeatureExtractor
from .model import load_model


class Transcriber:
    """Loads a model directory once; transcribes files, bytes or arrays."""

    def __init__(self, model_dir: str | Path):
        self.model_dir = Path(model_dir)
        self.model, self.features, self.alphabet, self.meta = load_model(self.model_dir)
        cmvn = CMVN.load(self.model_dir / "cmvn.json") if self.features.cmvn == "global" \
            else None
        self.extractor = FeatureExtractor(self.features, cmvn=cmvn)

    def audio(self, source, sample_rate: int | None = None) -> np.ndarray:
        """Any accepted input as float32 mono at the model's rate."""
        rate = self.features.sample_rate
        if isinstance(source, np.ndarray):
            if sample_rate is None:
                raise AudioError("<array>", "a sample_rate is needed with raw samples")
            return prepare_audio(source, sample_rate, rate)
        if isinstance(source, (bytes, bytearray)):
            return load_audio(io.BytesIO(bytes(source)), rate, name="<audio bytes>")
        return load_audio(source, rate)

    def log_probs(self, audio: np.ndarray) -> np.ndarray:
        """(T', vocab) log-probabilities of one utterance."""
        feats = self.extractor.from_audio(audio)
        out = self.model.predict_log_probs(feats[np.newaxis], np.array([len(feats)], np.int32))
        return out.numpy()[0]

    def transcribe(self, source, sample_rate: int | None = None) -> str:
        audio = self.audio(source, sample_rate)
        if len(audio) < SAMPLE_RATE // 100:
            name = "<audio bytes>" if isinstance(source, (bytes, bytearray)) else \
                "<array>" if isinstance(source, np.ndarray) else str(source)
            raise AudioError(name, "audio too short to transcribe (< 10 ms)")
        return greedy_decode(self.log_probs(audio), self.alphabet)

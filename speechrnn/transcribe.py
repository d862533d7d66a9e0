"""Transcription: a trained model + audio -> text with word timings and confidences.

    import speechrnn
    model = speechrnn.load_model("runs/synth/model")      # or runs:/<id>/model, models:/n/1
    result = model.transcribe("meeting.flac")
    result.text, result.words[0].start, result.confidence

The network runs under ONNX Runtime when it is installed (the model directory's
``model.onnx``, or an export made on loading), under Keras otherwise. A file is read block
by block and cut into chunks of at most ``max_chunk_s`` at the quietest point of each
window (:mod:`speechrnn.segment`), so an hour of audio needs no more memory than one chunk;
word times are offset by where their chunk starts and their edges snapped to the sound
(:mod:`speechrnn.timing`). Chunks are run through the network ``batch_size`` at a time.
Audio without speech (noise, hum, tones, music, silence: :mod:`speechrnn.vad`) gives no
words: such audio is not run through the network, and a word that does not touch speech is
dropped. Output formats (txt, json, srt, vtt) are in :mod:`speechrnn.formats`.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from threadpoolctl import ThreadpoolController

from .audio import AudioError, audio_duration, load_audio, prepare_audio, stream_audio
from .config import output_frames
from .decoding import DecodingOptions, Hypothesis, decode
from .errors import InputError, MissingDependencyError
from .export import OnnxNetwork, build_onnx, onnx_available, onnxruntime_available
from .features import CMVN, FeatureExtractor
from .inference import InferenceOptions
from .model_dir import read_model_dir, resolve_model
from .progress import progress_bar
from .segment import ChunkOptions, chunks
from .timing import snap_to_speech
from .vad import VadOptions, overlaps, speech_regions

MIN_SECONDS = 0.1  # shorter audio holds no word


@dataclass(frozen=True)
class Transcript(Hypothesis):
    """A whole input's hypothesis and its duration in seconds."""

    duration: float = 0.0
    source: str = ""

    def as_dict(self) -> dict:
        return {"file": self.source, "duration": round(self.duration, 3), **super().as_dict()}


def _name(source) -> str:
    if isinstance(source, (bytes, bytearray)):
        return "<audio bytes>"
    if isinstance(source, np.ndarray):
        return "<array>"
    return str(source)


@dataclass
class Transcriber:
    """A loaded model: features, network and decoding. Build with :func:`load_transcriber`.

    It transcribes as the model's own :class:`~speechrnn.inference.InferenceOptions` say
    (``inference.json``), with what is given here replacing them: ``options`` (whole
    InferenceOptions, or the decoder's DecodingOptions, then without the model's LM),
    ``lm`` (a word LM for beam search), ``backend``, ``vad``, ``edge_pad_s`` and
    ``speaker_cmvn`` (None: the model's own). :attr:`inference` is the result."""

    model_dir: Path
    backend: str | None = None  # auto | onnx | keras
    options: InferenceOptions | DecodingOptions | None = None
    lm: object = None  # a speechrnn.lm.WordLM for beam search
    chunking: ChunkOptions = ChunkOptions()
    batch_size: int = 8
    threads: int = 0  # ONNX Runtime intra-op threads (0: all cores)
    vad: VadOptions | bool | None = None  # False: every sound is decoded as speech
    edge_pad_s: float | None = None  # quiet added at both ends
    # evaluation of a manifest: each utterance normalised with its speaker's statistics,
    # pooled over all of that speaker's utterances
    speaker_cmvn: bool | None = None
    network: object = field(init=False, repr=False)

    def __post_init__(self):
        files = read_model_dir(self.model_dir)
        self.model_dir = files.path
        self.features, self.alphabet, self.meta = files.features, files.alphabet, files.meta
        self.inference = inference = self._inference()
        self.options = inference.decoding
        if self.lm is None:
            self.lm = inference.load_lm(files.path)
        self.vad = self.vad if isinstance(self.vad, VadOptions) else \
            VadOptions(enabled=inference.vad)
        self.edge_pad_s, self.speaker_cmvn = inference.edge_pad_s, inference.speaker_cmvn
        self.stride, self.frame_seconds = files.stride, files.frame_seconds
        cmvn = CMVN.load(files.path / "cmvn.json") if self.features.cmvn == "global" else None
        self.extractor = FeatureExtractor(self.features, cmvn=cmvn)
        self.network, self.backend = _load_network(files, inference.backend, self.threads)

        self._blas = ThreadpoolController()

    def _inference(self) -> InferenceOptions:
        """The model's own options with the given fields replacing theirs."""
        own = InferenceOptions.of_model(self.model_dir)
        if isinstance(self.options, InferenceOptions):
            own = self.options
        elif isinstance(self.options, DecodingOptions):  # the decoder as given, no LM
            own = own.with_decoding(self.options)
        elif self.lm is not None:
            own = replace(own, decoder="beam")
        given = {k: v for k, v in (("backend", self.backend), ("edge_pad_s", self.edge_pad_s),
                                   ("speaker_cmvn", self.speaker_cmvn)) if v is not None}
        if self.vad is not None:
            given["vad"] = self.vad.enabled if isinstance(self.vad, VadOptions) else \
                bool(self.vad)
        return replace(own, **given)

    @property
    def sample_rate(self) -> int:
        return self.features.sample_rate

    def audio(self, source, sample_rate: int | None = None) -> np.ndarray:
        """Any accepted input, whole, as float32 mono at the model's rate."""
        if isinstance(source, np.ndarray):
            if sample_rate is None:
                raise AudioError("<array>", "a sample_rate is needed with raw samples")
            return prepare_audio(source, sample_rate, self.sample_rate)
        if isinstance(source, (bytes, bytearray)):
            return load_audio(io.BytesIO(bytes(source)), self.sample_rate, name="<audio bytes>")
        return load_audio(source, self.sample_rate)

    def speaker_stats(self, sources, sample_rate: int | None = None,
                      on_error=None) -> CMVN:
        """CMVN statistics pooled over several inputs of one speaker (paths, bytes, or
        arrays at ``sample_rate``), each piece as the network hears it (quiet edges added).

        Given as ``cmvn`` to :meth:`transcribe` or :meth:`transcribe_batch`, they normalise a
        clip as part of its speaker's speech instead of by its own statistics. A model with
        utterance CMVN learns from utterances of several seconds, whose statistics are close
        to their speaker's; a single word cut tight has a mean and spread of its own, far
        from them. An input that cannot be read goes to ``on_error`` (default: raised).
        Raises :class:`InputError` when no input has any audio."""
        quiet = int(self.edge_pad_s * self.sample_rate)

        def pieces():
            for source in sources:
                try:
                    for audio in self._pieces(source, sample_rate):
                        yield _with_quiet_edges(audio, quiet)[0]
                except AudioError as err:
                    if on_error is None:
                        raise
                    on_error(err)

        return self.extractor.pooled_stats(pieces())

    def _pieces(self, source, sample_rate: int | None = None):
        """The chunks of an input, as :meth:`transcribe` cuts them."""
        for _, chunk in chunks(self._blocks(source, sample_rate), self.sample_rate,
                               self.chunking):
            yield chunk

    def _blocks(self, source, sample_rate: int | None = None):
        """An input as blocks of model-rate samples: a file streamed, other inputs whole."""
        if isinstance(source, (str, Path)):
            return stream_audio(source, self.sample_rate, self.chunking.max_chunk_s)
        return [self.audio(source, sample_rate)]

    def log_probs_batch(self, audios: list[np.ndarray], cmvn=None) -> list[np.ndarray]:
        """(T', vocab) log-probabilities of each audio, run as one padded batch. ``cmvn``:
        the statistics to normalise with (:meth:`speaker_stats`), one for all or a list
        with one (or None: the model's own normalisation) per audio."""
        feats = [self.extractor.from_audio(a, c) for a, c in zip(audios, _each(cmvn, audios))]
        lengths = np.array([len(f) for f in feats], np.int32)
        batch = np.zeros((len(feats), lengths.max(), feats[0].shape[1]), np.float32)
        for i, f in enumerate(feats):
            batch[i, :len(f)] = f
        out = np.asarray(self.network.predict_log_probs(batch, lengths))
        return [out[i, :output_frames(int(n), self.stride)] for i, n in enumerate(lengths)]

    def log_probs(self, audio: np.ndarray) -> np.ndarray:
        return self.log_probs_batch([audio])[0]

    def decode(self, log_probs: np.ndarray, options: DecodingOptions | None = None) -> Hypothesis:
        return decode(log_probs, self.alphabet, options or self.options, self.lm,
                      self.frame_seconds)

    def transcribe(self, source, sample_rate: int | None = None,
                   options: DecodingOptions | None = None,
                   progress: bool | None = False, cmvn: CMVN | None = None) -> Transcript:
        """Transcribe a path, audio bytes or an array (with ``sample_rate``). With
        ``progress`` (None: unless SPEECHRNN_PROGRESS=0), a file longer than a few chunks
        shows a bar of audio seconds done. ``cmvn``: its speaker's statistics
        (:meth:`speaker_stats`; None: each chunk normalised as the model was trained)."""

        name = _name(source)
        blocks = self._blocks(source, sample_rate)
        seconds = audio_duration(source) if isinstance(source, (str, Path)) else \
            len(blocks[0]) / self.sample_rate
        long = progress is not False and seconds > 3 * self.chunking.max_chunk_s
        pieces, total = [], 0
        pending: list[tuple[int, np.ndarray]] = []
        with progress_bar(int(seconds), Path(name).name, progress if long else False) as bar:
            bar.unit = "audio-s"
            for offset, chunk in chunks(blocks, self.sample_rate, self.chunking):
                total = offset + len(chunk)
                pending.append((offset, chunk))
                if len(pending) == self.batch_size:
                    pieces += self._run(pending, options, cmvn)
                    bar.update(min(int(total / self.sample_rate), bar.total) - bar.n)
                    pending = []
            if total < MIN_SECONDS * self.sample_rate:
                raise AudioError(name, f"audio too short to transcribe "
                                       f"({total / self.sample_rate:.3f} s < {MIN_SECONDS} s)")
            pieces += self._run(pending, options, cmvn)
            bar.update(bar.total - bar.n)
        return _join(pieces, total / self.sample_rate, name)

    def transcribe_batch(self, audios: list[np.ndarray],
                         options: DecodingOptions | None = None, cmvn=None) -> list[Hypothesis]:
        """Short utterances (model-rate arrays) through the network together; word edges
        snapped to the sound (:func:`snap_to_speech`). Audio without speech gives an empty
        hypothesis, and words that do not touch speech are dropped (``vad``). ``cmvn``: as
        :meth:`log_probs_batch` takes it."""
        return self.transcribe_batch_each(audios, [options], cmvn)[0]

    def transcribe_batch_each(self, audios: list[np.ndarray],
                              choices: list[DecodingOptions | None],
                              cmvn=None) -> list[list[Hypothesis]]:
        """:meth:`transcribe_batch` with each of several decoding options (e.g. LM weights
        tried on dev), the network run once: a list of hypotheses per option."""
        regions = [speech_regions(a, self.sample_rate, self.vad) if self.vad.enabled else None
                   for a in audios]
        run = [i for i, r in enumerate(regions) if r is None or r]
        hyps = [[Hypothesis("")] * len(audios) for _ in choices]
        if not run:
            return hyps
        # BLAS threads left spinning after the feature matmuls steal the cores ONNX Runtime's
        # LSTM needs: held to one, transcription runs about 1.8x faster on 2 cores
        with self._blas.limit(limits=1, user_api="blas"):
            padded = [_with_quiet_edges(audios[i], int(self.edge_pad_s * self.sample_rate))
                      for i in run]
            stats = _each(cmvn, audios)
            for i, (a, lead), lp in zip(run, padded, self.log_probs_batch(
                    [a for a, _ in padded], [stats[i] for i in run])):
                for out, options in zip(hyps, choices):
                    hyp = snap_to_speech(self.decode(lp, options), a, self.sample_rate,
                                         self.features.frames_per_second)
                    if lead:
                        hyp = _unpad(hyp, lead / self.sample_rate,
                                     len(audios[i]) / self.sample_rate)
                    out[i] = hyp if regions[i] is None else _keep_speech(hyp, regions[i])
        return hyps

    def _run(self, pending, options, cmvn=None) -> list[Hypothesis]:
        frame = int(self.sample_rate / self.features.frames_per_second)  # one feature hop
        pending = [(o, c) for o, c in pending if len(c) >= frame]
        if not pending:
            return []
        hyps = self.transcribe_batch([c for _, c in pending], options, cmvn)
        return [h.shifted(o / self.sample_rate) for (o, _), h in zip(pending, hyps)]


def _each(cmvn, audios) -> list:
    """``cmvn`` (one set of statistics, None, or a list of them) as one item per audio."""
    if isinstance(cmvn, (list, tuple)):
        if len(cmvn) != len(audios):
            raise ValueError(f"{len(cmvn)} CMVN statistics for {len(audios)} audios")
        return list(cmvn)
    return [cmvn] * len(audios)


def _with_quiet_edges(audio: np.ndarray, quiet: int) -> tuple[np.ndarray, int]:
    """``audio`` with quiet (faint noise) added at each end that has less than ``quiet``
    samples of it (within 30 dB of the loudest frame counts as sound); and how many
    samples were added at the start."""
    if quiet <= 0 or not len(audio):
        return audio, 0
    import librosa

    _, (first, last) = librosa.effects.trim(audio, top_db=30, frame_length=400,
                                            hop_length=160)
    lead, tail = max(quiet - int(first), 0), max(quiet - (len(audio) - int(last)), 0)
    if not lead and not tail:
        return audio, 0
    noise = (np.random.default_rng(0).standard_normal(lead + tail) * 1e-4).astype(np.float32)
    return np.concatenate([noise[:lead], audio, noise[lead:]]), lead


def _unpad(hyp: Hypothesis, pad: float, duration: float) -> Hypothesis:
    """Word times of audio that had ``pad`` seconds of quiet added at its start, back on
    the audio's own clock (within 0 .. ``duration``)."""
    def clock(t: float) -> float:
        return min(max(t, 0.0), duration)

    shifted = hyp.shifted(-pad)
    return replace(shifted, words=tuple(replace(w, start=clock(w.start), end=clock(w.end))
                                        for w in shifted.words))


def _keep_speech(hyp: Hypothesis, regions: list[tuple[float, float]]) -> Hypothesis:
    """``hyp`` without the words that touch none of the speech ``regions``."""
    words = tuple(w for w in hyp.words if overlaps(regions, w.start, w.end))
    if len(words) == len(hyp.words):
        return hyp
    if not words:
        return Hypothesis("")
    return replace(hyp, text=" ".join(w.word for w in words), words=words)


def _join(pieces: list[Hypothesis], duration: float, source: str) -> Transcript:
    words = tuple(w for p in pieces for w in p.words)
    letters = [(len(p.text.replace(" ", "")), p.confidence) for p in pieces if p.text]
    n = sum(k for k, _ in letters)
    confidence = math.exp(sum(k * math.log(max(c, 1e-12)) for k, c in letters) / n) if n else 0.0
    return Transcript(" ".join(p.text for p in pieces if p.text), words, confidence,
                      duration, source, units=" | ".join(p.units for p in pieces if p.units))


def _load_network(files, backend: str, threads: int):
    if backend not in ("auto", "onnx", "keras"):
        raise InputError(f"backend must be auto, onnx or keras, not {backend!r}")
    if backend == "onnx" and not onnxruntime_available():
        raise MissingDependencyError("backend onnx needs onnxruntime (pip install onnxruntime)")
    if backend != "keras" and onnxruntime_available():
        if files.onnx.exists() and files.onnx.stat().st_mtime >= files.weights.stat().st_mtime:
            return OnnxNetwork(files.onnx, threads), "onnx"
        if not onnx_available() and backend == "onnx":
            raise MissingDependencyError(f"{files.path}: no model.onnx, and the onnx package "
                                         "is not installed to export one")
    from .model import load_network

    keras_model = load_network(files.path)[0]
    if backend != "keras" and onnxruntime_available() and onnx_available():
        # an older model directory: export in memory
        return OnnxNetwork(build_onnx(keras_model).SerializeToString(), threads), "onnx"
    return keras_model, "keras"


def load_transcriber(model: str | Path, **options) -> Transcriber:
    """A ready :class:`Transcriber` for a model directory, ``runs:/<run_id>/model`` or
    ``models:/<name>/<version>``; keyword options are :class:`Transcriber`'s."""
    return Transcriber(resolve_model(model), **options)



"""Transcription: a trained model + audio -> text with word timings and confidences.

    import speechrnn
    model = speechrnn.load_model("runs/synth/model")      # or runs:/<id>/model, models:/n/1
    result = model.transcribe("meeting.flac")
    result.text, result.words[0].start, result.confidence

The network runs under ONNX Runtime when it is installed (the model directory's
``model.onnx``, or an export made on loading), under Keras otherwise. A file is read block
by block and cut into chunks of at most ``max_chunk_s`` at the quietest point of each
window, so an hour of audio needs no more memory than one chunk; word times are offset by
where their chunk starts. Chunks are run through the network ``batch_size`` at a time.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .audio import AudioError, load_audio, prepare_audio, stream_audio
from .decoding import DecodingOptions, Hypothesis, decode
from .features import CMVN, FeatureExtractor
from .model_dir import read_model_dir, resolve_model

MIN_SECONDS = 0.1  # shorter audio holds no word
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif",
                  ".au", ".snd", ".caf", ".w64", ".rf64", ".sph", ".nist", ".voc"}


@dataclass(frozen=True)
class ChunkOptions:
    max_chunk_s: float = 20.0  # no chunk is longer
    min_chunk_s: float = 8.0  # cuts are searched between min and max
    quiet_window_s: float = 0.2  # energy is averaged over this window to find a pause

    def __post_init__(self):
        if not 0 < self.min_chunk_s < self.max_chunk_s:
            raise ValueError("need 0 < min_chunk_s < max_chunk_s")


@dataclass(frozen=True)
class Transcript(Hypothesis):
    """A whole input's hypothesis and its duration in seconds."""

    duration: float = 0.0
    source: str = ""

    def as_dict(self) -> dict:
        return {"file": self.source, "duration": round(self.duration, 3), **super().as_dict()}


def quietest_cut(audio: np.ndarray, start: int, stop: int, window: int) -> int:
    """The sample in [start, stop) at the centre of the quietest ``window``-long stretch."""
    hop = max(window // 4, 1)
    energy = np.convolve(audio.astype(np.float64) ** 2, np.ones(hop) / hop, mode="valid")[::hop]
    energy = np.convolve(energy, np.ones(4) / 4, mode="same")  # four hops = one window
    lo, hi = start // hop, max(stop // hop, start // hop + 1)
    return int((lo + int(np.argmin(energy[lo:hi]))) * hop + hop // 2)


def snap_to_speech(hyp: Hypothesis, audio: np.ndarray, rate: int, top_db: float = 30.0,
                   max_shift: float = 0.4) -> Hypothesis:
    """Move each word's edges out to where its sound starts and fades.

    CTC emits a character at one peaky frame, often before a word's soft ending has died
    away (the "r" of "four"). Each edge is moved outwards, by at most ``max_shift`` seconds
    and never into a neighbour, while the 10 ms frame energy stays within ``top_db`` of the
    word's loudest frame."""
    if not hyp.words:
        return hyp
    hop = rate // 100
    frames = len(audio) // hop
    if frames == 0:
        return hyp
    power = (audio[:frames * hop].astype(np.float64).reshape(frames, hop) ** 2).mean(axis=1)
    db = 10 * np.log10(power + 1e-12)
    reach = int(max_shift * 100)
    words = list(hyp.words)
    for i, w in enumerate(words):
        a, b = int(w.start * 100), min(max(int(math.ceil(w.end * 100)), int(w.start * 100) + 1),
                                       frames)
        if a >= frames:
            continue
        floor = db[a:b].max() - top_db
        lo = max(a - reach, int(math.ceil(words[i - 1].end * 100)) if i else 0)
        hi = min(b + reach, int(words[i + 1].start * 100) if i + 1 < len(words) else frames)
        while a > lo and db[a - 1] >= floor:
            a -= 1
        while b < hi and db[b] >= floor:
            b += 1
        words[i] = replace(w, start=round(a / 100, 3), end=round(b / 100, 3))
    return replace(hyp, words=tuple(words))


def chunks(blocks: Iterable[np.ndarray], rate: int,
           options: ChunkOptions = ChunkOptions()) -> Iterator[tuple[int, np.ndarray]]:
    """Cut a stream of audio blocks into (first sample, chunk) pieces at pauses."""
    longest, shortest = int(options.max_chunk_s * rate), int(options.min_chunk_s * rate)
    window = int(options.quiet_window_s * rate)
    buffer, offset = np.zeros(0, np.float32), 0
    for block in blocks:
        buffer = np.concatenate([buffer, block])
        while len(buffer) > longest:
            cut = quietest_cut(buffer[:longest], shortest, longest, window)
            yield offset, buffer[:cut]
            buffer, offset = buffer[cut:], offset + cut
    if len(buffer):
        yield offset, buffer


def _name(source) -> str:
    if isinstance(source, (bytes, bytearray)):
        return "<audio bytes>"
    if isinstance(source, np.ndarray):
        return "<array>"
    return str(source)


@dataclass
class Transcriber:
    """A loaded model: features, network and decoding. Build with :func:`load_model`."""

    model_dir: Path
    backend: str = "auto"  # auto | onnx | keras
    options: DecodingOptions = DecodingOptions()
    lm: object = None  # a speechrnn.lm.WordLM for beam search
    chunking: ChunkOptions = ChunkOptions()
    batch_size: int = 8
    threads: int = 0  # ONNX Runtime intra-op threads (0: all cores)
    network: object = field(init=False, repr=False)

    def __post_init__(self):
        files = read_model_dir(self.model_dir)
        self.model_dir = files.path
        self.features, self.alphabet, self.meta = files.features, files.alphabet, files.meta
        self.stride, self.frame_seconds = files.stride, files.frame_seconds
        cmvn = CMVN.load(files.path / "cmvn.json") if self.features.cmvn == "global" else None
        self.extractor = FeatureExtractor(self.features, cmvn=cmvn)
        self.network, self.backend = _load_network(files, self.backend, self.threads)
        from threadpoolctl import ThreadpoolController

        self._blas = ThreadpoolController()

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

    def log_probs_batch(self, audios: list[np.ndarray]) -> list[np.ndarray]:
        """(T', vocab) log-probabilities of each audio, run as one padded batch."""
        feats = [self.extractor.from_audio(a) for a in audios]
        lengths = np.array([len(f) for f in feats], np.int32)
        batch = np.zeros((len(feats), lengths.max(), feats[0].shape[1]), np.float32)
        for i, f in enumerate(feats):
            batch[i, :len(f)] = f
        out = np.asarray(self.network.predict_log_probs(batch, lengths))
        return [out[i, :-(-int(n) // self.stride)] for i, n in enumerate(lengths)]

    def log_probs(self, audio: np.ndarray) -> np.ndarray:
        return self.log_probs_batch([audio])[0]

    def decode(self, log_probs: np.ndarray, options: DecodingOptions | None = None) -> Hypothesis:
        return decode(log_probs, self.alphabet, options or self.options, self.lm,
                      self.frame_seconds)

    def transcribe(self, source, sample_rate: int | None = None,
                   options: DecodingOptions | None = None,
                   progress: bool | None = False) -> Transcript:
        """Transcribe a path, audio bytes or an array (with ``sample_rate``). With
        ``progress`` (None: unless SPEECHRNN_PROGRESS=0), a file longer than a few chunks
        shows a bar of audio seconds done."""
        from .audio import audio_duration
        from .progress import progress_bar

        name = _name(source)
        if isinstance(source, (str, Path)):
            blocks = stream_audio(source, self.sample_rate, self.chunking.max_chunk_s)
            seconds = audio_duration(source)
        else:
            blocks = [self.audio(source, sample_rate)]
            seconds = len(blocks[0]) / self.sample_rate
        long = progress is not False and seconds > 3 * self.chunking.max_chunk_s
        pieces, total = [], 0
        pending: list[tuple[int, np.ndarray]] = []
        with progress_bar(int(seconds), Path(name).name, progress if long else False) as bar:
            bar.unit = "audio-s"
            for offset, chunk in chunks(blocks, self.sample_rate, self.chunking):
                total = offset + len(chunk)
                pending.append((offset, chunk))
                if len(pending) == self.batch_size:
                    pieces += self._run(pending, options)
                    bar.update(min(int(total / self.sample_rate), bar.total) - bar.n)
                    pending = []
            if total < MIN_SECONDS * self.sample_rate:
                raise AudioError(name, f"audio too short to transcribe "
                                       f"({total / self.sample_rate:.3f} s < {MIN_SECONDS} s)")
            pieces += self._run(pending, options)
            bar.update(bar.total - bar.n)
        return _join(pieces, total / self.sample_rate, name)

    def transcribe_batch(self, audios: list[np.ndarray],
                         options: DecodingOptions | None = None) -> list[Hypothesis]:
        """Short utterances (model-rate arrays) through the network together; word edges
        snapped to the sound (:func:`snap_to_speech`)."""
        # BLAS threads left spinning after the feature matmuls steal the cores ONNX Runtime's
        # LSTM needs: held to one, transcription runs about 1.8x faster on 2 cores
        with self._blas.limit(limits=1, user_api="blas"):
            return [snap_to_speech(self.decode(lp, options), audio, self.sample_rate)
                    for lp, audio in zip(self.log_probs_batch(audios), audios)]

    def _run(self, pending, options) -> list[Hypothesis]:
        pending = [(o, c) for o, c in pending if len(c) >= self.sample_rate // 100]
        if not pending:
            return []
        hyps = self.transcribe_batch([c for _, c in pending], options)
        return [h.shifted(o / self.sample_rate) for (o, _), h in zip(pending, hyps)]


def _join(pieces: list[Hypothesis], duration: float, source: str) -> Transcript:
    words = tuple(w for p in pieces for w in p.words)
    letters = [(len(p.text.replace(" ", "")), p.confidence) for p in pieces if p.text]
    n = sum(k for k, _ in letters)
    confidence = math.exp(sum(k * math.log(max(c, 1e-12)) for k, c in letters) / n) if n else 0.0
    return Transcript(" ".join(p.text for p in pieces if p.text), words, confidence,
                      duration, source)


def _load_network(files, backend: str, threads: int):
    from .export import OnnxNetwork, build_onnx, onnx_available, onnxruntime_available

    if backend not in ("auto", "onnx", "keras"):
        raise ValueError(f"backend must be auto, onnx or keras, not {backend!r}")
    if backend == "onnx" and not onnxruntime_available():
        raise RuntimeError("backend onnx needs onnxruntime (pip install onnxruntime)")
    if backend != "keras" and onnxruntime_available():
        if files.onnx.exists() and files.onnx.stat().st_mtime >= files.weights.stat().st_mtime:
            return OnnxNetwork(files.onnx, threads), "onnx"
        if not onnx_available() and backend == "onnx":
            raise RuntimeError(f"{files.path}: no model.onnx, and the onnx package is not "
                               "installed to export one")
    from .model import load_model as load_keras

    keras_model = load_keras(files.path)[0]
    if backend != "keras" and onnxruntime_available() and onnx_available():
        # an older model directory: export in memory
        return OnnxNetwork(build_onnx(keras_model).SerializeToString(), threads), "onnx"
    return keras_model, "keras"


def load_model(model: str | Path, **options) -> Transcriber:
    """A ready :class:`Transcriber` for a model directory, ``runs:/<run_id>/model`` or
    ``models:/<name>/<version>``; keyword options are :class:`Transcriber`'s."""
    return Transcriber(resolve_model(model), **options)


# output formats ---------------------------------------------------------------------------

def _clock(seconds: float, sep: str) -> str:
    ms = int(round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def cues(words, max_words: int = 12, max_gap: float = 0.6,
         max_seconds: float = 6.0) -> list[tuple[float, float, str]]:
    """Group words into subtitle cues: a new cue after a pause longer than ``max_gap``,
    or when a cue would exceed ``max_words`` words or ``max_seconds``."""
    out, group = [], []
    for w in words:
        if group and (len(group) >= max_words or w.start - group[-1].end > max_gap
                      or w.end - group[0].start > max_seconds):
            out.append((group[0].start, group[-1].end, " ".join(x.word for x in group)))
            group = []
        group.append(w)
    if group:
        out.append((group[0].start, group[-1].end, " ".join(x.word for x in group)))
    return out


def format_transcript(t: Transcript, fmt: str, max_words: int = 12) -> str:
    """``t`` as txt, json, srt or vtt."""
    if fmt == "txt":
        return t.text + "\n"
    if fmt == "json":
        return json.dumps(t.as_dict(), ensure_ascii=False) + "\n"
    if fmt not in ("srt", "vtt"):
        raise ValueError(f"unknown output format {fmt!r} (txt, json, srt, vtt)")
    sep = "," if fmt == "srt" else "."
    lines = [] if fmt == "srt" else ["WEBVTT", ""]
    for i, (start, end, text) in enumerate(cues(t.words, max_words), 1):
        if fmt == "srt":
            lines.append(str(i))
        lines += [f"{_clock(start, sep)} --> {_clock(end, sep)}", text, ""]
    return "\n".join(lines) + ("\n" if fmt == "vtt" and not t.words else "")

"""How a model transcribes unless told otherwise: one frozen :class:`InferenceOptions`, saved
with the model as ``inference.json`` (its word LM beside it as ``lm.arpa``) and read in one
place (:meth:`InferenceOptions.of_model`).

Who writes it: training, when it keeps a best epoch (the recipe's ``eval.edge_pad_s`` and
``eval.speaker_cmvn``), and a recipe's evaluate stage (:func:`save_decoding`: the beam
search, its LM and the LM weight and word bonus chosen on dev). Who reads it:
:class:`speechrnn.transcribe.Transcriber`, and through it ``speechrnn transcribe``,
``evaluate`` and ``serve``; their flags and keywords replace the fields they name
(``dataclasses.replace``).

Models saved before this file existed kept the decoding in ``decoding.json`` and the edge
padding and speaker CMVN in ``model.json``: :func:`from_older_files` reads them.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from .config import EvalConfig
from .decoding import Decoding, DecodingOptions
from .errors import InputError
from .files import atomic_write, atomic_write_text
from .lm import WordLM

INFERENCE_FILE = "inference.json"
LM_FILE = "lm.arpa"
OLDER_DECODING_FILE = "decoding.json"  # before inference.json: the decoding alone

__all__ = ["INFERENCE_FILE", "LM_FILE", "InferenceOptions", "from_older_files",
           "save_decoding"]


@dataclass(frozen=True)
class InferenceOptions:
    decoder: str = "greedy"  # greedy | beam
    beam_width: int = EvalConfig.beam_width
    lm: str | None = None  # beam search's word LM: a file in the model directory, or None
    lm_weight: float = EvalConfig.lm_weight
    word_bonus: float = EvalConfig.word_bonus
    prune: float = DecodingOptions.prune
    engine: str = "auto"  # beam search with an LM: auto | flashlight (C++) | python
    vad: bool = True  # audio without speech is not decoded
    edge_pad_s: float = 0.0  # quiet added at both ends of each piece of audio
    speaker_cmvn: bool = False  # evaluation: each utterance normalised as its speaker's
    backend: str = "auto"  # the network: auto | onnx | keras

    def __post_init__(self):
        DecodingOptions(self.decoder, self.beam_width, engine=self.engine)  # checks them
        if self.backend not in ("auto", "onnx", "keras"):
            raise InputError(f"backend must be auto, onnx or keras, not {self.backend!r}")
        if not self.edge_pad_s >= 0:
            raise InputError(f"edge_pad_s must be >= 0, not {self.edge_pad_s}")

    @property
    def decoding(self) -> DecodingOptions:
        """The decoder's options."""
        return DecodingOptions(self.decoder, self.beam_width, self.lm_weight,
                               self.word_bonus, self.prune, self.engine)

    def with_decoding(self, options: DecodingOptions, lm: str | None = None
                      ) -> InferenceOptions:
        """These options with the decoder's replaced by ``options`` and the LM by ``lm``."""
        return replace(self, decoder=options.method, beam_width=options.beam_width,
                       lm_weight=options.lm_weight, word_bonus=options.word_bonus,
                       prune=options.prune, engine=options.engine, lm=lm)

    def load_lm(self, model_dir: str | Path) -> WordLM | None:
        """The word LM :attr:`lm` names (relative to ``model_dir``), for beam search."""
        if self.lm is None or self.decoder != "beam":
            return None
        return WordLM.load(Path(model_dir) / self.lm)

    def save(self, model_dir: str | Path) -> Path:
        """Write ``inference.json`` into ``model_dir`` (the engine and backend are left to
        each machine)."""
        saved = {k: v for k, v in asdict(self).items() if k not in ("engine", "backend")}
        path = Path(model_dir) / INFERENCE_FILE
        atomic_write_text(path, json.dumps(saved, indent=2) + "\n")
        return path

    @classmethod
    def of_model(cls, model_dir: str | Path) -> InferenceOptions:
        """The options saved with a model; a model without ``inference.json`` was saved
        before it existed (:func:`from_older_files`)."""
        path = Path(model_dir) / INFERENCE_FILE
        if not path.is_file():
            return from_older_files(model_dir)
        try:
            saved = json.loads(path.read_text())
            known = {f.name for f in fields(cls)}
            return cls(**{k: v for k, v in saved.items() if k in known})
        except (ValueError, TypeError, AttributeError) as err:
            raise InputError(f"{path}: not an inference options file ({err})") from None


def from_older_files(model_dir: str | Path) -> InferenceOptions:
    """The options of a model saved before ``inference.json``: its ``decoding.json`` (the
    decoder, beam, weights and LM file; greedy without one) and the ``edge_pad_s`` and
    ``speaker_cmvn`` its ``model.json`` kept."""
    model_dir = Path(model_dir)
    options = InferenceOptions()
    meta_path = model_dir / "model.json"
    try:
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        options = replace(options, edge_pad_s=float(meta.get("edge_pad_s", 0.0)),
                          speaker_cmvn=bool(meta.get("speaker_cmvn", False)))
    except (ValueError, TypeError, AttributeError) as err:
        raise InputError(f"{meta_path}: not a model file ({err})") from None
    path = model_dir / OLDER_DECODING_FILE
    if not path.is_file():
        return options
    try:
        saved = json.loads(path.read_text())
        lm = saved.pop("lm", None)
        return options.with_decoding(DecodingOptions(**saved), lm)
    except (ValueError, TypeError, AttributeError) as err:
        raise InputError(f"{path}: not a decoding file ({err})") from None


def save_decoding(model_dir: str | Path, decoding: Decoding) -> list[Path]:
    """Make ``decoding`` (options and word LM) the model's own: its LM written beside it
    as ``lm.arpa`` (a former one removed when it has none) and ``inference.json`` updated.
    Returns the files written."""
    model_dir = Path(model_dir)
    lm_file = model_dir / LM_FILE
    written = []
    if decoding.lm is not None:
        source = decoding.lm.path
        if source is None or not source.is_file() or source.suffix == ".gz":
            decoding.lm.write_arpa(lm_file)
        elif source.resolve() != lm_file.resolve():
            with open(source, "rb") as src, atomic_write(lm_file) as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        written.append(lm_file)
    else:
        lm_file.unlink(missing_ok=True)
    own = InferenceOptions.of_model(model_dir)
    options = own.with_decoding(decoding.options, LM_FILE if decoding.lm is not None else None)
    (model_dir / OLDER_DECODING_FILE).unlink(missing_ok=True)
    return [options.save(model_dir), *written]

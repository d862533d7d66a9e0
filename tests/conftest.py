"""Shared fixtures: small generated audio, and the real corpora when they are present."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

os.environ.setdefault("SPEECHRNN_PROGRESS", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parents[1]


def corpora_root() -> Path:
    return Path(os.environ.get("SPEECHRNN_CORPORA", ROOT.parent / "shared" / "corpora"))


@pytest.fixture
def corpora() -> Path:
    root = corpora_root()
    if not (root / "fsdd").is_dir() or not (root / "speechocean762").is_dir():
        pytest.skip(f"real corpora not found at {root} (set SPEECHRNN_CORPORA)")
    return root


@pytest.fixture
def needs_espeak():
    if not shutil.which("espeak-ng"):
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")


def tone(seconds: float = 1.0, sr: int = 16000, channels: int = 1, freq: float = 440.0,
         amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    x = amp * np.sin(2 * np.pi * freq * t)
    if channels > 1:
        x = np.stack([x * (0.5 + 0.5 * c / channels) for c in range(channels)], axis=1)
    return x.astype(np.float32)


def write(path: Path, audio: np.ndarray, sr: int = 16000, subtype: str | None = None,
          format: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio, sr, subtype=subtype, format=format)
    return path


def bad_files(folder: Path, stem=lambda name: name) -> dict[str, Path]:
    """The usual suspects: each maps to the path of a file that must be rejected."""
    folder.mkdir(parents=True, exist_ok=True)
    good = write(folder / "_tmp_good.wav", tone(0.5))
    data = good.read_bytes()
    good.unlink()
    files = {
        "corrupt": folder / f"{stem('corrupt')}.wav",
        "empty": folder / f"{stem('empty')}.wav",
        "text": folder / f"{stem('text')}.wav",
    }
    files["corrupt"].write_bytes(data[:12] + bytes(range(256)) * 2 + data[524:])
    files["empty"].write_bytes(b"")
    files["text"].write_text("this is a text file, not audio\n")
    return files

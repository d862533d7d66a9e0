"""Shared fixtures: small generated audio, and the real corpora when they are present."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

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


def mlflow_run(tmp_path: Path, run_id: str):
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    return client, client.get_run(run_id)


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


# the tiny synthetic corpus, as a config's data section
TINY_DATA = {"kind": "synth", "synth_train": 16, "synth_dev": 4, "synth_test": 4}
# a network and a training run small enough for a test
TINY = {
    "model": {"conv_filters": 16, "lstm_layers": 1, "lstm_units": 16, "dropout": 0.0},
    "batch": {"batch_size": 4, "buckets": 1},
    "train": {"epochs": 2, "learning_rate": 0.003},
}


def write_config(tmp_path: Path, corpus: Path, **sections) -> Path:
    """A recipe YAML (tmp_path/tiny.yaml) training TINY on ``corpus``, its work directory,
    feature cache and MLflow store under ``tmp_path``; ``sections`` update its sections."""
    data = json.loads(json.dumps(TINY))
    data["data"] = {**TINY_DATA, "out": str(corpus), "cache": str(tmp_path / "cache")}
    data["train"]["workdir"] = str(tmp_path / "run")
    data["tracking"] = {"uri": f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"}
    for key, value in sections.items():
        data.setdefault(key, {}).update(value)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="session")
def synth_corpus(tmp_path_factory):
    """A tiny synthetic corpus: 16 train, 4 dev and 4 test utterances (espeak-ng), prepared
    as a config with ``TINY_DATA`` would prepare it (so such a config reuses it)."""
    if not shutil.which("espeak-ng"):
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    from speechrnn import pipeline
    from speechrnn.config import Config, DataConfig

    out = tmp_path_factory.mktemp("corpus")
    pipeline.prepare(Config(data=DataConfig(out=str(out), **TINY_DATA)), progress=False)
    return out


@pytest.fixture
def corpus(synth_corpus):
    """The tiny synthetic corpus (made once a session)."""
    return synth_corpus


@pytest.fixture(scope="session")
def trained(synth_corpus, tmp_path_factory):
    """A tiny model trained for two epochs, tracked in its own MLflow store:
    a namespace with model_dir, run_id, uri (tracking), name (registered), corpus and
    config (the YAML it was trained from)."""
    import types

    from speechrnn import pipeline
    from speechrnn.config import load_pipeline_config
    from speechrnn.tracking import experiment_name

    tmp = tmp_path_factory.mktemp("trained")
    uri = f"sqlite:///{tmp / 'mlruns' / 'mlflow.db'}"
    config = write_config(tmp, synth_corpus)
    cfg = load_pipeline_config(config)
    result = pipeline.train(cfg, progress=False)
    return types.SimpleNamespace(model_dir=result.model_dir, run_id=result.run_id, uri=uri,
                                 name=experiment_name(cfg), corpus=synth_corpus,
                                 config=config)


def flaky(monkeypatch, module, name: str, failures: int) -> list:
    """``module.name`` fails as MLflow does on SQLite's "database is locked" for its first
    ``failures`` calls; returns the list of calls, True for each that went through."""
    import mlflow

    real, calls = getattr(module, name), []

    def call(*args, **kwargs):
        calls.append(len(calls) >= failures)
        if not calls[-1]:
            raise mlflow.exceptions.MlflowException(
                "(sqlite3.OperationalError) database is locked",
                error_code="TEMPORARILY_UNAVAILABLE")
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, call)
    return calls


def full_disk(monkeypatch) -> None:
    """Every file :mod:`speechrnn.files` writes fills the disk halfway through: half its
    bytes reach the temporary file, then ENOSPC, as a real full disk does."""
    import contextlib
    import errno

    from speechrnn import files

    class HalfFull:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            self.f.write(data[:len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.f, name)

    real = files.atomic_write

    @contextlib.contextmanager
    def half_full(path, *args, **kwargs):
        with real(path, *args, **kwargs) as f:
            yield HalfFull(f)

    monkeypatch.setattr(files, "atomic_write", half_full)


def check_epochs_are_seeded(batches, n: int) -> None:
    """``batches(epoch, seed=1, skip=0)`` -> [(indexes, features)] of a training epoch:
    every item once; the same (seed, epoch) gives the same batches, another epoch or seed
    another order; skipping k batches gives the tail (what a resumed run sees)."""
    e0, again, e1 = batches(0), batches(0), batches(1)
    assert sorted(i for idx, _ in e0 for i in idx) == list(range(n))
    assert [i for i, _ in e0] == [i for i, _ in again]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(e0, again, strict=True))
    assert [i for i, _ in e0] != [i for i, _ in e1]
    assert [i for i, _ in e0] != [i for i, _ in batches(0, seed=2)]
    tail = batches(0, skip=2)
    assert [i for i, _ in tail] == [i for i, _ in e0[2:]]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(tail, e0[2:], strict=True))


def talkative_model(trained, tmp_path):
    """The tiny trained model with its weights sharpened at random: it says something for
    any sound (the tiny model itself says nothing yet)."""
    from speechrnn.model import load_network, save_model

    model, features, alphabet, _ = load_network(trained.model_dir)
    rng = np.random.default_rng(0)
    model.set_weights([w + rng.normal(0, 0.5, w.shape).astype(w.dtype)
                       for w in model.get_weights()])
    return save_model(tmp_path / "talkative", model, features, alphabet)


@pytest.fixture
def talkative(trained, tmp_path):
    """:func:`talkative_model`, registered in the ``trained`` store as
    ``speechrnn-talkative``: (its directory, its ``models:/`` URI)."""
    from speechrnn.config import Config, TrackingConfig
    from speechrnn.tracking import make_tracker

    path = talkative_model(trained, tmp_path)
    tracker = make_tracker(Config(name="talkative", tracking=TrackingConfig(uri=trained.uri)))
    assert tracker.experiment == "speechrnn-talkative"
    tracker.start()
    info = tracker.log_model(path, "speechrnn-talkative")
    tracker.end()
    return path, f"models:/speechrnn-talkative/{info['version']}"


def non_speech_signals(seconds: float = 10.0, sample_rate: int = 16000,
                       seed: int = 0) -> dict[str, np.ndarray]:
    """Sounds that hold no speech, each ``seconds`` long: white, pink and brown noise, mains
    hum, a steady tone, a chord, a played melody, silence and near-silent noise; what
    :func:`speechrnn.vad.speech_regions` must find nothing in."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sample_rate)
    t = np.arange(n) / sample_rate

    def coloured(power: float) -> np.ndarray:  # noise whose power falls as 1/f**power
        spectrum = np.fft.rfft(rng.normal(0, 1, n))
        f = np.fft.rfftfreq(n, 1 / sample_rate)
        spectrum[1:] /= f[1:] ** (power / 2)
        spectrum[0] = 0
        x = np.fft.irfft(spectrum, n)
        return 0.1 * x / x.std()

    def notes(freqs) -> np.ndarray:
        return sum(np.sin(2 * np.pi * f * t) for f in freqs) * 0.3 / len(freqs)

    melody = np.zeros(n)
    scale = [261.6, 293.7, 329.6, 349.2, 392.0, 440.0, 493.9, 523.3]
    step = sample_rate // 4
    tt = np.arange(step) / sample_rate
    for start in range(0, n - step + 1, step):
        f = scale[rng.integers(len(scale))]
        melody[start:start + step] = (0.3 * np.sin(2 * np.pi * f * tt) * np.exp(-6 * tt)
                                      + 0.1 * np.sin(4 * np.pi * f * tt) * np.exp(-8 * tt))
    signals = {
        "white noise": rng.normal(0, 0.1, n), "loud white noise": rng.normal(0, 0.4, n),
        "pink noise": coloured(1), "brown noise": coloured(2),
        "hum 50 Hz": notes([50, 100, 150]), "hum 60 Hz": notes([60, 180]),
        "tone 440 Hz": notes([440]), "chord": notes([261.6, 329.6, 392.0]),
        "melody": melody, "silence": np.zeros(n), "quiet noise": rng.normal(0, 0.001, n)}
    return {k: np.clip(v, -1, 1).astype(np.float32) for k, v in signals.items()}

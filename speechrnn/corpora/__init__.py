"""Importers: a corpus on disk -> manifests (+ ``rejected.tsv``), and the synthetic corpus."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

from ..config import CorpusConfig, DataConfig, manifest_path, resolve_source
from ..errors import InputError, NotFoundError
from ..manifest import write_manifest
from .fsdd import import_fsdd
from .importer import ImportOptions, ImportResult, Rejected, split_by_speaker, validate
from .kaldi import import_kaldi
from .librispeech import import_librispeech
from .ljspeech import import_ljspeech
from .synth import SynthError, make_joined_digits, make_synth_corpus
from .tables import import_commonvoice, import_generic, import_speechocean762

IMPORTERS: dict[str, Callable[[Path, ImportOptions], ImportResult]] = {
    "fsdd": import_fsdd,
    "speechocean762": import_speechocean762,
    "kaldi": import_kaldi,
    "librispeech": import_librispeech,
    "ljspeech": import_ljspeech,
    "commonvoice": import_commonvoice,
    "generic": import_generic,
}


def import_corpus(kind: str, source: str | Path, options: ImportOptions) -> ImportResult:
    """Import ``source`` with the importer named ``kind`` (a key of ``IMPORTERS``)."""
    if kind not in IMPORTERS:
        raise InputError(f"unknown corpus kind {kind!r}; choose from {', '.join(IMPORTERS)}")
    source = Path(source)
    if not source.exists():
        raise NotFoundError(f"{source}: corpus source not found")
    return IMPORTERS[kind](source, options)


def _up_to_date(stamp: Path, settings: dict) -> bool:
    """Were the files beside ``stamp`` built with these settings?"""
    try:
        return json.loads(stamp.read_text()) == json.loads(json.dumps(settings))
    except (FileNotFoundError, ValueError):
        return False


def prepare_corpus(cfg: DataConfig, corpus: CorpusConfig, options: ImportOptions,
                   corpora: str | Path | None = None, force: bool = False) -> None:
    """Import a further corpus of ``data.corpora`` (whole: no dev or test carved out of
    it) into ``cfg.corpus_dir(corpus)``, unless it is there with the same settings."""
    out = cfg.corpus_dir(corpus)
    settings = {"kind": corpus.kind, "source": corpus.source, "seed": cfg.seed,
                "format": cfg.format, "ctc_frames_per_second": options.ctc_frames_per_second,
                "only_words": list(corpus.only_words)}
    wanted = [manifest_path(out, split, cfg.format) for split in corpus.splits]
    if not force and all(p.exists() for p in wanted) and \
            _up_to_date(out / "prepared.json", settings):
        return
    result = import_corpus(corpus.kind, resolve_source(corpus.source, corpora),
                           replace(options, out=out, test_speakers=(), dev_speakers=(),
                                   dev_fraction=None, test_fraction=None))
    if corpus.only_words:
        words = set(corpus.only_words)
        for split, rows in result.manifests.items():
            kept = [r for r in rows if set(r.text.split()) <= words]
            result.files[split] = write_manifest(result.files[split], kept)
            result.manifests[split] = kept
    missing = [s for s in corpus.splits if s not in result.manifests]
    if missing:
        raise InputError(f"data.corpora {corpus.source}: the import has no "
                         f"{', '.join(missing)} manifest (it has "
                         f"{', '.join(result.manifests) or 'none'}; see {out / 'rejected.tsv'})")
    (out / "prepared.json").write_text(json.dumps(settings))


def prepare_data(cfg: DataConfig, corpora: str | Path | None = None, force: bool = False,
                 progress: bool | None = None,
                 ctc_frames_per_second: float = ImportOptions.ctc_frames_per_second,
                 ) -> ImportResult | None:
    """Build the manifests ``cfg`` names, unless they are already there, built with the
    same settings (``prepared.json`` beside them records those). Transcripts must fit their
    audio at ``ctc_frames_per_second`` (``Config.ctc_frames_per_second``).

    Returns the import result, or None when every manifest was already there.
    """
    out = Path(cfg.out)
    settings = {k: v for k, v in asdict(cfg).items()
                if k not in ("out", "cache", "extra_train", "corpora", "train_weight")
                and not k.startswith("synth_extra")}
    settings["ctc_frames_per_second"] = ctc_frames_per_second
    extra = {"synth_extra": cfg.synth_extra, "digit_share": cfg.synth_extra_digit_share,
             "seed": cfg.seed}
    if cfg.synth_extra_joined:
        extra.update(joined=True, rate=cfg.synth_extra_rate, perturb=cfg.perturb)
    options = ImportOptions(out=out, format=cfg.format, seed=cfg.seed,
                            test_speakers=tuple(cfg.test_speakers),
                            dev_speakers=tuple(cfg.dev_speakers),
                            dev_fraction=cfg.dev_fraction, progress=progress,
                            ctc_frames_per_second=ctc_frames_per_second)
    extra_manifest = cfg.synth_extra_manifest()
    extra_stamp = extra_manifest.parent / "prepared.json"
    if cfg.synth_extra and (force or not extra_manifest.exists()
                            or not _up_to_date(extra_stamp, extra)):
        extra_options = replace(options, out=extra_manifest.parent, format="jsonl")
        if cfg.synth_extra_joined:
            make_joined_digits(extra_options, cfg.synth_extra, bandwidth_rate=cfg.synth_extra_rate,
                               perturb=cfg.perturb)
        else:
            make_synth_corpus(extra_options, cfg.synth_extra, 0, 0, cfg.synth_extra_digit_share)
        extra_stamp.write_text(json.dumps(extra))
    for corpus in cfg.corpora:
        prepare_corpus(cfg, corpus, options, corpora, force)
    wanted = [cfg.manifest(split) for split in ("train", "dev", "test")]
    if not force and all(p.exists() for p in wanted) and \
            _up_to_date(out / "prepared.json", settings):
        return None
    if cfg.kind == "synth":
        result = make_synth_corpus(options, cfg.synth_train, cfg.synth_dev, cfg.synth_test,
                                   cfg.synth_digit_share)
    else:
        if cfg.source is None:
            raise InputError(f"data.source is required for data.kind={cfg.kind}")
        source = resolve_source(cfg.source, corpora)
        if cfg.kind == "fsdd":
            result = import_fsdd(source, options, per_speaker=cfg.per_speaker,
                                 perturb=cfg.perturb)
        else:
            result = import_corpus(cfg.kind, source, options)
    (out / "prepared.json").write_text(json.dumps(settings))
    return result


__all__ = ["IMPORTERS", "ImportOptions", "ImportResult", "Rejected", "SynthError",
           "import_corpus", "make_joined_digits", "make_synth_corpus", "prepare_data",
           "resolve_source", "split_by_speaker", "validate"]

"""Phone units: a phone model's labels, its lexicon saved and checked, and its words found
by the lexicon search (with a word LM or without one)."""

import json

import numpy as np
import pytest

from speechrnn import fastbeam
from speechrnn.config import ConfigError, ModelConfig
from speechrnn.decoding import DecodingOptions, decode, decode_text, greedy_decode
from speechrnn.evaluate import phone_error_rate
from speechrnn.lexicon import (
    PHONES,
    Lexicon,
    LexiconError,
    PhoneAlphabet,
    load_units,
    phones_only,
)
from speechrnn.text import Alphabet, TextError

needs_flashlight = pytest.mark.skipif(not fastbeam.available(),
                                      reason="flashlight-text is not installed")
LEXICON = Lexicon({"hello": (("HH", "AH", "L", "OW"), ("HH", "EH", "L", "OW")),
                   "world": (("W", "ER", "L", "D"),), "word": (("W", "ER", "D"),)})


def spelled(alphabet, phones: str) -> list[int]:
    return [alphabet.symbols.index(p) + 1 for p in phones.split()]


def frames_of(alphabet, labels: list[int], sure: float = 0.9) -> np.ndarray:
    """Log-probabilities that spell ``labels``, a blank after each."""
    rows = []
    for k in labels:
        for best in (k, alphabet.blank):
            row = np.full(alphabet.size, (1 - sure) / (alphabet.size - 1))
            row[best] = sure
            rows.append(np.log(row))
    return np.array(rows, np.float32)


def test_phone_labels_spell_each_word_by_its_first_pronunciation():
    units = PhoneAlphabet(LEXICON)
    assert units.size == len(PHONES) + 2 and units.symbols[units.separator - 1] == "|"
    labels = units.encode("hello world")
    assert labels == spelled(units, "HH AH L OW | W ER L D")
    assert units.decode(labels) == "HH AH L OW | W ER L D"
    assert units.spellings("hello") == [spelled(units, "HH AH L OW"), spelled(units, "HH EH L OW")]
    assert units.unknown("hello there") == {"there"} and not units.can_spell("there")


def test_a_word_without_a_pronunciation_is_named():
    with pytest.raises(TextError, match="'there'"):
        PhoneAlphabet(LEXICON).encode("hello there world")


def test_units_are_saved_with_their_lexicon_and_checked_when_read(tmp_path):
    units = PhoneAlphabet(LEXICON)
    units.save(tmp_path / "alphabet.json")
    assert (tmp_path / "lexicon.txt").is_file()
    back = load_units(tmp_path / "alphabet.json")
    assert back == units and back.key.startswith("phones:") and back.encode("word") == \
        units.encode("word")
    # another lexicon beside the model: it would spell the words otherwise
    Lexicon({**LEXICON.pronunciations, "word": (("W", "AO", "D"),)}).save(
        tmp_path / "lexicon.txt")
    with pytest.raises(LexiconError, match="does not match the model's units"):
        load_units(tmp_path / "alphabet.json")
    (tmp_path / "lexicon.txt").unlink()
    with pytest.raises(LexiconError, match="needs its lexicon"):
        load_units(tmp_path / "alphabet.json")
    Alphabet().save(tmp_path / "chars.json")
    assert load_units(tmp_path / "chars.json") == Alphabet()
    with pytest.raises(ValueError, match="need their lexicon"):
        Alphabet.load(tmp_path / "alphabet.json")


def test_the_lexicon_key_follows_the_pronunciations():
    same = PhoneAlphabet(Lexicon(dict(LEXICON.pronunciations)))
    other = PhoneAlphabet(Lexicon({**LEXICON.pronunciations, "word": (("W", "AO", "D"),)}))
    assert same.key == PhoneAlphabet(LEXICON).key != other.key
    assert Alphabet().key == Alphabet().characters


def test_model_config_checks_its_units():
    with pytest.raises(ConfigError, match="chars|phones"):
        ModelConfig(units="letters")
    with pytest.raises(ConfigError, match="model.lexicon"):
        ModelConfig(lexicon="lexicon.txt")


def test_phone_error_rate_counts_phones_not_word_separators():
    assert phone_error_rate(["HH AH | L OW"], ["HH | L OW"]) == pytest.approx(0.25)
    assert phone_error_rate(["HH AH", ""], ["HH AH", "W"]) == 0.0  # no reference: not scored
    assert phones_only("W ER | D") == "W ER D"


@needs_flashlight
def test_a_phone_model_finds_words_in_its_lexicon_without_an_lm():
    units = PhoneAlphabet(LEXICON)
    # the second pronunciation of hello, then word: both spellings are in the search
    lp = frames_of(units, spelled(units, "HH EH L OW | W ER D"))
    assert greedy_decode(lp, units) == "HH EH L OW | W ER D"
    for method in ("greedy", "beam"):
        assert decode_text(lp, units, DecodingOptions(method, beam_width=8)) == "hello word"
    hyp = decode(lp, units, DecodingOptions(beam_width=8), frame_seconds=0.03)
    assert [w.word for w in hyp.words] == ["hello", "word"]
    assert hyp.words[0].start == 0.0 and hyp.words[0].end <= hyp.words[1].start
    assert hyp.units == "HH EH L OW | W ER D" and hyp.as_dict()["phones"] == hyp.units
    with pytest.raises(Exception, match="lexicon"):
        decode_text(lp, units, DecodingOptions("beam", engine="python"))


@needs_flashlight
def test_a_phone_model_decodes_with_the_word_lm(tmp_path):
    from speechrnn.decoding import lexicon_search
    from speechrnn.lm import WordLM

    units = PhoneAlphabet(LEXICON)
    lm = WordLM.from_texts(["hello world"] * 20 + ["word"], 2)
    lm.write_arpa(tmp_path / "lm.arpa")
    lm = WordLM.load(tmp_path / "lm.arpa")
    # "W ER ? D": the L is unsure; the LM prefers world after hello
    lp = frames_of(units, spelled(units, "HH AH L OW | W ER L D"))
    lp[-4] = np.log(np.full(units.size, 1 / units.size))
    options = DecodingOptions("beam", beam_width=16, lm_weight=2.0)
    assert decode_text(lp, units, options, lm) == "hello world"
    assert lexicon_search(units, options, lm) is lexicon_search(units, options, lm)


@needs_flashlight
def test_a_phone_model_trains_saves_its_lexicon_and_transcribes_words(synth_corpus, tmp_path,
                                                                      capsys):
    """The recipe's lexicon is built from its transcripts, a word it cannot spell skips
    its utterance by name, dev PER is a metric, and the model directory carries the
    lexicon: evaluation reports PER and transcription gives words."""
    from conftest import TINY_DATA

    from speechrnn import pipeline
    from speechrnn.config import load_pipeline_config
    from speechrnn.lexicon import recipe_lexicon
    from speechrnn.manifest import read_manifest

    data = synth_corpus
    cfg_file = tmp_path / "phones.yaml"
    cfg_file.write_text(json.dumps({
        "model": {"conv_filters": 16, "lstm_layers": 1, "lstm_units": 16, "dropout": 0.0,
                  "units": "phones"},
        "batch": {"batch_size": 4, "buckets": 1},
        "train": {"epochs": 2, "learning_rate": 0.003, "workdir": str(tmp_path / "run")},
        "data": {**TINY_DATA, "out": str(data), "cache": str(tmp_path / "cache")},
        "tracking": {"enabled": False}}))
    cfg = load_pipeline_config(cfg_file)
    lexicon = recipe_lexicon(cfg, progress=False)
    words = {w for p in ("train", "dev") for r in read_manifest(data / f"{p}.jsonl")
             for w in r.text.split()}
    assert words <= set(lexicon.pronunciations)
    # a lexicon that lacks a training word: that utterance is skipped, the word named
    first = read_manifest(data / "train.jsonl")[0]
    dropped = first.text.split()[0]
    Lexicon({w: p for w, p in lexicon.pronunciations.items() if w != dropped}).save(
        tmp_path / "lexicon.txt")
    cfg = load_pipeline_config(cfg_file, [f"model.lexicon={tmp_path / 'lexicon.txt'}"])
    result = pipeline.train(cfg, progress=False)
    printed = capsys.readouterr().out
    assert f"skipped {first.audio}: no pronunciation in the lexicon for {dropped!r}" in printed
    assert "PER" in printed  # each epoch's dev phone error rate
    model_dir = result.model_dir
    assert (model_dir / "lexicon.txt").is_file()
    assert json.loads((model_dir / "alphabet.json").read_text())["units"] == "phones"
    report = pipeline.evaluate(model_dir, data / "test.jsonl", progress=False)
    assert report.rates.per is not None and 0 <= report.rates.per
    assert "per" in report.summary()
    (transcript,) = pipeline.transcribe(model_dir, [read_manifest(data / "test.jsonl")[0].audio],
                                        progress=False)
    assert all(w.word in lexicon.pronunciations for w in transcript.words)


@needs_flashlight
@pytest.mark.parametrize("source", ["memory", "shards"])
def test_an_auxiliary_phone_head_trains_under_a_character_head(synth_corpus, tmp_path, source):
    """model.aux_ctc: the training batches carry the transcripts in phones too (in memory
    and streamed from shards), the loss mixes both heads, and the model it saves is a
    character model whose transcription is unchanged by the auxiliary head."""
    from conftest import TINY_DATA

    from speechrnn import pipeline
    from speechrnn.config import load_pipeline_config
    from speechrnn.dataset import make_dataset
    from speechrnn.lexicon import recipe_lexicon
    from speechrnn.train import load_data

    cfg = load_pipeline_config(None, [
        "model.conv_filters=16", "model.lstm_layers=2", "model.lstm_units=16",
        "model.dropout=0.0", "model.aux_ctc.units=phones", "model.aux_ctc.layer=1",
        "batch.batch_size=4", "batch.buckets=1", "train.epochs=1",
        f"train.workdir={tmp_path / 'run'}", f"batch.source={source}",
        f"data.cache={tmp_path / 'cache'}", "tracking.enabled=false",
        *(f"data.{k}={v}" for k, v in {**TINY_DATA, "out": synth_corpus}.items())])
    data = load_data(cfg, progress=False)
    batch = next(iter(make_dataset(data.train, cfg.batch, training=True)))
    assert {"aux_labels", "aux_label_lengths"} <= set(batch)
    phones = PhoneAlphabet(recipe_lexicon(cfg, progress=False))
    for i, labels, n in zip(batch["index"].numpy(), batch["aux_labels"].numpy(),
                            batch["aux_label_lengths"].numpy()):
        assert labels[:n].tolist() == phones.encode(data.train.rows[i].text)
    dev = next(iter(make_dataset(data.dev, cfg.batch)))
    assert "aux_labels" not in dev  # dev scores the main head
    result = pipeline.train(cfg, progress=False)
    assert json.loads((result.model_dir / "alphabet.json").read_text())["characters"]
    report = pipeline.evaluate(result.model_dir, synth_corpus / "test.jsonl", progress=False)
    assert report.rates.per is None and 0 <= report.rates.wer

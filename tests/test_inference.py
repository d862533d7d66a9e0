"""A model's own inference options: saved with it, read back, replaced field by field, and
read from the files older models kept them in."""

import json
from dataclasses import replace

import pytest

from speechrnn.decoding import Decoding, DecodingOptions
from speechrnn.errors import InputError
from speechrnn.inference import LM_FILE, InferenceOptions, from_older_files, save_decoding
from speechrnn.lm_build import lm_from_texts


def test_a_decoding_saved_with_a_model_comes_back_with_its_other_options(tmp_path):
    InferenceOptions(edge_pad_s=0.3, speaker_cmvn=True).save(tmp_path)  # as training saves
    lm = lm_from_texts(["one two three", "two three four"], order=2)
    chosen = Decoding(DecodingOptions(method="beam", beam_width=12, lm_weight=0.7,
                                      word_bonus=1.5, engine="python"), lm)
    files = save_decoding(tmp_path, chosen)
    assert {f.name for f in files} == {"inference.json", LM_FILE}
    back = InferenceOptions.of_model(tmp_path)
    assert back.decoding == DecodingOptions(method="beam", beam_width=12, lm_weight=0.7,
                                            word_bonus=1.5)  # the engine is each machine's
    assert (back.edge_pad_s, back.speaker_cmvn, back.lm) == (0.3, True, LM_FILE)
    loaded = back.load_lm(tmp_path)
    assert loaded.vocab == lm.vocab
    assert loaded.log_prob(["two"], "three") == pytest.approx(lm.log_prob(["two"], "three"),
                                                              abs=1e-4)
    save_decoding(tmp_path, Decoding(DecodingOptions(method="beam")))  # no LM: the old goes
    again = InferenceOptions.of_model(tmp_path)
    assert not (tmp_path / LM_FILE).exists() and again.lm is None
    assert again.load_lm(tmp_path) is None and again.edge_pad_s == 0.3
    assert InferenceOptions.of_model(tmp_path / "nothing") == InferenceOptions()


def test_fields_are_replaced_one_at_a_time_and_checked():
    own = InferenceOptions(decoder="beam", lm=LM_FILE, lm_weight=1.2)
    wider = replace(own, beam_width=256)
    assert (wider.decoder, wider.lm, wider.lm_weight, wider.beam_width) == \
        ("beam", LM_FILE, 1.2, 256)
    greedy = own.with_decoding(DecodingOptions())
    assert greedy.decoder == "greedy" and greedy.lm is None and greedy.lm_weight == \
        DecodingOptions().lm_weight
    with pytest.raises(InputError, match="sideways"):
        InferenceOptions(decoder="sideways")
    with pytest.raises(InputError, match="backend"):
        InferenceOptions(backend="gpu")
    with pytest.raises(InputError, match="edge_pad_s"):
        InferenceOptions(edge_pad_s=-1.0)


def test_a_model_saved_before_inference_json_loads_as_it_decoded(tmp_path):
    """decoding.json (the decoder and its LM) and model.json's edge_pad_s and speaker_cmvn,
    as models kept them before inference.json."""
    lm_from_texts(["one two"], order=1).write_arpa(tmp_path / "lm.arpa")
    (tmp_path / "decoding.json").write_text(json.dumps(
        {"method": "beam", "beam_width": 32, "lm_weight": 0.9, "word_bonus": 2.0,
         "prune": -10.0, "lm": "lm.arpa"}))
    (tmp_path / "model.json").write_text(json.dumps(
        {"format_version": 1, "edge_pad_s": 0.25, "speaker_cmvn": True}))
    options = InferenceOptions.of_model(tmp_path)
    assert options == from_older_files(tmp_path)
    assert options == InferenceOptions(decoder="beam", beam_width=32, lm="lm.arpa",
                                       lm_weight=0.9, word_bonus=2.0, edge_pad_s=0.25,
                                       speaker_cmvn=True)
    assert options.load_lm(tmp_path).vocab == {"one", "two"}
    # saving a decoding now writes inference.json and retires decoding.json
    save_decoding(tmp_path, Decoding(DecodingOptions("beam", beam_width=8)))
    assert not (tmp_path / "decoding.json").exists()
    assert InferenceOptions.of_model(tmp_path).edge_pad_s == 0.25


def test_a_broken_options_file_is_named(tmp_path):
    (tmp_path / "inference.json").write_text('{"decoder": "sideways"}')
    with pytest.raises(InputError, match="sideways"):
        InferenceOptions.of_model(tmp_path)
    (tmp_path / "inference.json").write_text("[1, 2]")
    with pytest.raises(InputError, match=r"inference\.json: not an inference options file"):
        InferenceOptions.of_model(tmp_path)
    (tmp_path / "inference.json").unlink()
    (tmp_path / "decoding.json").write_text('{"beam": 3}')
    with pytest.raises(InputError, match=r"decoding\.json: not a decoding file"):
        InferenceOptions.of_model(tmp_path)

import json
import shutil

import numpy as np
import pytest

from speechrnn import fastbeam
from speechrnn.cli import main
from speechrnn.config import ConfigError, ModelConfig
from speechrnn.decoding import DecodingOptions, decode, decode_text, greedy_decode
from speechrnn.evaluate import phone_error_rate
from speechrnn.lexicon import (
    PHONES,
    Lexicon,
    LexiconError,
    PhoneAlphabet,
    build_lexicon,
    cmudict_path,
    ipa_to_phones,
    load_units,
    phones_only,
    read_dictionary,
    source_words,
)
from speechrnn.manifest import Utterance, write_manifest
from speechrnn.text import Alphabet, TextError

needs_espeak = pytest.mark.skipif(not shutil.which("espeak-ng"),
                                  reason="espeak-ng is not installed")
needs_flashlight = pytest.mark.skipif(not fastbeam.available(),
                                      reason="flashlight-text is not installed")


@pytest.fixture
def dictionary(tmp_path):
    path = tmp_path / "dict.txt"
    path.write_text(";;; a CMUdict-format file\nREAD  R IY1 D\nREAD(2)  R EH1 D\n"
                    "THE  DH AH0\nTHE(2)  DH AH1\nbook B UH K # lower case, a comment\n")
    return path


def test_dictionary_loses_stress_and_keeps_distinct_variants(dictionary):
    words = read_dictionary(dictionary)
    assert words == {"read": (("R", "IY", "D"), ("R", "EH", "D")),
                     "the": (("DH", "AH"),), "book": (("B", "UH", "K"),)}


def test_a_phone_outside_arpabet_is_named_with_its_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("ok  OW K EY\nfoo  F QQ\n")
    with pytest.raises(LexiconError, match=r"bad.txt:2: 'foo' .*QQ"):
        read_dictionary(path)


def test_cmudict_from_pocketsphinx_has_the_39_phones():
    words = read_dictionary(cmudict_path())  # pocketsphinx is a dependency
    assert len(words) > 100_000
    assert {p for spellings in words.values() for s in spellings for p in s} == set(PHONES)
    assert words["speech"] == (("S", "P", "IY", "CH"),)
    assert len(PHONES) == 39


@pytest.mark.parametrize("ipa, phones", [
    ("həlˈoʊ", "HH AH L OW"),
    ("bˈʌɾɚ", "B AH T ER"),            # flap as T, r-coloured schwa as ER
    ("tʃˈɜːtʃ", "CH ER CH"),            # affricates, long vowel
    ("dʒˈʌdʒ", "JH AH JH"),
    ("bˈɑːtl̩", "B AA T AH L"),         # syllabic l: a vowel before it, as CMUdict spells it
    ("tɹədʒˈɛktɚɹiz", "T R AH JH EH K T ER IY Z"),  # the r after ɚ belongs to ER
    ("ɐbˈaʊt", "AH B AW T"),
])
def test_espeak_ipa_maps_onto_arpabet(ipa, phones):
    assert ipa_to_phones(ipa) == tuple(phones.split())


def test_an_ipa_symbol_without_a_phone_is_named():
    with pytest.raises(ValueError, match="'ʕ'"):
        ipa_to_phones("ʕa")


@needs_espeak
def test_unknown_words_are_spelled_by_espeak_and_counted(dictionary, tmp_path):
    lexicon = build_lexicon(["the", "read", "zorblat", "the"], dictionary)
    assert lexicon.spellings("read") == (("R", "IY", "D"), ("R", "EH", "D"))
    assert lexicon.generated == {"zorblat"}
    (zorblat,) = lexicon.spellings("zorblat")
    assert zorblat[0] == "Z" and zorblat[-1] == "T" and set(zorblat) <= set(PHONES)
    assert lexicon.coverage() == {"words": 3, "in_dictionary": 2, "generated": 1,
                                  "missing": 0, "pronunciations": 4}
    lexicon.save(tmp_path / "lexicon.txt")
    assert "read\tR EH D" in (tmp_path / "lexicon.txt").read_text().splitlines()
    again = Lexicon.load(tmp_path / "lexicon.txt")
    assert again == lexicon


def test_without_g2p_an_unknown_word_is_missing_by_name(dictionary):
    lexicon = build_lexicon(["book", "zorblat"], dictionary, g2p=False)
    assert lexicon.missing == {"zorblat": "not in dict.txt"}
    assert lexicon.uncovered(["book", "zorblat", "book"]) == ["zorblat"]
    with pytest.raises(LexiconError, match="'zorblat' has no pronunciation"):
        lexicon.spellings("zorblat")


def test_source_words_are_normalised_and_counted(tmp_path):
    write_manifest(tmp_path / "m.jsonl", [
        Utterance(audio="a.wav", text="Read the BOOK!", duration=1.0, speaker="s")])
    (tmp_path / "t.txt").write_text("the 2 books\n\n")
    assert source_words([tmp_path / "m.jsonl"], [tmp_path / "t.txt"]) == {
        "the": 2, "read": 1, "book": 1, "two": 1, "books": 1}


@needs_espeak
def test_lexicon_command_builds_then_checks(dictionary, tmp_path, capsys):
    (tmp_path / "t.txt").write_text("read the book\nthe zorblat\n")
    out = tmp_path / "lex" / "lexicon.txt"
    assert main(["lexicon", "--text", str(tmp_path / "t.txt"), "--dictionary",
                 str(dictionary), "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["in_dictionary"] == 3 and printed["generated"] == 1
    assert json.loads(out.with_suffix(".json").read_text())["generated"] == ["zorblat"]
    assert main(["lexicon", "--check", str(out), "--text", str(tmp_path / "t.txt")]) == 0
    (tmp_path / "more.txt").write_text("a new word\n")
    assert main(["lexicon", "--check", str(out), "--text", str(tmp_path / "more.txt")]) == 1
    shown = capsys.readouterr().out
    assert "no pronunciation: new (1 uses)" in shown and '"uncovered": 3' in shown


def test_lexicon_command_without_words_or_out_is_a_clear_error(tmp_path, capsys):
    assert main(["lexicon", "--out", str(tmp_path / "l.txt")]) == 2
    assert "give --config" in capsys.readouterr().err


# --------------------------------------------------------------------------- phone units

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
def test_of_more_homophones_than_a_spelling_holds_the_likeliest_are_kept(tmp_path):
    """flashlight's trie keeps 6 words under one spelling: with 8 words pronounced AY, the
    two the LM finds least likely are left out, never the common "i"."""
    from speechrnn.decoding import lexicon_search
    from speechrnn.fastbeam import TRIE_MAX_WORDS
    from speechrnn.lm_build import lm_from_texts

    words = ["ai", "ay", "aye", "ei", "ey", "eye", "i", "y"]
    units = PhoneAlphabet(Lexicon({w: (("AY",),) for w in words}))
    lm = lm_from_texts(["i"] * 50 + ["eye"] * 5 + words, 1)
    lm.write_arpa(tmp_path / "lm.arpa")
    options = DecodingOptions("beam", beam_width=8)
    search = lexicon_search(units, options, lm)
    assert len(search.left_out) == len(words) - TRIE_MAX_WORDS
    assert "i" not in search.left_out and "eye" not in search.left_out
    assert decode_text(frames_of(units, spelled(units, "AY")), units, options, lm) == "i"


@needs_flashlight
def test_a_phone_model_decodes_with_the_word_lm(tmp_path):
    from speechrnn.decoding import lexicon_search
    from speechrnn.lm import WordLM
    from speechrnn.lm_build import lm_from_texts

    units = PhoneAlphabet(LEXICON)
    lm = lm_from_texts(["hello world"] * 20 + ["word"], 2)
    lm.write_arpa(tmp_path / "lm.arpa")
    lm = WordLM.load(tmp_path / "lm.arpa")
    # "W ER ? D": the L is unsure; the LM prefers world after hello
    lp = frames_of(units, spelled(units, "HH AH L OW | W ER L D"))
    lp[-4] = np.log(np.full(units.size, 1 / units.size))
    options = DecodingOptions("beam", beam_width=16, lm_weight=2.0)
    assert decode_text(lp, units, options, lm) == "hello world"
    assert lexicon_search(units, options, lm) is lexicon_search(units, options, lm)

import json
import shutil

import pytest

from speechrnn.cli import main
from speechrnn.lexicon import (
    PHONES,
    Lexicon,
    LexiconError,
    build_lexicon,
    cmudict_path,
    ipa_to_phones,
    read_dictionary,
    source_words,
)
from speechrnn.manifest import Utterance, write_manifest

needs_espeak = pytest.mark.skipif(not shutil.which("espeak-ng"),
                                  reason="espeak-ng is not installed")


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

import pytest

from speechrnn.text import Alphabet, TextError, ctc_min_frames, normalize_text, number_to_words


@pytest.mark.parametrize("raw,norm", [
    ("Hello, World!", "hello world"),
    ("  It’s   NINE o’clock. ", "it's nine o'clock"),
    ("\"Quoted\" students' café — naïve", "quoted students cafe naive"),
    ("rock-and-roll & blues", "rock and roll and blues"),
    ("I have 3 cats and 42 dogs", "i have three cats and forty two dogs"),
    ("pi is 3.14", "pi is three point one four"),
    ("1,000 people in 1999", "one thousand people in one thousand nine hundred ninety nine"),
    ("?!...", ""),
])
def test_normalize(raw, norm):
    assert normalize_text(raw) == norm


def test_other_scripts_are_kept_for_the_alphabet_check():
    assert normalize_text("hello 你好") == "hello 你好"
    assert Alphabet().unknown(normalize_text("hello 你好")) == {"你", "好"}


def test_digits_rejected_on_request():
    with pytest.raises(TextError, match="digits"):
        normalize_text("room 101", digits="reject")
    assert normalize_text("room one", digits="reject") == "room one"


def test_long_digit_runs_are_read_digit_by_digit():
    assert normalize_text("room 1234567890123456") == \
        "room one two three four five six seven eight nine zero one two three four five six"
    assert normalize_text("1" * 5000) == " ".join(["one"] * 5000)  # past int()'s limit
    assert normalize_text("3.1" + "4" * 5000).startswith("three point one four four")


def test_number_words():
    assert number_to_words(0) == "zero"
    assert number_to_words(305) == "three hundred five"
    assert number_to_words(2_000_305_017) == "two billion three hundred five thousand seventeen"
    assert number_to_words(10**16) == " ".join(["one"] + ["zero"] * 16)


def test_alphabet_round_trip_and_blank(tmp_path):
    a = Alphabet()
    assert a.blank == 0 and a.size == 29
    ids = a.encode("don't stop")
    assert 0 not in ids and a.decode(ids) == "don't stop"
    assert a.decode([0, *ids, 0]) == "don't stop"  # blanks vanish
    with pytest.raises(TextError, match="outside the alphabet"):
        a.encode("café")
    a.save(tmp_path / "alphabet.json")
    assert Alphabet.load(tmp_path / "alphabet.json") == a
    with pytest.raises(ValueError):
        Alphabet("abc")  # no space


def test_ctc_min_frames_counts_repeats():
    a = Alphabet()
    assert ctc_min_frames(a.encode("abc")) == 3
    assert ctc_min_frames(a.encode("hello")) == 6  # l-l needs a blank between
    assert ctc_min_frames(a.encode("aaa")) == 5

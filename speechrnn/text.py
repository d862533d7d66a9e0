"""Transcripts: normalisation and the character alphabet a CTC model predicts.

Normalisation (``normalize_text``), in order:

1. Unicode NFKC; typographic apostrophes (’ ‘ ʼ `) become ``'``; ``&`` becomes "and".
2. Case folding (lower case).
3. Digits: with ``digits="spell"`` (the default) every run of digits is spelled out as an
   English cardinal number ("42" -> "forty two", "1999" -> "one thousand nine hundred
   ninety nine"); a decimal point between digits reads "point" followed by single digits
   ("3.14" -> "three point one four"). With ``digits="reject"`` a digit raises
   :class:`TextError`, for corpora where spelling them out would guess the reading.
4. Accents are removed (é -> e); letters of other scripts are kept, so that the alphabet
   check rejects them instead of the transcript silently losing words.
5. Punctuation and symbols become spaces, apostrophes survive only inside a word
   ("don't", "o'clock"), and white space is collapsed.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path

from .errors import InputError
from .files import atomic_write_text

DEFAULT_CHARACTERS = " 'abcdefghijklmnopqrstuvwxyz"


class TextError(InputError):
    """A transcript that cannot be normalised or encoded."""


_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen "
         "fourteen fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = [(10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand")]


def number_to_words(n: int) -> str:
    """English cardinal for a non-negative integer: 305 -> "three hundred five"."""
    if n < 0:
        raise ValueError("negative numbers are not spelled")
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + (f" {_ONES[ones]}" if ones else "")
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return f"{_ONES[hundreds]} hundred" + (f" {number_to_words(rest)}" if rest else "")
    if n >= 1000 * _SCALES[0][0]:
        return " ".join(_ONES[int(d)] for d in str(n))  # too long to read as a number
    for scale, word in _SCALES:
        if n >= scale:
            head, rest = divmod(n, scale)
            return f"{number_to_words(head)} {word}" + (
                f" {number_to_words(rest)}" if rest else "")
    raise AssertionError(n)


def _say(digits: str) -> str:
    """A run of digits in words: a number, or digit by digit when too long to read as one
    (never int() of it: Python refuses to convert more than 4,300 digits)."""
    if len(digits) > len(str(_SCALES[0][0])) + 2:
        return " ".join(_ONES[int(d)] for d in digits)
    return number_to_words(int(digits))


def _spell_digits(text: str) -> str:
    def decimal(m: re.Match) -> str:
        whole, frac = m.group(1), m.group(2)
        return f" {_say(whole)} point {' '.join(_ONES[int(d)] for d in frac)} "

    text = re.sub(r"(\d+)\.(\d+)", decimal, text)
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)  # 1,000 -> 1000
    return re.sub(r"\d+", lambda m: f" {_say(m.group())} ", text)


def normalize_text(text: str, digits: str = "spell") -> str:
    """Normalise a transcript as the module docstring describes."""
    if digits not in ("spell", "reject"):
        raise ValueError("digits must be 'spell' or 'reject'")
    text = unicodedata.normalize("NFKC", text)
    text = re.sub(r"[’‘ʼ`´]", "'", text).replace("&", " and ").casefold()
    if any(ch.isdigit() for ch in text):
        if digits == "reject":
            raise TextError(f"transcript contains digits: {text!r}")
        text = _spell_digits(text)
    out = []
    for ch in unicodedata.normalize("NFKD", text):
        cat = unicodedata.category(ch)
        if cat.startswith("M"):
            continue  # combining accent
        if ch == "'" or ch.isalpha():
            out.append(ch)
        elif cat[0] in "PSZC":
            out.append(" ")
        else:
            out.append(ch)
    text = "".join(out)
    text = re.sub(r"(?<!\w)'+|'+(?!\w)", " ", text)
    return " ".join(text.split())


class Alphabet:
    """The units a CTC model predicts: here characters. Index 0 is the CTC blank; the
    characters follow from 1, the space (the word separator) among them.

    Every kind of units (:class:`speechrnn.lexicon.PhoneAlphabet` spells words in phones)
    answers the same questions: ``size``, ``separator``, ``symbols`` (the name of each
    label from 1), ``key`` (what identifies the units and their spellings), ``encode`` (a
    transcript -> labels, words joined by the separator), ``spellings`` (a word's label
    sequences), ``can_spell`` and ``decode`` (labels -> text of units)."""

    blank = 0
    units = "chars"

    def __init__(self, characters: str = DEFAULT_CHARACTERS):
        if len(set(characters)) != len(characters):
            raise ValueError("alphabet characters must be unique")
        if " " not in characters:
            raise ValueError("alphabet must contain the space (word separator)")
        self.characters = characters
        self._index = {ch: i + 1 for i, ch in enumerate(characters)}

    @property
    def size(self) -> int:
        """Output classes including the blank."""
        return len(self.characters) + 1

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(self.characters)

    @property
    def separator(self) -> int:
        """The label between words."""
        return self._index[" "]

    @property
    def key(self) -> str:
        return self.characters

    def unknown(self, text: str) -> set[str]:
        return {ch for ch in text if ch not in self._index}

    def encode(self, text: str) -> list[int]:
        bad = self.unknown(text)
        if bad:
            raise TextError(f"characters outside the alphabet: {''.join(sorted(bad))!r}")
        return [self._index[ch] for ch in text]

    def spellings(self, word: str) -> list[list[int]]:
        """The label sequences of ``word`` (one: its characters)."""
        return [self.encode(word)]

    def can_spell(self, word: str) -> bool:
        return bool(word) and " " not in word and not self.unknown(word)

    def decode(self, ids: Iterable[int]) -> str:
        """Label ids to text; the blank (and any padding below 1) is dropped."""
        chars = self.characters
        return "".join(chars[i - 1] for i in ids if 0 < i <= len(chars))

    def to_json(self) -> str:
        return json.dumps({"characters": self.characters, "blank": self.blank})

    @classmethod
    def from_json(cls, data: str) -> Alphabet:
        obj = json.loads(data)
        if obj.get("blank", 0) != cls.blank:
            raise ValueError("only blank index 0 is supported")
        if obj.get("units", "chars") != "chars":
            raise ValueError(f"units {obj['units']!r} need their lexicon: "
                             "speechrnn.lexicon.load_units reads them")
        return cls(obj["characters"])

    def save(self, path: str | Path) -> None:
        """``path`` (alphabet.json)."""
        atomic_write_text(path, self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Alphabet:
        return cls.from_json(Path(path).read_text())

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and other.key == self.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __repr__(self) -> str:
        return f"Alphabet({self.characters!r})"


def ctc_min_frames(labels: Sequence[int]) -> int:
    """Frames CTC needs for ``labels``: one each, plus a blank between repeated labels."""
    repeats = sum(1 for a, b in zip(labels, labels[1:]) if a == b)
    return len(labels) + repeats

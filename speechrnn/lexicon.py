"""Pronunciation lexicon: words -> phone spellings in 39 ARPAbet phones, stress removed.

A word's pronunciations come from a pronouncing dictionary, CMUdict by default (the copy
that ships in the ``pocketsphinx`` wheel, BSD licence; or any file in CMUdict's format);
a word it lacks gets espeak-ng's grapheme-to-phoneme rules, its IPA mapped onto the same
phones. A word may have several pronunciations. A word with none (no entry, and espeak-ng
gave nothing usable) is kept in :attr:`Lexicon.missing` and reported by name, never
dropped silently.

Saved as ``lexicon.txt``, a pronunciation a line, ``word<TAB>PH PH PH`` (what Kaldi and
flashlight-text's lexicon decoder read), with ``lexicon.json`` beside it: where the
spellings came from (coverage), the words generated and the words missing.

A phone model (``model.units: phones``) predicts :class:`PhoneAlphabet`'s labels: the 39
phones and ``|`` between words. Its transcripts are spelled with each word's first
pronunciation; the decoder's lexicon holds them all. The lexicon of a recipe
(:func:`recipe_lexicon`) covers its training and dev transcripts and its LM text, and is
saved with the model beside ``alphabet.json`` (:func:`load_units` reads both back).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import subprocess
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .config import resolve_source
from .errors import InputError, NotFoundError
from .files import atomic_write_text, source_stamps
from .lm_build import source_sentences
from .text import Alphabet, TextError

PHONES = tuple("AA AE AH AO AW AY B CH D DH EH ER EY F G HH IH IY JH K L M N NG OW OY P R "
               "S SH T TH UH UW V W Y Z ZH".split())
_PHONE_SET = frozenset(PHONES)

# espeak-ng's IPA (en-us) -> ARPAbet, longest symbols first. A flap (butter) is written T
# and a glottal stop T, as CMUdict mostly does; the few sounds of foreign names English
# lacks (ç, ɬ, x, ...) take their nearest English phone; stress, length, syllable and tie
# marks carry no phone; an r after a rhotic vowel (ɚɹ) is part of its ER.
_IPA = {
    "tʃ": "CH", "dʒ": "JH", "aɪ": "AY", "aʊ": "AW", "eɪ": "EY", "oʊ": "OW", "əʊ": "OW",
    "ɔɪ": "OY", "ɜ": "ER", "ɚ": "ER", "ɝ": "ER", "ə": "AH", "ɐ": "AH", "ʌ": "AH",
    "æ": "AE", "a": "AE", "ɑ": "AA", "ɒ": "AA", "ɔ": "AO", "o": "OW", "e": "EH", "ɛ": "EH",
    "ɪ": "IH", "ᵻ": "IH", "i": "IY", "ʊ": "UH", "u": "UW", "ɹ": "R", "r": "R", "ɾ": "T",
    "ʔ": "T", "ŋ": "NG", "ʃ": "SH", "ʒ": "ZH", "θ": "TH", "ð": "DH", "h": "HH", "j": "Y",
    "w": "W", "ʍ": "W", "l": "L", "ɫ": "L", "m": "M", "n": "N", "p": "P", "b": "B",
    "t": "T", "d": "D", "k": "K", "g": "G", "ɡ": "G", "f": "F", "v": "V", "s": "S",
    "z": "Z", "x": "K", "ç": "HH", "ɬ": "L", "ʁ": "R", "ɣ": "G", "ɸ": "F", "β": "V",
}
_IPA_SILENT = set("ˈˌːˑ.-_ \u0303\u0361\u035c")  # \u0303: nasalised (frisson)
_SYLLABIC = "\u0329"  # n̩, l̩: a vowel before the consonant (CMUdict: AH N, AH L)
_ESPEAK_CHUNK = 2000  # words per espeak-ng call
WORD_SEPARATOR = "|"  # the label between the words of a phone transcript
LEXICON_FILE = "lexicon.txt"  # beside a phone model's alphabet.json


class LexiconError(InputError):
    """A lexicon file or dictionary that cannot be read, or a phone outside :data:`PHONES`."""


@dataclass(frozen=True)
class Lexicon:
    """Each word's pronunciations (tuples of phones, the first the most usual), which of
    them espeak-ng generated, and the words that have none."""

    pronunciations: dict[str, tuple[tuple[str, ...], ...]]
    generated: frozenset[str] = frozenset()
    missing: dict[str, str] = field(default_factory=dict)  # word -> why it has none
    dictionary: str = ""  # where the known words came from

    def __len__(self) -> int:
        return len(self.pronunciations)

    def __contains__(self, word: str) -> bool:
        return word in self.pronunciations

    def spellings(self, word: str) -> tuple[tuple[str, ...], ...]:
        try:
            return self.pronunciations[word]
        except KeyError:
            raise LexiconError(f"{word!r} has no pronunciation in the lexicon") from None

    def coverage(self) -> dict:
        """Words, and how many came from the dictionary, from espeak-ng, and none."""
        return {"words": len(self) + len(self.missing),
                "in_dictionary": len(self) - len(self.generated),
                "generated": len(self.generated), "missing": len(self.missing),
                "pronunciations": sum(len(p) for p in self.pronunciations.values())}

    def uncovered(self, words: Iterable[str]) -> list[str]:
        """The distinct ``words`` it has no pronunciation for, in order of first use."""
        return [w for w in dict.fromkeys(words) if w not in self.pronunciations]

    def save(self, path: str | Path) -> Path:
        """``path`` (lexicon.txt) and its ``.json`` sidecar; returns ``path``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [f"{w}\t{' '.join(p)}" for w in sorted(self.pronunciations)
                 for p in self.pronunciations[w]]
        atomic_write_text(path, "\n".join(lines) + "\n")
        atomic_write_text(path.with_suffix(".json"), json.dumps(
            {"dictionary": self.dictionary, "coverage": self.coverage(),
             "generated": sorted(self.generated), "missing": self.missing}, indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Lexicon:
        path = Path(path)
        pronunciations = read_dictionary(path)
        meta = {}
        sidecar = path.with_suffix(".json")
        if sidecar.is_file():
            try:
                meta = json.loads(sidecar.read_text())
            except (OSError, ValueError) as err:
                raise LexiconError(f"{sidecar}: cannot read ({err})") from None
        return cls(pronunciations, frozenset(meta.get("generated", ())),
                   dict(meta.get("missing", {})), meta.get("dictionary", str(path)))


def cmudict_path() -> Path:
    """CMUdict as the ``pocketsphinx`` wheel ships it (lower case, no stress)."""
    spec = importlib.util.find_spec("pocketsphinx")
    path = Path(spec.origin).parent / "model" / "en-us" / "cmudict-en-us.dict" \
        if spec and spec.origin else None
    if path is None or not path.is_file():
        raise NotFoundError("no pronouncing dictionary: install pocketsphinx (it ships "
                            "CMUdict: pip install pocketsphinx) or name a CMUdict-format "
                            "file with --dictionary")
    return path


def read_dictionary(path: str | Path) -> dict[str, tuple[tuple[str, ...], ...]]:
    """A pronouncing dictionary in CMUdict's format (``WORD(2)  PH1 PH0``, ``;;;`` and
    ``#`` comments; the pocketsphinx copy's lower case too, and the tab-separated lines
    :meth:`Lexicon.save` writes): each word's distinct pronunciations, stress removed."""
    path = Path(path)
    out: dict[str, list[tuple[str, ...]]] = {}
    try:
        text = path.read_text(encoding="utf-8", errors="strict")
    except (OSError, UnicodeDecodeError) as err:
        raise LexiconError(f"{path}: cannot read the dictionary ({err})") from None
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith((";;;", "#")):
            continue
        word, *phones = line.split()
        word = re.sub(r"\(\d+\)$", "", word).lower()
        phones = tuple(p.rstrip("012").upper() for p in phones)
        bad = [p for p in phones if p not in _PHONE_SET]
        if not phones or bad:
            raise LexiconError(f"{path}:{number}: {word!r} " + (
                f"has phones outside the 39 ARPAbet phones: {' '.join(bad)}" if bad
                else "has no phones"))
        spellings = out.setdefault(word, [])
        if phones not in spellings:
            spellings.append(phones)
    if not out:
        raise LexiconError(f"{path}: no pronunciations in it")
    return {w: tuple(p) for w, p in out.items()}


def ipa_to_phones(ipa: str) -> tuple[str, ...]:
    """espeak-ng's IPA of one word as ARPAbet phones; :class:`ValueError` naming a symbol
    that has none."""
    out: list[str] = []
    i = 0
    while i < len(ipa):
        if ipa[i] in _IPA_SILENT:
            i += 1
            continue
        if ipa[i] == _SYLLABIC:
            if out:
                out.insert(len(out) - 1, "AH")
            i += 1
            continue
        for size in (2, 1):
            phone = _IPA.get(ipa[i:i + size])
            if phone is not None:
                if not (phone == "R" and out and out[-1] == "ER"):
                    out.append(phone)
                i += size
                break
        else:
            raise ValueError(f"espeak-ng's /{ipa}/ has {ipa[i]!r}, which no ARPAbet phone "
                             "stands for")
    return tuple(out)


def espeak_phones(words: list[str], voice: str = "en-us") -> dict[str, tuple[str, ...] | str]:
    """Each word's phones from espeak-ng's rules, or the reason it has none."""
    out: dict[str, tuple[str, ...] | str] = {}
    for start in range(0, len(words), _ESPEAK_CHUNK):
        chunk = words[start:start + _ESPEAK_CHUNK]
        lines = _espeak(chunk, voice)
        if len(lines) != len(chunk):  # it joined or split lines: one word a call
            lines = [" ".join(_espeak([w], voice)) for w in chunk]
        for word, ipa in zip(chunk, lines):
            try:
                phones = ipa_to_phones(ipa.strip())
                out[word] = phones or f"espeak-ng gave no phones (/{ipa.strip()}/)"
            except ValueError as err:
                out[word] = str(err)
    return out


def _espeak(words: list[str], voice: str) -> list[str]:
    try:
        proc = subprocess.run(["espeak-ng", "-q", "--ipa", "-v", voice], check=True,
                              input="\n".join(words) + "\n", capture_output=True,
                              text=True, timeout=60 + len(words) // 20)
    except FileNotFoundError:
        raise NotFoundError("espeak-ng is not installed (apt-get install espeak-ng): it "
                            "spells the words the dictionary lacks") from None
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as err:
        raise LexiconError(f"espeak-ng failed on {len(words)} words ({err})") from None
    return [line for line in proc.stdout.splitlines() if line.strip()]


def build_lexicon(words: Iterable[str], dictionary: str | Path | None = None,
                  g2p: bool = True, voice: str = "en-us") -> Lexicon:
    """The pronunciations of the distinct ``words``: the dictionary's (``None``: CMUdict
    from pocketsphinx), else espeak-ng's (``g2p``); the rest in ``missing``."""
    path = Path(dictionary) if dictionary else cmudict_path()
    known = read_dictionary(path)
    words = list(dict.fromkeys(w for w in words if w))
    found = {w: known[w] for w in words if w in known}
    unknown = [w for w in words if w not in known]
    generated: dict[str, tuple[tuple[str, ...], ...]] = {}
    missing: dict[str, str] = {}
    if g2p:
        for word, phones in espeak_phones(unknown, voice).items():
            if isinstance(phones, tuple):
                generated[word] = (phones,)
            else:
                missing[word] = phones
    else:
        missing = {w: f"not in {path.name}" for w in unknown}
    return Lexicon({**found, **generated}, frozenset(generated), missing, str(path))


def source_words(manifests: Iterable[str | Path] = (),
                 text_files: Iterable[str | Path] = ()) -> dict[str, int]:
    """The normalised words of manifests' transcripts and text files (a sentence a line,
    ``.gz`` too), with their counts, most frequent first."""
    count = Counter(w for words in source_sentences(manifests, text_files) for w in words)
    return dict(count.most_common())


class PhoneAlphabet(Alphabet):
    """The units of a phone model: label 0 the blank, 1 the word separator ``|``, then the
    39 phones; words are spelled by ``lexicon`` (a transcript by each word's first
    pronunciation, the decoder's lexicon by all of them). See :class:`Alphabet`."""

    units = "phones"

    def __init__(self, lexicon: Lexicon):
        self.lexicon = lexicon
        self._symbols = (WORD_SEPARATOR, *PHONES)
        self._index = {p: i + 1 for i, p in enumerate(self._symbols)}
        self.characters = None  # not spelled in characters
        self._key = None

    @property
    def size(self) -> int:
        return len(self._symbols) + 1

    @property
    def symbols(self) -> tuple[str, ...]:
        return self._symbols

    @property
    def separator(self) -> int:
        return self._index[WORD_SEPARATOR]

    @property
    def key(self) -> str:
        """``phones:`` and a digest of the lexicon's pronunciations: another lexicon spells
        some transcript otherwise, so its labels (and shards) differ."""
        if self._key is None:
            h = hashlib.sha256()
            for word in sorted(self.lexicon.pronunciations):
                for phones in self.lexicon.pronunciations[word]:
                    h.update(f"{word}\t{' '.join(phones)}\n".encode())
            self._key = "phones:" + h.hexdigest()[:16]
        return self._key

    def unknown(self, text: str) -> set[str]:
        """The words of ``text`` the lexicon has no pronunciation for."""
        return {w for w in text.split() if w not in self.lexicon}

    def spellings(self, word: str) -> list[list[int]]:
        try:
            return [[self._index[p] for p in phones]
                    for phones in self.lexicon.pronunciations[word]]
        except KeyError:
            raise TextError(f"no pronunciation for {word!r} in the lexicon") from None

    def can_spell(self, word: str) -> bool:
        return word in self.lexicon

    def encode(self, text: str) -> list[int]:
        """A transcript's labels: each word's first pronunciation, ``|`` between words."""
        bad = [w for w in dict.fromkeys(text.split()) if w not in self.lexicon]
        if bad:
            raise TextError("no pronunciation in the lexicon for " +
                            ", ".join(repr(w) for w in bad))
        labels: list[int] = []
        for word in text.split():
            if labels:
                labels.append(self.separator)
            labels += self.spellings(word)[0]
        return labels

    def decode(self, ids) -> str:
        """Labels -> phones separated by spaces, ``|`` between words."""
        return " ".join(self._symbols[i - 1] for i in ids if 0 < i <= len(self._symbols))

    def to_json(self) -> str:
        return json.dumps({"units": self.units, "symbols": list(self._symbols),
                           "blank": self.blank, "lexicon": LEXICON_FILE,
                           "lexicon_key": self.key})

    def save(self, path: str | Path) -> None:
        """``path`` (alphabet.json) and the lexicon beside it (lexicon.txt, .json)."""
        self.lexicon.save(Path(path).parent / LEXICON_FILE)
        atomic_write_text(path, self.to_json() + "\n")

    def __repr__(self) -> str:
        return f"PhoneAlphabet({len(self.lexicon)} words)"


def phones_only(text: str) -> str:
    """A phone transcript without its word separators: what phone error rates compare."""
    return " ".join(p for p in text.split() if p != WORD_SEPARATOR)


def spell_references(alphabet: PhoneAlphabet, texts: list[str]) -> list[str]:
    """Reference transcripts in phones for scoring (:func:`speechrnn.evaluate.
    phone_error_rate`): the lexicon's first pronunciations, espeak-ng's for the words it
    lacks (for scoring only: the decoder never learns them); "" for a transcript with a
    word neither can spell, or when espeak-ng is not installed."""
    lexicon = alphabet.lexicon
    lacking = [w for w in dict.fromkeys(w for t in texts for w in t.split())
               if w not in lexicon]
    extra: dict = {}
    if lacking:
        try:
            extra = build_lexicon(lacking).pronunciations
        except (InputError, NotFoundError):  # no espeak-ng: those transcripts unscored
            extra = {}
    spelled = PhoneAlphabet(Lexicon({**lexicon.pronunciations, **extra}))
    return [spelled.decode(spelled.encode(t)) if not spelled.unknown(t) else ""
            for t in texts]


def load_units(path: str | Path) -> Alphabet:
    """The units saved in ``path`` (a model's alphabet.json): an :class:`Alphabet`, or a
    :class:`PhoneAlphabet` with the lexicon saved beside it, checked against them."""
    path = Path(path)
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: cannot read the model's units ({err})") from None
    units = meta.get("units", "chars")
    if units == "chars":
        return Alphabet.from_json(json.dumps(meta))
    if units != "phones":
        raise InputError(f"{path}: units {units!r} are not chars or phones")
    if tuple(meta.get("symbols", ())) != (WORD_SEPARATOR, *PHONES):
        raise LexiconError(f"{path}: its phone set is not this version's "
                           f"({WORD_SEPARATOR} and the 39 ARPAbet phones)")
    lexicon_path = path.parent / meta.get("lexicon", LEXICON_FILE)
    if not lexicon_path.is_file():
        raise LexiconError(f"{path}: a phone model needs its lexicon, and there is no "
                           f"{lexicon_path}")
    alphabet = PhoneAlphabet(Lexicon.load(lexicon_path))
    if meta.get("lexicon_key") not in (None, alphabet.key):
        raise LexiconError(f"{lexicon_path} does not match the model's units: it spells "
                           f"words otherwise than the lexicon the model was trained with "
                           f"({alphabet.key} vs {meta['lexicon_key']})")
    return alphabet


def recipe_words(cfg, corpora: str | Path | None = None) -> tuple[list[Path], dict[str, int]]:
    """The files a recipe's words come from (its training and dev manifests, its
    ``eval.lm_text``) and those words with their counts (:func:`source_words`)."""
    sources = [*cfg.data.training_manifests(), cfg.data.manifest("dev"),
               *(resolve_source(t, corpora) for t in cfg.eval.lm_text)]
    manifests = sources[:-len(cfg.eval.lm_text)] if cfg.eval.lm_text else sources
    return sources, source_words(manifests, sources[len(manifests):])


def recipe_lexicon(cfg, corpora: str | Path | None = None,
                   progress: bool = True) -> Lexicon:
    """The lexicon of a recipe's phone model: ``model.lexicon`` as it is, or one built for
    :func:`recipe_words` from CMUdict and espeak-ng, kept in ``<workdir>/lexicon/`` and
    built again when a source changes. Words left without a pronunciation are printed."""
    if cfg.model.lexicon:
        return Lexicon.load(cfg.model.lexicon)
    sources, words = recipe_words(cfg, corpora)
    path = cfg.workdir / "lexicon" / LEXICON_FILE
    stamp = path.with_name("sources.json")
    settings = {"sources": source_stamps(sources), "dictionary": str(cmudict_path())}
    try:
        if json.loads(stamp.read_text()) == json.loads(json.dumps(settings)):
            return Lexicon.load(path)
    except (OSError, ValueError, LexiconError):
        pass
    if progress:
        print(f"building the pronunciation lexicon of {len(words)} words (CMUdict, "
              "espeak-ng for the rest)", flush=True)
    lexicon = build_lexicon(words)
    lexicon.save(path)
    atomic_write_text(stamp, json.dumps(settings, indent=1))
    if progress:
        c = lexicon.coverage()
        print(f"lexicon: {c['in_dictionary']} words from {Path(lexicon.dictionary).name}, "
              f"{c['generated']} from espeak-ng, {c['missing']} without a pronunciation"
              + (": " + ", ".join(list(lexicon.missing)[:20]) if lexicon.missing else ""),
              flush=True)
    return lexicon


def recipe_units(cfg, corpora: str | Path | None = None, progress: bool = True,
                 units: str | None = None) -> Alphabet:
    """The units a recipe's model predicts: ``units`` (chars or phones; None: the main
    head's, ``model.units``)."""
    if (units or cfg.model.units) == "chars":
        return Alphabet()
    return PhoneAlphabet(recipe_lexicon(cfg, corpora, progress))


def recipe_targets(cfg, corpora: str | Path | None = None,
                   progress: bool = True) -> tuple[Alphabet, Alphabet | None]:
    """What a recipe's training labels are spelled in: the main head's units and those of
    its auxiliary head (``model.aux_ctc.units``; None without one)."""
    aux = cfg.model.aux_ctc.units
    return (recipe_units(cfg, corpora, progress),
            recipe_units(cfg, corpora, progress, units=aux) if aux else None)


def units_size(units: str) -> int:
    """Output classes (blank included) of a CTC head over ``units`` (chars or phones)."""
    return Alphabet().size if units == "chars" else len(PHONES) + 2

"""Output formats: txt, json, srt and vtt of a transcript."""

import json

import pytest

from speechrnn.decoding import Word
from speechrnn.formats import cues, format_transcript
from speechrnn.transcribe import Transcript


def test_cues_and_formats():
    words = (Word("one", 0.5, 0.9, 0.9), Word("two", 1.0, 1.4, 0.8),
             Word("three", 3.0, 3.5, 0.7))
    t = Transcript("one two three", words, 0.8, 4.0, "a.wav")
    assert cues(words) == [(0.5, 1.4, "one two"), (3.0, 3.5, "three")]  # split at the pause
    assert len(cues(words, max_words=1)) == 3
    srt = format_transcript(t, "srt")
    assert srt.startswith("1\n00:00:00,500 --> 00:00:01,400\none two\n\n2\n00:00:03,000")
    vtt = format_transcript(t, "vtt")
    assert vtt.startswith("WEBVTT\n\n00:00:00.500 --> 00:00:01.400\none two\n")
    data = json.loads(format_transcript(t, "json"))
    assert data["file"] == "a.wav" and data["words"][2] == {
        "word": "three", "start": 3.0, "end": 3.5, "confidence": 0.7}
    assert format_transcript(t, "txt") == "one two three\n"
    with pytest.raises(ValueError, match="unknown output format"):
        format_transcript(t, "doc")

"""Output formats of a transcript: plain text, JSON, SubRip (srt) and WebVTT subtitles."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from .errors import InputError

if TYPE_CHECKING:
    from .transcribe import Transcript

FORMATS = ("txt", "json", "srt", "vtt")


def _clock(seconds: float, sep: str) -> str:
    ms = int(round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def cues(words, max_words: int = 12, max_gap: float = 0.6,
         max_seconds: float = 6.0) -> list[tuple[float, float, str]]:
    """Group words into subtitle cues: a new cue after a pause longer than ``max_gap``,
    or when a cue would exceed ``max_words`` words or ``max_seconds``."""
    out, group = [], []
    for w in words:
        if group and (len(group) >= max_words or w.start - group[-1].end > max_gap
                      or w.end - group[0].start > max_seconds):
            out.append((group[0].start, group[-1].end, " ".join(x.word for x in group)))
            group = []
        group.append(w)
    if group:
        out.append((group[0].start, group[-1].end, " ".join(x.word for x in group)))
    return out


def format_transcript(t: Transcript, fmt: str, max_words: int = 12) -> str:
    """``t`` as txt, json, srt or vtt."""
    if fmt == "txt":
        return t.text + "\n"
    if fmt == "json":
        return json.dumps(t.as_dict(), ensure_ascii=False) + "\n"
    if fmt not in FORMATS:
        raise InputError(f"unknown output format {fmt!r} ({', '.join(FORMATS)})")
    sep = "," if fmt == "srt" else "."
    lines = [] if fmt == "srt" else ["WEBVTT", ""]
    for i, (start, end, text) in enumerate(cues(t.words, max_words), 1):
        if fmt == "srt":
            lines.append(str(i))
        lines += [f"{_clock(start, sep)} --> {_clock(end, sep)}", text, ""]
    return "\n".join(lines) + ("\n" if fmt == "vtt" and not t.words else "")

"""The transcription page: ``speechrnn serve`` answers a browser at ``/`` beside MLflow's
scoring protocol, in the same process and behind the same limits.

A person drops or chooses audio files (or records from the microphone) and reads each
transcript, its words shaded by confidence with their times; a word plays the audio from
there; the result downloads as txt, srt, vtt or json. Plain HTML, CSS and JavaScript in
``static/``, shipped with the package: nothing is fetched from elsewhere, and the
Content-Security-Policy tells the browser so.

Routes of :class:`Page` (every other request goes on to the app it wraps):

- ``GET /``: the page; ``GET /static/<file>``: its script, style and recorder.
- ``GET /api/model``: the model card (:func:`model_card`): which model answers, its units,
  decoding and test WER, and the server's limits.
- ``POST /api/transcribe?name=<file name>``: the body is one whole audio file. The answer
  is the transcript (``file``, ``duration``, ``text``, ``confidence``, ``words`` with
  ``start``, ``end``, ``confidence``) and ``formats``: the same transcript written by
  :func:`speechrnn.formats.format_transcript` as ``speechrnn transcribe`` writes it. Audio
  that cannot be transcribed gets 400 and ``message``, the reason. The server's limits
  (:class:`speechrnn.serve.LimitsMiddleware`, wrapped around this app) answer 413, 503 and 504 here
  as at ``/invocations``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from ..decoding import Decoding
from ..errors import SpeechRNNError, reason
from ..formats import FORMATS, format_transcript

if TYPE_CHECKING:
    from ..transcribe import Transcriber, Transcript

STATIC = Path(__file__).resolve().parent / "static"
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
# the page and everything it uses come from this server; recordings and uploads play as blobs
POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
          "media-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
          "form-action 'none'; frame-ancestors 'none'")
UNITS = {"chars": "characters", "phones": "phones"}


def model_card(model: str, transcriber: Transcriber, limits, record: dict) -> dict:
    """What the page shows of the model that answers: ``model`` as given to ``serve``,
    MLflow's ``record`` of it (name, version, run, test WER by decoding: see
    :func:`speechrnn.tracking.model_record`), its units and vocabulary size, its decoding
    (and its name in metrics, to pick the matching test WER), the backend, and the
    server's ``limits`` (a :class:`speechrnn.serve.ServeLimits`)."""

    decoding = Decoding(transcriber.options, transcriber.lm)
    units = transcriber.meta.get("model", {}).get("units", "chars")
    return {"model": model, **record,
            "units": UNITS.get(units, units), "vocabulary": len(transcriber.alphabet.symbols),
            "decoding": decoding.describe(), "decoding_name": decoding.name,
            "backend": transcriber.backend, "formats": list(FORMATS),
            "limits": {"max_request_mb": limits.max_request_mb,
                       "max_audio_s": limits.max_audio_s, "timeout_s": limits.timeout_s}}


class Page:
    """ASGI app: the transcription page and its API in front of ``app`` (MLflow's scoring
    app). ``transcribe`` takes a whole audio file's bytes and returns its
    :class:`~speechrnn.transcribe.Transcript`, raising a :class:`SpeechRNNError` with the
    reason for audio it refuses; it runs in a worker thread. ``card``: :func:`model_card`."""

    def __init__(self, app, transcribe: Callable[[bytes], Transcript], card: dict):
        self.app = app
        self.transcribe = transcribe
        self.card = json.dumps(card).encode()
        self.files = {p.name: p.read_bytes() for p in STATIC.iterdir()
                      if p.suffix in TYPES}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path, method = scope["path"], scope["method"]
        if path == "/api/transcribe":
            if method != "POST":
                return await _respond(send, 405, _error("METHOD_NOT_ALLOWED", "use POST"),
                                      [(b"allow", b"POST")])
            return await self._transcribe(scope, receive, send)
        if method not in ("GET", "HEAD") or not (
                path in ("/", "/api/model") or path.startswith("/static/")):
            return await self.app(scope, receive, send)
        if path == "/api/model":
            body, kind = self.card, "application/json"
        else:
            name = "index.html" if path == "/" else path[len("/static/"):]
            if name not in self.files:
                return await _respond(send, 404, _error("NOT_FOUND", f"{path}: no such file"))
            body, kind = self.files[name], TYPES[Path(name).suffix]
        await _respond(send, 200, body, [(b"content-type", kind.encode()),
                                         (b"cache-control", b"no-cache")],
                       head=method == "HEAD")

    async def _transcribe(self, scope, receive, send):
        body = await _read_all(receive)
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        name = _file_name(query.get("name", [""])[0])
        try:
            # a worker thread: the server keeps answering (and timing out) meanwhile
            result = await asyncio.to_thread(self.transcribe, body)
        except SpeechRNNError as err:
            return await _respond(send, 400, _error("INVALID_PARAMETER_VALUE", reason(err)))
        result = replace(result, source=name)
        answer = {**result.as_dict(),
                  "formats": {fmt: format_transcript(result, fmt) for fmt in FORMATS}}
        await _respond(send, 200, json.dumps(answer, ensure_ascii=False).encode())


def _file_name(name: str) -> str:
    """The last part of a file name a browser sent (never a path), at most 200 characters."""
    name = PureWindowsPath(PurePosixPath(name).name).name.strip()
    return name[:200] or "audio"


def _error(code: str, message: str) -> bytes:
    return json.dumps({"error_code": code, "message": message}).encode()


async def _read_all(receive) -> bytes:
    parts = []
    while True:
        message = await receive()
        parts.append(message.get("body", b""))
        if message["type"] == "http.disconnect" or not message.get("more_body"):
            return b"".join(parts)


async def _respond(send, status: int, body: bytes, headers=(), head: bool = False) -> None:
    headers = dict(headers)
    headers.setdefault(b"content-type", b"application/json")
    headers.update({b"content-length": str(len(body)).encode(),
                    b"content-security-policy": POLICY.encode(),
                    b"x-content-type-options": b"nosniff",
                    b"referrer-policy": b"no-referrer"})
    await send({"type": "http.response.start", "status": status,
                "headers": list(headers.items())})
    await send({"type": "http.response.body", "body": b"" if head else body})

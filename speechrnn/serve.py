"""Serving: a logged model behind MLflow's scoring protocol, with limits that keep one
server answering under oversized, hostile or simply too many requests.

    speechrnn serve --model models:/speechrnn-synth/1 [--max-request-mb 25] ...

The server is MLflow's scoring app (``POST /invocations`` with ``dataframe_split`` JSON of
base64 audio, ``GET /ping``) and the transcription page (``GET /``, ``POST /api/transcribe``
of one raw audio file: :mod:`speechrnn.web`), run by uvicorn in this process, both wrapped
by :class:`LimitsMiddleware`:

- a body over ``max_request_mb`` gets 413 with the reason; it is never held in memory;
- at most ``max_concurrent`` requests are transcribed at once and ``max_queue`` wait (their
  bodies unread); one more gets 503 with ``Retry-After``: memory stays bounded;
- a request still running after ``timeout_s`` gets 504; the items it had not started are
  skipped (:func:`transcribe_items` checks the deadline between items);
- an item longer than ``max_audio_s`` (read from its header, not decoded) is an error in its
  row, as is any item that is not audio; the other items are transcribed.

SIGTERM or Ctrl-C stop uvicorn gracefully; nothing else runs to be left behind.
"""

from __future__ import annotations

import asyncio
import contextvars
import ctypes
import ctypes.util
import functools
import json
import time
from dataclasses import dataclass

from .audio import AudioError, audio_duration
from .errors import InputError, reason
from .tracking.servers import scoring_app
from .web import Page, model_card

# when the request being served must be answered (time.monotonic()); None: no limit
deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("deadline",
                                                                         default=None)


@dataclass(frozen=True)
class ServeLimits:
    max_request_mb: float = 25.0  # request body
    max_audio_s: float = 600.0  # one item's audio
    timeout_s: float = 120.0  # one request, all its items
    max_concurrent: int = 2  # requests transcribed at once
    max_queue: int = 16  # requests waiting for a turn; more: 503

    def __post_init__(self):
        for name in ("max_request_mb", "max_audio_s", "timeout_s"):
            if not getattr(self, name) > 0:
                raise InputError(f"serve: {name} must be > 0, not {getattr(self, name)}")
        if self.max_concurrent < 1 or self.max_queue < 0:
            raise InputError("serve: max_concurrent must be >= 1 and max_queue >= 0")

    @property
    def max_bytes(self) -> int:
        return int(self.max_request_mb * 1024 * 1024)


def transcribe_item(transcriber, audio, limits: ServeLimits = ServeLimits()):
    """One audio file given as bytes, transcribed (a
    :class:`~speechrnn.transcribe.Transcript`) within ``limits`` and the request's
    ``deadline``. Raises :class:`InputError` or :class:`~speechrnn.audio.AudioError` with
    the reason when it is not audio, too long, or the request's time is up."""

    if isinstance(audio, str):
        raise InputError("not base64-encoded audio")
    if not isinstance(audio, (bytes, bytearray)):
        raise InputError(f"expected audio bytes, got {type(audio).__name__}")
    end = deadline.get()
    if end is not None and time.monotonic() > end:
        raise InputError("not transcribed: the request's time limit was reached")
    seconds = audio_duration(bytes(audio), name="<audio bytes>")
    if seconds > limits.max_audio_s:
        raise InputError(f"audio is {seconds:.0f} s long; this server takes at most "
                         f"{limits.max_audio_s:.0f} s per item")
    return transcriber.transcribe(bytes(audio))


def transcribe_items(transcriber, items, limits: ServeLimits = ServeLimits()) -> list[dict]:
    """Transcribe audio files given as bytes: one dict per item with ``text``,
    ``confidence``, ``words`` (a list of {word, start, end, confidence}) and ``error``
    ("" or why that item was not transcribed). Never raises for a bad item."""

    rows = []
    for i, audio in enumerate(items):
        row = {"text": "", "confidence": 0.0, "words": [], "error": ""}
        try:
            result = transcribe_item(transcriber, audio, limits)
            row.update(text=result.text, confidence=result.confidence,
                       words=result.as_dict()["words"])
        except (AudioError, InputError) as err:
            row["error"] = f"audio {i}: {reason(err)}"
        rows.append(row)
    return rows


class LimitsMiddleware:
    """ASGI middleware: request size, concurrency and time limits in front of ``app``."""

    def __init__(self, app, limits: ServeLimits = ServeLimits()):
        self.app = app
        self.limits = limits
        self.running = asyncio.Semaphore(limits.max_concurrent)
        self.waiting = 0  # requests waiting for a turn
        self.active = 0  # requests being answered

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        limits = self.limits
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limits.max_bytes:
            await self._drain(receive)
            return await _refuse(send, 413, "REQUEST_TOO_LARGE", _too_large(limits))
        if self.running.locked() and self.waiting >= limits.max_queue:
            await self._drain(receive)
            return await _refuse(send, 503, "TEMPORARILY_UNAVAILABLE",
                                 f"busy: {limits.max_concurrent} requests running and "
                                 f"{self.waiting} waiting; retry later",
                                 [(b"retry-after", b"5")])
        self.waiting += 1
        try:
            await self.running.acquire()
        finally:
            self.waiting -= 1
        self.active += 1
        try:
            body = await _read_body(receive, limits.max_bytes)
            if body is None:
                await self._drain(receive)
                return await _refuse(send, 413, "REQUEST_TOO_LARGE", _too_large(limits))
            deadline.set(time.monotonic() + limits.timeout_s)
            await self._answer(scope, body, send)
        finally:
            self.running.release()
            self.active -= 1
            if self.active == 0 and self.waiting == 0:
                _give_back_memory()  # idle: return freed request buffers to the system

    async def _drain(self, receive) -> None:
        """Read and drop the rest of a refused body (for at most ``timeout_s``), so that a
        client that sends it all before reading gets the 413 or 503, not a reset
        connection; nothing is kept."""

        async def drain():
            while (await receive()).get("more_body"):
                pass

        try:
            await asyncio.wait_for(drain(), self.limits.timeout_s)
        except asyncio.TimeoutError:
            pass

    async def _answer(self, scope, body: bytes, send) -> None:
        sent = False

        async def replay():
            return {"type": "http.request", "body": body, "more_body": False}

        async def track(message):
            nonlocal sent
            sent = True
            await send(message)

        try:
            await asyncio.wait_for(self.app(scope, replay, track), self.limits.timeout_s)
        except asyncio.TimeoutError:
            if not sent:
                await _refuse(send, 504, "DEADLINE_EXCEEDED",
                              f"the request took longer than {self.limits.timeout_s:.0f} s")


@functools.cache
def _libc():
    """glibc, or None (another C library: its allocator is left as it is)."""

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None
    except OSError:
        return None


def _one_arena() -> None:
    """glibc gives each thread that allocates its own malloc arena and keeps what is freed
    there: with request threads handling large bodies the server's RSS creeps up. Two
    arenas (set before the threads start) and a trim when idle keep it flat."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(-8, 2)  # M_ARENA_MAX


def _give_back_memory() -> None:
    """Return the memory freed by the requests just answered to the system."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def _too_large(limits: ServeLimits) -> str:
    return (f"request body over {limits.max_request_mb:g} MB; send fewer or shorter audio "
            "items per request")


async def _read_body(receive, limit: int) -> bytes | None:
    """The whole request body, or None as soon as it passes ``limit`` bytes."""
    parts, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(parts)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)
        if not message.get("more_body"):
            return b"".join(parts)


async def _refuse(send, status: int, code: str, message: str, headers=()) -> None:
    body = json.dumps({"error_code": code, "message": message}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"), *headers]})
    await send({"type": "http.response.body", "body": body})


def serve(model: str, host: str = "127.0.0.1", port: int = 5001,
          limits: ServeLimits = ServeLimits(), uri: str | None = None) -> None:
    """Load ``model`` (``runs:/``, ``models:/``, an MLflow model folder or a model
    directory trained with tracking on) and serve it, with the transcription page at
    ``/`` (:mod:`speechrnn.web`), until SIGTERM or Ctrl-C."""
    import uvicorn

    from .tracking.registry import model_record

    _one_arena()
    scoring, transcriber = scoring_app(model, limits, uri)
    card = model_card(model, transcriber, limits, model_record(model, uri))
    page = Page(scoring, functools.partial(transcribe_item, transcriber, limits=limits), card)
    app = LimitsMiddleware(page, limits)
    # uvicorn's own backstop: connections beyond these get 503 before any of our code runs
    uvicorn.run(app, host=host, port=port, log_level="warning",
                limit_concurrency=limits.max_concurrent + limits.max_queue + 8,
                timeout_graceful_shutdown=10)

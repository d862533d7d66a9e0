"""speechrnn.web: the transcription page, its API and its model card; then the page in a
real headless browser against `speechrnn serve`, and against the server's limits."""

import asyncio
import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import soundfile as sf
from conftest import ROOT, tone, write

from speechrnn.errors import InputError
from speechrnn.formats import FORMATS, format_transcript
from speechrnn.serve import LimitsMiddleware, ServeLimits, transcribe_item
from speechrnn.web import STATIC, Page

CARD = {"model": "runs/x/model", "units": "characters", "vocabulary": 28,
        "decoding": "greedy", "decoding_name": "greedy", "formats": list(FORMATS),
        "limits": {"max_request_mb": 1.0, "max_audio_s": 20.0, "timeout_s": 30.0}}


def call(app, method: str, path: str, body: bytes = b"", query: bytes = b"", headers=()):
    """One request through an ASGI app: (status, headers, body)."""

    async def go():
        sent = []

        async def receive():
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message):
            sent.append(message)

        await app({"type": "http", "method": method, "path": path, "query_string": query,
                   "headers": list(headers)}, receive, send)
        return (sent[0]["status"], dict(sent[0]["headers"]),
                b"".join(m.get("body", b"") for m in sent[1:]))

    return asyncio.run(go())


async def scoring(scope, receive, send):
    """Stands for MLflow's scoring app: says which path reached it."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": f"scoring {scope['path']}".encode()})


class Spoken:
    """A transcriber that hears "hello world" in any audio it can read."""

    def transcribe(self, audio):
        from speechrnn.audio import audio_duration
        from speechrnn.decoding import Word
        from speechrnn.transcribe import Transcript

        seconds = audio_duration(bytes(audio), name="<audio bytes>")
        return Transcript("hello world", (Word("hello", 0.1, 0.4, 0.95), Word("world", 0.5,
                                                                             0.9, 0.42)),
                          0.7, seconds)


def page():
    """The page over :class:`Spoken`, with the limits of :data:`CARD`."""
    limits = ServeLimits(max_request_mb=1.0, max_audio_s=20.0)
    page = Page(scoring, lambda audio: transcribe_item(Spoken(), audio, limits), CARD)
    return LimitsMiddleware(page, limits)


def wav(seconds: float, sr: int = 16000) -> bytes:
    import io

    buf = io.BytesIO()
    sf.write(buf, tone(seconds, sr), sr, format="WAV")
    return buf.getvalue()


def test_page_and_its_files_come_from_this_server_alone():
    app = page()
    status, headers, html = call(app, "GET", "/")
    assert status == 200 and headers[b"content-type"].startswith(b"text/html")
    policy = headers[b"content-security-policy"].decode()
    assert "default-src 'self'" in policy and "script-src 'self'" in policy
    # every file the page names is served here; nothing names another host
    names = re.findall(r'(?:src|href)="([^"]+)"', html.decode())
    assert names and all(n.startswith("/static/") for n in names), names
    for path in STATIC.iterdir():
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", path.read_text(),
                             re.IGNORECASE), f"{path.name} names another host"
    for name in names:
        status, headers, body = call(app, "GET", name)
        assert status == 200 and body == (STATIC / Path(name).name).read_bytes()
    assert call(app, "GET", "/static/recorder.js")[1][b"content-type"].startswith(
        b"text/javascript")
    status, _, body = call(app, "HEAD", "/")
    assert status == 200 and body == b""
    for missing in ("/static/nothing.js", "/static/../__init__.py", "/static/"):
        assert call(app, "GET", missing)[0] == 404
    # the rest is MLflow's: /ping, /invocations, /version
    assert call(app, "GET", "/ping")[2] == b"scoring /ping"
    assert call(app, "POST", "/invocations", b"{}")[2] == b"scoring /invocations"


def test_model_card_is_served_as_given():
    status, _, body = call(page(), "GET", "/api/model")
    assert status == 200 and json.loads(body) == CARD


def test_transcribe_answers_the_transcript_and_each_format_as_the_cli_writes_it():
    from speechrnn.transcribe import Transcript

    status, _, body = call(page(), "POST", "/api/transcribe", wav(1.5),
                           b"name=..%2F..%2Fsecret%2Fmy%20clip.wav")
    assert status == 200
    got = json.loads(body)
    assert got["file"] == "my clip.wav" and got["text"] == "hello world"
    assert got["duration"] == 1.5 and [w["word"] for w in got["words"]] == ["hello", "world"]
    expected = Spoken().transcribe(wav(1.5))
    expected = Transcript(expected.text, expected.words, expected.confidence,
                          expected.duration, "my clip.wav")
    assert got["formats"] == {fmt: format_transcript(expected, fmt) for fmt in FORMATS}
    assert got["formats"]["srt"].startswith("1\n00:00:00,100 --> 00:00:00,900\nhello world")


def test_transcribe_refuses_what_is_not_audio_too_long_or_too_large_with_the_reason():
    app = page()
    for body, reason in ((b"this is a text file", "not a readable audio file"),
                         (b"", "not a readable audio file"),
                         (wav(30, sr=4000), "30 s long; this server takes at most 20 s")):
        status, _, answer = call(app, "POST", "/api/transcribe", body, b"name=x.wav")
        assert status == 400, answer
        message = json.loads(answer)["message"]
        assert reason in message and "<audio bytes>" not in message
    big = wav(40)  # 1.2 MB over the 1 MB limit: refused before it is read
    status, _, answer = call(app, "POST", "/api/transcribe", big, b"name=big.wav",
                             [(b"content-length", str(len(big)).encode())])
    assert status == 413 and "over 1 MB" in json.loads(answer)["message"]
    status, headers, _ = call(app, "GET", "/api/transcribe")
    assert status == 405 and headers[b"allow"] == b"POST"


def test_transcribe_runs_off_the_event_loop_and_times_out():
    """A slow transcription is answered 504 at the limit; meanwhile the server answers."""
    release = threading.Event()

    def slow(audio):
        release.wait(10)
        raise InputError("released")

    async def both():
        app = LimitsMiddleware(Page(scoring, slow, CARD), ServeLimits(timeout_s=0.5))
        sent = []

        async def receive():
            return {"type": "http.request", "body": b"x", "more_body": False}

        async def send(message):
            sent.append(message)

        request = asyncio.create_task(app({"type": "http", "method": "POST",
                                           "path": "/api/transcribe", "headers": []},
                                          receive, send))
        await asyncio.sleep(0.1)
        card = []

        async def keep(message):
            card.append(message)

        await app({"type": "http", "method": "GET", "path": "/api/model", "headers": []},
                  receive, keep)
        await request
        release.set()
        return sent[0]["status"], card[0]["status"]

    assert asyncio.run(both()) == (504, 200)


def test_model_card_describes_the_model_its_decoding_and_limits(trained):
    from speechrnn.transcribe import Transcriber
    from speechrnn.web import model_card

    transcriber = Transcriber(trained.model_dir)
    record = {"name": "speechrnn-x", "version": "3", "run_id": "abc",
              "test_wer": {"greedy": 0.5}}
    card = model_card(str(trained.model_dir), transcriber, ServeLimits(max_audio_s=60),
                      record)
    assert card["name"] == "speechrnn-x" and card["version"] == "3"
    assert card["units"] == "characters"
    assert card["vocabulary"] == len(transcriber.alphabet.characters)
    assert card["decoding"] == "greedy" and card["decoding_name"] == "greedy"
    assert card["limits"]["max_audio_s"] == 60 and card["formats"] == list(FORMATS)
    json.dumps(card)  # it is served as JSON


def test_model_record_names_the_registered_version_its_run_and_test_wer(trained, talkative):
    import mlflow

    from speechrnn.tracking import model_record

    model_dir, uri = talkative
    version = uri.rsplit("/", 1)[-1]
    client = mlflow.MlflowClient(trained.uri)
    run_id = client.get_model_version("speechrnn-talkative", version).run_id
    client.log_metric(run_id, "test_greedy_wer", 0.25)
    client.log_metric(run_id, "test_beam_lm_wer", 0.125)
    client.log_metric(run_id, "dev_wer", 0.5)
    wer = {"beam_lm": 0.125, "greedy": 0.25}
    assert model_record(uri, trained.uri) == {"name": "speechrnn-talkative", "version": version,
                                              "run_id": run_id, "test_wer": wer}
    latest = model_record("models:/speechrnn-talkative/latest", trained.uri)
    assert int(latest["version"]) >= int(version) and "test_wer" in latest
    assert model_record(f"runs:/{run_id}/model", trained.uri) == {"run_id": run_id,
                                                                  "test_wer": wer}
    # a trained model directory: its mlflow.json names the run and the registered version
    record = model_record(str(trained.model_dir), trained.uri)
    assert record["name"] == trained.name and record["run_id"] == trained.run_id
    assert record["version"].isdigit()
    # nothing known: what can be told, with a warning; never an error
    with pytest.warns(UserWarning, match="could not tell"):
        assert model_record("models:/no-such-model/1", trained.uri) == {"name": "no-such-model"}
    assert model_record(str(model_dir), trained.uri) == {}  # never logged: no mlflow.json


# --- in a real browser ---------------------------------------------------------------------

def wait(browser, condition, timeout: float = 60):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout, poll_frequency=0.2).until(lambda _: condition())


def results(browser) -> dict:
    """Each transcript on the page by file name: state, status line, words, text."""
    return {r["name"]: r for r in browser.execute_script("""
        return [...document.querySelectorAll('#results .result')].map(li => ({
          name: li.querySelector('.name').textContent, state: li.dataset.state,
          status: li.querySelector('.status').textContent,
          count: li.dataset.words === undefined ? null : Number(li.dataset.words),
          words: [...li.querySelectorAll('.transcript .word')].map(b => b.textContent),
          text: (li.querySelector('.transcript .text') || {}).textContent}));""")}


def upload(browser, *paths: Path) -> None:
    browser.find_element("id", "files").send_keys("\n".join(str(p) for p in paths))


def settled(browser, *names: str) -> bool:
    got = results(browser)
    return all(n in got and got[n]["state"] in ("done", "failed") for n in names)


def cli(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "speechrnn", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.slow
def test_page_transcribes_files_as_the_cli_does_in_a_real_browser(trained, talkative,
                                                                  tmp_path, monkeypatch):
    import os

    from servers import Server, chrome, free_port

    from speechrnn.manifest import read_manifest

    _, model_uri = talkative
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained.uri)
    clip = Path(read_manifest(trained.corpus / "test.jsonl")[0].audio)
    folder = tmp_path / "in"
    folder.mkdir()
    bad = folder / "notes.wav"
    bad.write_text("this is a text file, not audio\n")
    big = write(folder / "big.wav", tone(40))  # 1.2 MB
    long = write(folder / "long.flac", tone(30, sr=8000), sr=8000)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    port = free_port()
    server = Server(["serve", "--model", model_uri, "--port", str(port), "--max-request-mb",
                     "1", "--max-audio-s", "20"], trained.uri, f"http://127.0.0.1:{port}/ping")
    # a fake microphone that plays the clip over and over
    browser = chrome("--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                     f"--use-file-for-fake-audio-capture={clip}", "--autoplay-policy="
                     "no-user-gesture-required", downloads=downloads)
    screenshot = Path(os.environ.get("SPEECHRNN_SCREENSHOTS", tmp_path)) / "page.png"
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    try:
        browser.get(f"http://127.0.0.1:{port}/")
        model = lambda: browser.find_element("id", "model").text  # noqa: E731
        wait(browser, lambda: "speechrnn-talkative" in model())
        version = model_uri.rsplit("/", 1)[-1]
        assert f"speechrnn-talkative version {version}" in model()
        assert "characters" in model() and "greedy" in model()
        assert "up to 1 MB and 20 s per file" in browser.find_element("id", "hint").text

        upload(browser, clip, bad, big, long)
        wait(browser, lambda: settled(browser, clip.name, bad.name, big.name, long.name), 120)
        got = results(browser)
        expected = json.loads(cli("transcribe", "--model", model_uri, str(clip),
                                  "--format", "json"))
        mine = got[clip.name]
        assert mine["state"] == "done" and expected["text"] != ""
        assert mine["text"] == expected["text"]
        assert mine["words"] == [w["word"] for w in expected["words"]]
        assert mine["count"] == len(expected["words"]) and \
            mine["status"].startswith(f"{len(expected['words'])} word")
        # one line each, beside that file, with the reason; the other files went on
        assert got[bad.name]["state"] == "failed" and \
            "not a readable audio file" in got[bad.name]["status"]
        assert got[big.name]["status"] == ("Too large: 1.2 MB; this server takes at most 1 "
                                           "MB per file.")
        assert "30 s long; this server takes at most 20 s" in got[long.name]["status"]

        # the SRT download is what `speechrnn transcribe --format srt` writes
        browser.execute_script(f"""[...document.querySelectorAll('#results .result')]
            .find(li => li.querySelector('.name').textContent === {json.dumps(clip.name)})
            .querySelector('[data-format="srt"]').click();""")
        srt = downloads / f"{clip.stem}.srt"
        wait(browser, srt.exists, 30)
        assert srt.read_text() == cli("transcribe", "--model", model_uri, str(clip),
                                      "--format", "srt") != ""

        # a word plays the audio from its start
        first = expected["words"][-1]
        browser.execute_script(f"""[...document.querySelectorAll('#results .result')]
            .find(li => li.querySelector('.name').textContent === {json.dumps(clip.name)})
            .querySelectorAll('.transcript .word')[{len(expected['words']) - 1}].click();""")
        at = lambda: browser.execute_script(  # noqa: E731
            f"""return [...document.querySelectorAll('#results .result')]
            .find(li => li.querySelector('.name').textContent === {json.dumps(clip.name)})
            .querySelector('audio').currentTime;""")
        wait(browser, lambda: at() >= first["start"] - 0.01, 10)
        assert at() < first["start"] + 2.0

        # the microphone: two seconds recorded, sent as a WAV, transcribed
        browser.find_element("id", "record").click()
        wait(browser, lambda: "Recording" in browser.find_element("id", "record-status").text)
        time.sleep(2.0)
        browser.find_element("id", "record").click()
        wait(browser, lambda: settled(browser, "recording-1.wav"), 60)
        recorded = results(browser)["recording-1.wav"]
        assert recorded["state"] == "done", recorded["status"]
        seconds = float(re.search(r"· ([\d.]+) s ·", recorded["status"]).group(1))
        assert 1.5 <= seconds <= 4.0, recorded["status"]

        browser.save_screenshot(str(screenshot))
        # on a 360 px wide phone nothing runs off the side
        browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": 360, "height": 740, "deviceScaleFactor": 2, "mobile": True})
        assert browser.execute_script("return window.innerWidth") == 360
        assert browser.execute_script("return document.documentElement.scrollWidth") <= 360
        # the files refused show no player they cannot use; the others can be played
        players = browser.execute_script("""return Object.fromEntries([...document
            .querySelectorAll('#results .result')].map(li => [
            li.querySelector('.name').textContent, !li.querySelector('audio').hidden]));""")
        assert players[bad.name] is False and players[clip.name] and players[big.name]
        server.terminate_and_check()
    finally:
        browser.quit()
        server.stop()
    assert screenshot.stat().st_size > 20_000


class PageServer:
    """The page and :class:`LimitsMiddleware` served by uvicorn in a thread, over a transcriber that
    waits for the test's word: a server at its limits on demand."""

    def __init__(self, limits: ServeLimits):
        import uvicorn
        from servers import free_port

        self.inside, self.release = threading.Event(), threading.Event()

        def transcribe(audio):
            self.inside.set()
            self.release.wait(30)
            return Spoken().transcribe(audio)

        self.port = free_port()
        app = LimitsMiddleware(Page(scoring, transcribe, {**CARD, "limits": {
            "max_request_mb": limits.max_request_mb, "max_audio_s": limits.max_audio_s,
            "timeout_s": limits.timeout_s}}), limits)
        self.server = uvicorn.Server(uvicorn.Config(app, port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started and time.time() < deadline:
            time.sleep(0.05)

    def stop(self):
        self.release.set()
        self.server.should_exit = True
        self.thread.join(30)


@pytest.mark.slow
def test_page_shows_a_busy_or_slow_server_beside_the_file_and_tries_again(tmp_path):
    from servers import chrome, post

    clip = write(tmp_path / "clip.wav", tone(1.0))
    server = PageServer(ServeLimits(max_concurrent=1, max_queue=0, timeout_s=4.0))
    url = f"http://127.0.0.1:{server.port}"
    browser = chrome()
    try:
        browser.get(url + "/")
        wait(browser, lambda: "runs/x/model" in browser.find_element("id", "model").text)
        # another client holds the only place: the page's request gets 503
        other = threading.Thread(target=post, args=(url + "/api/transcribe", wav(1.0)))
        other.start()
        assert server.inside.wait(10)
        upload(browser, clip)
        wait(browser, lambda: settled(browser, "clip.wav"))
        got = results(browser)["clip.wav"]
        assert got["state"] == "failed" and got["status"] == \
            "The server is busy: try this file again in a few seconds."
        # that client's request passes the time limit: 504 for it; then the page tries again,
        # and its own request is held past the limit too
        other.join(30)
        browser.execute_script("document.querySelector('.result-head button').click()")
        wait(browser, lambda: settled(browser, "clip.wav") and
             results(browser)["clip.wav"]["status"].startswith("Timed out"))
        assert results(browser)["clip.wav"]["status"] == \
            "Timed out: the server took longer than 4 s on this file."
        # with the server free again, one more try transcribes it
        server.release.set()
        time.sleep(0.5)
        browser.execute_script("document.querySelector('.result-head button').click()")
        wait(browser, lambda: results(browser)["clip.wav"]["state"] == "done")
        assert results(browser)["clip.wav"]["words"] == ["hello", "world"]
    finally:
        browser.quit()
        server.stop()


"""speechrnn ui and speechrnn serve: real servers, a real headless browser, real audio."""

import base64
import json
import os
import time
from pathlib import Path

import pytest
from servers import Server, chrome, free_port, post

from speechrnn.manifest import read_manifest


def frame(*items: bytes) -> bytes:
    return json.dumps({"dataframe_split": {"columns": ["audio"], "data": [
        [base64.b64encode(x).decode()] for x in items]}}).encode()


@pytest.mark.slow
def test_served_model_transcribes_audio_and_refuses_garbage(trained, talkative):
    from speechrnn.transcribe import Transcriber

    model_dir, model_uri = talkative
    port = free_port()
    server = Server(["serve", "--model", model_uri, "--port", str(port),
                     "--max-request-mb", "2", "--max-audio-s", "60"],
                    trained.uri, f"http://127.0.0.1:{port}/ping")
    url = f"http://127.0.0.1:{port}/invocations"
    try:
        rows = read_manifest(trained.corpus / "test.jsonl")[:2]
        audio = [Path(r.audio).read_bytes() for r in rows]
        local = Transcriber(model_dir)
        status, body = post(url, frame(*audio))
        assert status == 200, body
        predictions = json.loads(body)["predictions"]
        for got, path in zip(predictions, (r.audio for r in rows)):
            expected = local.transcribe(path)
            assert got["text"] == expected.text != "" and got["error"] == ""
            assert json.loads(got["words"]) == expected.as_dict()["words"]
        # one bad item among good ones: reported in its row, the rest transcribed
        status, body = post(url, frame(audio[0], b"not audio at all"))
        assert status == 200, body
        good, bad = json.loads(body)["predictions"]
        assert good["text"] == predictions[0]["text"] and "not a readable audio file" in \
            bad["error"]
        # nothing usable: a 4xx with the reason, never a 500
        for payload, reason in ((frame(b"RIFF\x00\x00garbage"), "not a readable audio file"),
                                (b"{not json", ""), (json.dumps({"dataframe_split": {
                                    "columns": ["sound"], "data": [["eA=="]]}}).encode(), ""),
                                (frame(b"\x00" * 10), "")):
            status, body = post(url, payload)
            assert 400 <= status < 500, (status, body[:300])
            assert reason in body
        # limits: each bad item is an error in its row; a body too large is refused whole
        import numpy as np

        status, body = post(url, frame(audio[0], wav_bytes(120, subtype="PCM_U8"),
                                       wav_bytes(1, fill=np.nan,
                                       subtype="FLOAT"), wav_bytes(0)))
        assert status == 200, body
        rows = json.loads(body)["predictions"]
        assert rows[0]["text"] == predictions[0]["text"]
        assert "120 s long; this server takes at most 60 s" in rows[1]["error"]
        assert "non-finite" in rows[2]["error"] and rows[3]["error"]
        status, body = post(url, frame(os.urandom(3 * 1024 * 1024)))
        assert status == 413 and "over 2 MB" in body
        status, body = post(url, frame(audio[0]))
        assert status == 200 and json.loads(body)["predictions"][0]["text"] == \
            predictions[0]["text"]
        server.terminate_and_check()
    finally:
        server.stop()


def test_logged_model_is_code_from_the_tracking_package_and_loads(trained, talkative,
                                                                  monkeypatch):
    """The model is MLflow "model from code": tracking/pyfunc.py copied beside MLmodel, the
    speechrnn package (tracking subpackage included) as its code; loaded as MLflow loads it
    to serve it, it transcribes as the library does."""
    import mlflow
    import pandas as pd
    import yaml

    from speechrnn.tracking import download_model, load_pyfunc
    from speechrnn.transcribe import Transcriber

    model_dir, model_uri = talkative
    mlflow.set_tracking_uri(trained.uri)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri))
    flavor = yaml.safe_load((local / "MLmodel").read_text())["flavors"]["python_function"]
    assert Path(flavor["model_code_path"]).name == "pyfunc.py" and (local / "pyfunc.py").exists()
    code = local / flavor["code"] / "speechrnn"
    assert (code / "tracking" / "pyfunc.py").exists() and (code / "transcribe.py").exists()
    assert not (code / "mlflow_pyfunc.py").exists() and not (code / "tracking.py").exists()
    assert sorted(p.name for p in download_model(model_uri, trained.uri).iterdir()) == \
        sorted(p.name for p in Path(model_dir).iterdir())
    # downloaded once a process: the CLI reads a model's decoding, then loads it
    first = download_model(model_uri, trained.uri)
    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", lambda **_: 1 / 0)
    assert download_model(model_uri, trained.uri) == first
    monkeypatch.undo()

    path = read_manifest(trained.corpus / "test.jsonl")[0].audio
    got = load_pyfunc(model_uri, trained.uri).predict(
        pd.DataFrame({"audio": [Path(path).read_bytes()]}))
    assert list(got.columns) == ["text", "confidence", "words", "error"]
    assert got["text"][0] == Transcriber(model_dir).transcribe(path).text != ""
    assert got["error"][0] == ""


@pytest.mark.slow
def test_ui_shows_the_run_and_its_wer_in_a_real_browser(trained, tmp_path):
    import mlflow
    from selenium.webdriver.support.ui import WebDriverWait

    browser = chrome()
    port = free_port()
    server = Server(["ui", "--port", str(port)], trained.uri, f"http://127.0.0.1:{port}/")
    run = mlflow.MlflowClient(trained.uri).get_run(trained.run_id)
    screenshot = Path(os.environ.get("SPEECHRNN_SCREENSHOTS", tmp_path)) / "mlflow-ui.png"
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    try:
        # the experiment's runs, charts view: one chart per metric, the runs listed beside
        browser.get(f"http://127.0.0.1:{port}/#/experiments/{run.info.experiment_id}/runs"
                    "?compareRunsMode=CHART")
        text = lambda: browser.find_element("tag name", "body").text  # noqa: E731
        WebDriverWait(browser, 120, poll_frequency=1).until(
            lambda _: run.info.run_name in text() and "dev_wer" in text())
        WebDriverWait(browser, 60, poll_frequency=1).until(  # the charts have drawn
            lambda b: b.execute_script("return document.querySelectorAll('svg').length") > 20)
        browser.save_screenshot(str(screenshot))
        assert "Training runs" in text()
        assert len(server.terminate_and_check()) >= 2  # mlflow ui and its server, stopped
    finally:
        browser.quit()
        server.stop()
    assert screenshot.stat().st_size > 20_000


# --- limits: speechrnn.serve, without a server ---------------------------------------------

class FakeTranscriber:
    """Says "yes" to anything: the limits, not the model, are under test."""

    def __init__(self):
        self.calls = 0

    def transcribe(self, audio):
        from speechrnn.transcribe import Transcript

        self.calls += 1
        return Transcript("yes", confidence=0.9)


def wav_bytes(seconds: float, sr: int = 8000, fill: float = 0.1, subtype="PCM_16",
              fmt="WAV") -> bytes:
    import io

    import numpy as np
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.full(int(seconds * sr), fill, np.float32), sr, format=fmt,
             subtype=subtype)
    return buf.getvalue()


def test_transcribe_items_reports_each_bad_item_and_transcribes_the_rest():

    import numpy as np

    from speechrnn.serve import ServeLimits, deadline, transcribe_items

    fake = FakeTranscriber()
    nan = wav_bytes(1.0, fill=np.nan, subtype="FLOAT")
    two_hours = wav_bytes(7200, sr=2000, subtype="PCM_U8")  # 14 MB; its header is read
    rows = transcribe_items(fake, [wav_bytes(1.0), b"not audio", "eA==!", 42, b"",
                                   two_hours, nan], ServeLimits(max_audio_s=600))
    assert [r["text"] for r in rows] == ["yes", "", "", "", "", "", "yes"]
    errors = [r["error"] for r in rows]
    assert errors[0] == "" and "audio 1: not a readable audio file" in errors[1]
    assert "not base64" in errors[2] and "expected audio bytes, got int" in errors[3]
    assert errors[4].startswith("audio 4:") and "7200 s long" in errors[5]
    assert fake.calls == 2  # the NaN item reaches the transcriber, which is fake here
    token = deadline.set(time.monotonic() - 1)  # the request's time is up
    try:
        rows = transcribe_items(fake, [wav_bytes(1.0)])
    finally:
        deadline.reset(token)
    assert "time limit" in rows[0]["error"] and fake.calls == 2


def run_asgi(app, body: bytes, headers=(), chunk: int | None = None):
    """One POST through an ASGI app: (status, JSON or text body)."""
    import asyncio

    async def go():
        parts = [body[i:i + chunk] for i in range(0, len(body), chunk)] if chunk else [body]
        sent = []

        async def receive():
            part = parts.pop(0) if parts else b""
            return {"type": "http.request", "body": part, "more_body": bool(parts)}

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/invocations",
                 "headers": [(k.encode(), v.encode()) for k, v in headers]}
        await app(scope, receive, send)
        return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])

    return asyncio.run(go())


async def echo(scope, receive, send, delay: float = 0.0):
    import asyncio

    message = await receive()
    await asyncio.sleep(delay)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": message["body"]})


def test_limits_refuse_large_bodies_before_reading_them_and_pass_the_rest():
    from speechrnn.serve import LimitsMiddleware, ServeLimits

    app = LimitsMiddleware(echo, ServeLimits(max_request_mb=1))
    status, body = run_asgi(app, b"x" * 100, [("content-length", "100")])
    assert (status, body) == (200, b"x" * 100)
    big = b"x" * (2 * 1024 * 1024)
    status, body = run_asgi(app, big, [("content-length", str(len(big)))])
    assert status == 413 and "over 1 MB" in json.loads(body)["message"]
    status, body = run_asgi(app, big, chunk=64 * 1024)  # no length given: counted as read
    assert status == 413
    status, body = run_asgi(app, b"y" * 5000, chunk=1000)  # chunked and small: whole
    assert (status, body) == (200, b"y" * 5000)


def test_limits_queue_then_refuse_and_time_out():
    import asyncio
    import functools

    from speechrnn.serve import LimitsMiddleware, ServeLimits

    # the semaphore binds to one event loop: run the three requests in one loop instead
    async def three():
        app = LimitsMiddleware(functools.partial(echo, delay=0.3),
                     ServeLimits(max_concurrent=1, max_queue=1, timeout_s=5))

        async def one(body):
            sent = []

            async def receive():
                return {"type": "http.request", "body": body, "more_body": False}

            async def send(m):
                sent.append(m)

            await app({"type": "http", "method": "POST", "headers": []}, receive, send)
            return sent[0]["status"]

        tasks = [asyncio.create_task(one(b)) for b in (b"a", b"b", b"c")]
        return await asyncio.gather(*tasks)

    assert sorted(asyncio.run(three())) == [200, 200, 503]  # one runs, one waits, one refused
    slow = LimitsMiddleware(functools.partial(echo, delay=2.0), ServeLimits(timeout_s=0.2))
    status, body = run_asgi(slow, b"z")
    assert status == 504 and "longer than" in json.loads(body)["message"]

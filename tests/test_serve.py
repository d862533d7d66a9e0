"""speechrnn ui and speechrnn serve: real servers, a real headless browser, real audio."""

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import ROOT

from speechrnn.manifest import read_manifest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, args, uri: str, url: str, timeout: float = 120.0):
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "SPEECHRNN_PROGRESS": "0"}
        self.proc = subprocess.Popen([sys.executable, "-m", "speechrnn", *args], cwd=ROOT,
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(self.proc.stdout.read().decode()[-3000:])
            try:
                urllib.request.urlopen(url, timeout=2)
                return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.5)
        self.stop()
        raise AssertionError(f"{url} did not come up in {timeout:.0f} s")

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


def post(url: str, body: bytes, content_type: str = "application/json"):
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def frame(*items: bytes) -> bytes:
    return json.dumps({"dataframe_split": {"columns": ["audio"], "data": [
        [base64.b64encode(x).decode()] for x in items]}}).encode()


@pytest.fixture
def talkative(trained, tmp_path):
    """A registered model that always says something: the tiny trained model says nothing
    yet, and equal empty strings would prove little. Its weights are sharpened at random."""
    import numpy as np

    from speechrnn.config import Config, TrackingConfig
    from speechrnn.model import load_model, save_model
    from speechrnn.tracking import make_tracker

    model, features, alphabet, _ = load_model(trained.model_dir)
    rng = np.random.default_rng(0)
    model.set_weights([w + rng.normal(0, 0.5, w.shape).astype(w.dtype)
                       for w in model.get_weights()])
    path = save_model(tmp_path / "talkative", model, features, alphabet)
    tracker = make_tracker(Config(name="talkative", tracking=TrackingConfig(uri=trained.uri)))
    assert tracker.experiment == "speechrnn-talkative"
    tracker.start()
    info = tracker.log_model(path, "speechrnn-talkative")
    tracker.end()
    return path, f"models:/speechrnn-talkative/{info['version']}"


@pytest.mark.slow
def test_served_model_transcribes_audio_and_refuses_garbage(trained, talkative):
    from speechrnn.transcribe import Transcriber

    model_dir, model_uri = talkative
    port = free_port()
    server = Server(["serve", "--model", model_uri, "--port", str(port)],
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
    finally:
        server.stop()


def test_logged_model_is_code_from_the_tracking_package_and_loads(trained, talkative):
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

    path = read_manifest(trained.corpus / "test.jsonl")[0].audio
    got = load_pyfunc(model_uri, trained.uri).predict(
        pd.DataFrame({"audio": [Path(path).read_bytes()]}))
    assert list(got.columns) == ["text", "confidence", "words", "error"]
    assert got["text"][0] == Transcriber(model_dir).transcribe(path).text != ""
    assert got["error"][0] == ""


def chrome():
    """Headless Debian chromium driven by its chromedriver (never downloaded)."""
    webdriver = pytest.importorskip("selenium.webdriver")
    driver_path = shutil.which("chromedriver")
    if not shutil.which("chromium") or not driver_path:
        pytest.skip("chromium and chromium-driver are not installed (bash setup.sh --dev)")
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1600,1200"):
        options.add_argument(arg)
    return webdriver.Chrome(options=options,
                            service=webdriver.ChromeService(executable_path=driver_path))


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
    finally:
        browser.quit()
        server.stop()
    assert screenshot.stat().st_size > 20_000

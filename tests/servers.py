"""Test helpers for real servers: a ``speechrnn`` server in its own process, HTTP posts,
and headless Debian chromium driven by its chromedriver."""

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))
from serve_load import descendants, free_port  # noqa: E402

__all__ = ["Server", "chrome", "free_port", "post"]


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

    def terminate_and_check(self):
        """SIGTERM to the speechrnn process only (not its group), as a service manager or
        `kill` sends it: it exits, and so does every process it started."""
        children = descendants(self.proc.pid)
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)
        time.sleep(1.0)
        alive = [pid for pid in children if Path(f"/proc/{pid}").exists()
                 and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()]
        self.stop()
        assert not alive, f"left running after SIGTERM: {alive}"
        return children

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


def chrome(*args: str, downloads: Path | None = None):
    """Headless Debian chromium driven by its chromedriver (never downloaded), offline
    (no background connections); ``args``: more command-line switches; ``downloads``: the
    folder that downloads land in, without asking."""
    webdriver = pytest.importorskip("selenium.webdriver")
    driver_path = shutil.which("chromedriver")
    if not shutil.which("chromium") or not driver_path:
        pytest.skip("chromium and chromium-driver are not installed (bash setup.sh --dev)")
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1600,1200", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", *args):
        options.add_argument(arg)
    if downloads is not None:
        options.add_experimental_option("prefs", {
            "download.default_directory": str(downloads), "download.prompt_for_download": False})
    return webdriver.Chrome(options=options,
                            service=webdriver.ChromeService(executable_path=driver_path))

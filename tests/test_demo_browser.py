"""``v2a demo`` in a real browser: the command serves the page, headless Chromium (the system's
``chromium`` and ``chromedriver``, driven by Selenium; nothing is downloaded) uploads
examples/shapes.mp4, presses Generate and waits for the result; the returned video is fetched
over HTTP and checked with PyAV. A too-long video is refused with the message on the page.

Without Chromium, chromedriver, Selenium or Gradio the tests are skipped, and pytest's summary
(``-ra`` in pyproject.toml) says why. ``.ci/run`` installs Chromium with apt-get where it can.
``V2A_DEMO_SCREENSHOT=docs/demo.png`` also writes the page's screenshot there (docs/demo.md).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import av
import pytest

from tests.media_fixtures import write_video

ROOT = Path(__file__).resolve().parent.parent
SHAPES = ROOT / "examples" / "shapes.mp4"
MAX_SECONDS = 10  # the server's --max-seconds: shapes.mp4 (6 s) is taken, a 12 s video is not
START_TIMEOUT = 120.0  # seconds for the server to answer (imports and the tiny model, 2 busy cores)
RESULT_TIMEOUT = 180.0  # seconds for one generation seen through the page

webdriver = pytest.importorskip("selenium.webdriver",
                                reason="the browser test needs Selenium (pip install selenium; "
                                "it is in v2a[test])")
pytest.importorskip("gradio", reason="v2a demo needs Gradio: install v2a[demo]")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


def system_chromium() -> tuple[str, str]:
    """The paths of the system's Chromium and chromedriver, or a skip saying what is missing."""
    browser = next(filter(None, map(shutil.which, ("chromium", "chromium-browser"))), None)
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        missing = " and ".join(name for name, path in (("chromium", browser),
                                                        ("chromedriver", driver)) if path is None)
        pytest.skip(f"headless Chromium is not installed ({missing} not on PATH): apt-get "
                    "install chromium chromium-driver (.ci/run does it as root on Debian)")
    return browser, driver


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class DemoServer:
    """``v2a demo --recipe tiny`` in a subprocess, its output in ``log``."""

    def __init__(self, folder: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log = folder / "server.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("GRADIO_TEMP_DIR", None)
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "v2a", "demo", "--recipe", "tiny", "--port",
                 str(self.port), "--max-seconds", str(MAX_SECONDS)],
                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=folder)

    def wait_until_serving(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"v2a demo exited with {self.process.returncode}:\n{self.output()}")
            try:
                with urllib.request.urlopen(self.url, timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        pytest.fail(f"v2a demo did not answer on {self.url} within {START_TIMEOUT:g} s:\n"
                    f"{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def workdir(self) -> Path:
        found = re.search(r"the demo's files are kept in (\S+) until it stops", self.output())
        assert found, self.output()
        return Path(found.group(1))

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


@pytest.fixture(scope="module")
def chromium():
    browser, driver_path = system_chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--window-size=1280,1150", "--mute-audio"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})  # requests, for a check
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def server(tmp_path_factory, chromium):
    demo = DemoServer(tmp_path_factory.mktemp("demo-server"))
    try:
        demo.wait_until_serving()
        yield demo
    finally:
        demo.stop()


def upload(driver, url: str, video: Path) -> None:
    """Open the page at ``url`` afresh and put ``video`` into its upload field; wait until it
    shows."""
    driver.get(url)
    field = WebDriverWait(driver, 60).until(
        lambda d: d.find_element(By.CSS_SELECTOR, "#v2a-video input[type=file]"))
    field.send_keys(str(video))  # a file input takes a path even while hidden
    WebDriverWait(driver, 60).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#v2a-video video[src]"))


def test_a_video_gets_sound_in_the_browser(server, chromium, tmp_path):
    upload(chromium, server.url, SHAPES)
    chromium.find_element(By.ID, "v2a-generate").click()
    player = WebDriverWait(chromium, RESULT_TIMEOUT).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#v2a-result-video video[src]"))[0]
    source = player.get_attribute("src")
    assert source.startswith(server.url)
    returned = tmp_path / "returned.mp4"
    with urllib.request.urlopen(source, timeout=30) as answer:
        returned.write_bytes(answer.read())
    with av.open(str(returned)) as container:
        assert container.streams.audio, "the returned video has no audio stream"
        audio, video = container.streams.audio[0], container.streams.video[0]
        audio_seconds = float(audio.duration * audio.time_base)
        video_seconds = float(video.duration * video.time_base)
        rate = audio.codec_context.sample_rate
    assert video_seconds == pytest.approx(6.0)  # shapes.mp4's 150 frames at 25 fps, copied
    # The sound lasts exactly as long as the video; AAC stores it in frames of 1024 samples,
    # so the stream's stated length may be up to one frame off (at the stream's rate).
    assert abs(audio_seconds - video_seconds) <= 1024 / rate

    page = chromium.find_element(By.TAG_NAME, "body")
    WebDriverWait(chromium, 30).until(lambda d: "onset(s) detected" in page.text)
    offered = {cell.get_attribute("aria-label") for cell in
               chromium.find_elements(By.CSS_SELECTOR, "#v2a-files td.filename")}
    assert offered == {"shapes.mp4", "shapes.wav"}  # both offered for download
    links = chromium.find_elements(By.CSS_SELECTOR, "#v2a-files a[href]")
    assert {Path(link.get_attribute("href").split("?")[0]).name for link in links} >= \
        {"shapes.mp4", "shapes.wav"}
    assert chromium.find_elements(By.CSS_SELECTOR, "#v2a-result-audio audio, "
                                  "#v2a-result-audio [data-testid='waveform-Generated sound']")
    assert chromium.find_elements(By.CSS_SELECTOR, "#v2a-spectrogram img[src]")
    for close in chromium.find_elements(By.CSS_SELECTOR, "[data-testid='toast-close']"):
        close.click()  # the model's warnings, shown as toasts, off the screenshot
    height = chromium.execute_script("return document.documentElement.scrollHeight")
    chromium.set_window_size(1280, height + 300)  # the whole page (and the window frame)
    chromium.execute_script("window.scrollTo(0, 0)")
    time.sleep(0.5)
    chromium.save_screenshot(str(tmp_path / "demo.png"))
    if os.environ.get("V2A_DEMO_SCREENSHOT"):
        shutil.copyfile(tmp_path / "demo.png", os.environ["V2A_DEMO_SCREENSHOT"])
    assert (tmp_path / "demo.png").stat().st_size > 10_000

    # nothing was fetched from anywhere but the demo itself (no fonts, no CDN, no analytics)
    requested = {json.loads(entry["message"])["message"]["params"]["request"]["url"]
                 for entry in chromium.get_log("performance")
                 if '"Network.requestWillBeSent"' in entry["message"]}
    elsewhere = [url for url in requested
                 if not url.startswith((server.url, "data:", "blob:" + server.url[:-1]))]
    assert requested and not elsewhere


def test_a_too_long_video_is_refused_on_the_page(server, chromium, tmp_path):
    long_video = write_video(tmp_path / "long.mp4", seconds=12.0, fps=5.0)
    upload(chromium, server.url, long_video)
    chromium.find_element(By.ID, "v2a-generate").click()
    message = (f"long.mp4 lasts 12.0 s, longer than this demo's limit of {MAX_SECONDS} s; "
               "upload a shorter video")
    page = chromium.find_element(By.TAG_NAME, "body")
    WebDriverWait(chromium, 60).until(lambda d: message in page.text)
    assert not chromium.find_elements(By.CSS_SELECTOR, "#v2a-result-video video[src]")


def test_stopping_the_demo_removes_its_files(server):
    workdir = server.workdir()
    assert workdir.is_dir()
    assert server.stop() == 0, server.output()
    assert not workdir.exists()

"""``python -m lmguide.app`` in a real browser (slow tier): the server started on a free port of
127.0.0.1, driven by Debian's headless Chromium through its chromedriver (``make browser`` installs
both), and always stopped.

``LMGUIDE_APP_CKPT=<best.ckpt>`` serves that checkpoint instead of the session's tiny one, and
``LMGUIDE_APP_SHOTS=<folder>`` writes ``app.png`` (the page after a demo face) and ``app_times.json``
(upload-to-result seconds for an image and a 10-s video) there: the README's screenshot and figures.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, timeout: float, what: str, interval: float = 0.25):
    """``check()``'s first truthy value within ``timeout`` seconds, else fail naming ``what``."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def ten_second_video(src: Path, dst: Path) -> Path:
    """The first 10 s of a demo video (640x360), re-encoded with OpenCV."""
    import cv2

    cap = cv2.VideoCapture(str(src))
    fps = cap.get(cv2.CAP_PROP_FPS)
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    out = cv2.VideoWriter(str(dst), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for _ in range(round(10 * fps)):
        ok, frame = cap.read()
        if not ok:
            break
        out.write(frame)
    cap.release()
    out.release()
    return dst


def blank_video(dst: Path, frames: int = 20) -> Path:
    """A 2-s grey gradient video: nothing a face detector can mistake for a face."""
    import cv2
    import numpy as np

    out = cv2.VideoWriter(str(dst), cv2.VideoWriter_fourcc(*"mp4v"), 10, (320, 240))
    ramp = np.tile(np.linspace(40, 200, 320, dtype=np.uint8), (240, 1))
    for _ in range(frames):
        out.write(cv2.merge([ramp, ramp, ramp]))
    out.release()
    return dst


@pytest.fixture(scope="module")
def server(trained_ckpt, media, cache_dir, tmp_path_factory):
    """The app on a free port, one for the module (its start-up, a fresh interpreter, is the slow part):
    yields its URL, the process and its folder; terminated (then killed) at the end, whatever the tests
    did. The last test stops it to see the uploads go."""
    tmp_path = tmp_path_factory.mktemp("app")
    ckpt = os.environ.get("LMGUIDE_APP_CKPT") or trained_ckpt
    port = free_port()
    env = {**os.environ, "LMGUIDE_CACHE_DIR": str(cache_dir), "PYTHONPATH": str(REPO)}
    cmd = [
        sys.executable,
        "-m",
        "lmguide.app",
        f"ckpt_path={ckpt}",
        f"port={port}",
        f"hydra.run.dir={tmp_path}",
    ]
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"

    def up():
        if proc.poll() is not None:
            pytest.fail(
                f"the app exited with {proc.returncode}:\n{(tmp_path / 'server.log').read_text()[-3000:]}"
            )
        try:
            return urllib.request.urlopen(url, timeout=2).status == 200
        except OSError:
            return False

    try:
        wait_until(up, 180, f"the app to serve {url}", interval=0.5)
        yield url, proc, tmp_path
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        log.close()


@pytest.fixture
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.fail(
            "chromium and chromedriver are needed: run `make browser` (Debian: chromium chromium-driver)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1300,1500"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def upload(driver, path: Path, expect: str, timeout: float = 300) -> tuple[float, str]:
    """Upload ``path`` through the page's file input; seconds until #result says ``expect``, and its text."""
    from selenium.webdriver.common.by import By

    before = driver.find_element(By.ID, "result").text
    field = driver.find_element(By.CSS_SELECTOR, "#upload input[type=file]")
    t0 = time.perf_counter()
    field.send_keys(str(path))

    def done():
        text = driver.find_element(By.ID, "result").text
        return text if expect in text and text != before and path.name in text else None

    text = wait_until(done, timeout, f"the result of {path.name} ({expect!r})")
    elapsed = time.perf_counter() - t0
    clear = driver.find_elements(By.CSS_SELECTOR, "#upload button[aria-label='Clear']")
    if clear:
        clear[0].click()
        wait_until(
            lambda: driver.find_elements(By.CSS_SELECTOR, "#upload input[type=file]"), 30, "the upload box"
        )
    return elapsed, text


def loaded_images(driver, selector: str) -> list[tuple[str, int]]:
    from selenium.webdriver.common.by import By

    imgs = driver.find_elements(By.CSS_SELECTOR, f"{selector} img")
    return [
        (i.get_attribute("alt") or "", driver.execute_script("return arguments[0].naturalWidth", i))
        for i in imgs
    ]


def test_page_scores_a_demo_face_shows_its_overlays_and_survives_bad_input(server, browser, media, tmp_path):
    from selenium.webdriver.common.by import By

    url, proc, _ = server
    browser.get(url)
    wait_until(
        lambda: browser.find_elements(By.CSS_SELECTOR, "#upload input[type=file]"), 60, "the upload box"
    )
    times = {}

    times["image_s"], text = upload(browser, media["single_face.jpg"], "P(fake) =")
    m = re.search(r"single_face\.jpg: P\(fake\) = (0\.\d{4}|1\.0000) → (real|fake)", text)
    assert m, text
    assert re.search(r"Threshold 0\.\d{3}: calibrated on the validation split", text), text
    tiles = wait_until(
        lambda: [t for t in loaded_images(browser, "#faces") if t[1] > 0], 30, "the face tiles"
    )
    captions = [alt for alt, _ in tiles]
    assert "face 0: crop" in captions and "face 0: mean attention, landmark mask outlined" in captions, (
        captions
    )
    assert "face 0: Grad-CAM (fake)" in captions and any(": head 0" in c for c in captions), captions
    # the overlays arrived as 256-px PNGs, the heat maps with their colour bars to the right
    widths = dict(tiles)
    assert widths["face 0: crop"] == 256 and widths["face 0: Grad-CAM (fake)"] > 256, widths
    shots = os.environ.get("LMGUIDE_APP_SHOTS")
    if shots:
        Path(shots).mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(Path(shots) / "app.png"))

    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 this is not a jpeg" * 50)
    _, text = upload(browser, broken, "Cannot analyse this file")
    assert "broken.jpg could not be read as an image" in text
    assert proc.poll() is None  # the server keeps running

    browser.find_element(By.CSS_SELECTOR, "#demo input").click()  # a demo face from the drop-down
    option = wait_until(
        lambda: [
            o for o in browser.find_elements(By.CSS_SELECTOR, "[role=option]") if o.text == "0-f1-su-ph.jpg"
        ],
        30,
        "the demo list",
    )
    option[0].click()
    wait_until(
        lambda: "0-f1-su-ph.jpg: P(fake) =" in browser.find_element(By.ID, "result").text,
        300,
        "the demo's score",
    )

    blank = blank_video(tmp_path / "blank.mp4")  # a video with no face
    _, text = upload(browser, blank, "Cannot analyse this file")
    assert "no face found in blank.mp4" in text
    assert proc.poll() is None

    video = ten_second_video(media["WolfgangLanger_Pexels.mp4"], tmp_path / "ten_seconds.mp4")
    times["video_10s_s"], text = upload(browser, video, "P(fake) =")
    assert (
        "sampled frames with a face; at or above the threshold:" in text and "Verdict rule: 2 sampled" in text
    ), text
    plot = wait_until(lambda: [t for t in loaded_images(browser, "#plot") if t[1] > 0], 30, "the frame plot")
    assert plot

    hosts = set()
    for entry in browser.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg["method"] == "Network.requestWillBeSent":
            req = msg["params"]["request"]["url"]
            if req.startswith(("http://", "https://", "ws://", "wss://")):
                hosts.add(req.split("/")[2])
    assert hosts == {url.split("/")[2]}, hosts  # the page fetched nothing from anywhere else

    print(f"\nupload to result: image {times['image_s']:.2f} s, 10-s video {times['video_10s_s']:.2f} s")
    if shots:
        (Path(shots) / "app_times.json").write_text(json.dumps(times, indent=2) + "\n")


def test_api_scores_several_files_with_gradio_client_and_uploads_go_at_exit(server, media):
    """The README's gradio_client example: several files in one call, a JSON record each (bad input:
    its error); the uploads live in the page's own folder, removed when the server is stopped."""
    from gradio_client import Client, handle_file

    url, proc, app_dir = server
    client = Client(url, verbose=False)
    files = [media["single_face.jpg"], media["multi_face.jpg"], media["free-mountain-vector-01.jpg"]]
    records = client.predict([handle_file(str(f)) for f in files], api_name="/verdicts")
    assert [r["file"] for r in records] == [f.name for f in files]
    for r in records[:2]:
        assert r["verdict"] in ("fake", "real") and r["rule"] == "any face >= threshold"
        assert r["verdict"] == ("fake" if r["prob_fake"] >= r["threshold"] else "real")
        assert r["prob_fake"] == max(f["prob_fake"] for f in r["faces"])
    assert len(records[1]["faces"]) > 1 and "no face found" in records[2]["error"]
    log = (app_dir / "server.log").read_text()
    uploads = Path(re.search(r"uploads kept in (\S+) until the page exits", log).group(1))
    assert uploads.is_dir() and any(p.is_file() for p in uploads.rglob("*"))
    proc.terminate()
    proc.wait(timeout=30)
    assert not uploads.exists()

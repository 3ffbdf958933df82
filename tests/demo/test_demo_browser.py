"""The web demo in a real browser: headless Chromium drives the page served on 127.0.0.1.

Needs Debian's ``chromium`` and ``chromium-driver`` (``apt-get install -y chromium
chromium-driver``; CI's ``.ci/run`` installs them) and the ``dev`` extra (gradio, selenium);
skips with the reason where they are missing.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
from pathlib import Path
from typing import Iterator

import pytest
from PIL import Image, ImageDraw

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROME_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,1100",
)
WAIT_S = 240  # an upper bound for a loaded machine, never reached when things work

pytest.importorskip("gradio", reason="the web demo needs gradio (pip install -e '.[dev]')")
webdriver = pytest.importorskip(
    "selenium.webdriver", reason="the browser test needs selenium (pip install -e '.[dev]')"
)
if not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()):
    pytest.skip(
        f"no browser: {CHROMIUM} and {CHROMEDRIVER} are needed "
        "(Debian: apt-get install -y chromium chromium-driver)",
        allow_module_level=True,
    )

from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from tests.demo.test_demo import demo_checkpoint  # noqa: E402, F401 (the served model)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(app) -> Iterator[str]:
    """A built demo app on a free port of 127.0.0.1: yields its URL, closes it after."""
    port = _free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        app.close()


@pytest.fixture(scope="module")
def served_demo(demo_checkpoint):  # noqa: F811 (the fixture imported above)
    """The demo of the barely trained tiny model on 127.0.0.1 (threshold 0: detections exist)."""
    from ovdet.demo import DemoModel, build_app

    app = build_app(DemoModel.from_checkpoint(demo_checkpoint), "blue circle", score_thresh=0.0)
    with serve(app) as url:
        yield url


@pytest.fixture
def browser(tmp_path):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROME_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)


def _status(driver) -> str:
    return driver.find_element(By.CSS_SELECTOR, "#status textarea").get_attribute("value") or ""


def _upload(driver, path: Path) -> None:
    """Replace the page's uploads by ``path`` and wait until the page lists it."""
    for clear in driver.find_elements(By.CSS_SELECTOR, "#images button[aria-label='Clear']"):
        clear.click()
    driver.find_element(By.CSS_SELECTOR, "#images input[type=file]").send_keys(str(path))
    WebDriverWait(driver, WAIT_S).until(
        lambda d: path.stem in d.find_element(By.CSS_SELECTOR, "#images").text
    )  # the page lists the stem and the extension on two lines


def _detect(driver, previous_status: str) -> str:
    driver.find_element(By.CSS_SELECTOR, "#detect").click()
    WebDriverWait(driver, WAIT_S).until(lambda d: _status(d) not in ("", previous_status))
    return _status(driver)


def test_demo_in_a_browser(served_demo, browser, tmp_path):
    photo = tmp_path / "red_square_photo.png"
    img = Image.new("RGB", (64, 64), (128, 128, 128))
    ImageDraw.Draw(img).rectangle((16, 20, 40, 44), fill=(220, 30, 30))
    img.save(photo)
    notes = tmp_path / "notes.png"
    notes.write_text("this is not a picture")

    browser.get(served_demo)
    WebDriverWait(browser, WAIT_S).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#images input[type=file]")
    )
    assert "CLIP rescoring" in browser.find_element(By.CSS_SELECTOR, "#clip-rescoring").text
    _upload(browser, photo)
    classes = browser.find_element(By.CSS_SELECTOR, "#classes textarea")
    classes.clear()
    classes.send_keys("red square")
    status = _detect(browser, "")
    assert status.endswith("detection(s) in 1 image(s)"), status
    assert not status.startswith("0 "), status

    drawn = WebDriverWait(browser, WAIT_S).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#drawn img")
    )
    assert drawn[0].get_attribute("src")
    loaded = "return arguments[0].complete && arguments[0].naturalWidth > 0"
    WebDriverWait(browser, WAIT_S).until(lambda d: d.execute_script(loaded, drawn[0]))
    table = browser.find_element(By.CSS_SELECTOR, "#table").text
    assert "red square" in table and "base" in table and "blue circle" not in table
    assert browser.find_elements(By.CSS_SELECTOR, "#results-json a")  # the JSON to download
    browser.save_screenshot(str(tmp_path / "demo.png"))
    assert (tmp_path / "demo.png").stat().st_size > 10_000

    # A file that is not an image: the command line's one-line message, in the page.
    _upload(browser, notes)
    status = _detect(browser, status)
    assert status.startswith("error: ") and "image notes.png" in status, status
    assert len(status.splitlines()) == 1
    browser.save_screenshot(str(tmp_path / "demo_bad_upload.png"))

    # The app keeps serving: the good picture again.
    _upload(browser, photo)
    assert _detect(browser, status).endswith("detection(s) in 1 image(s)")


def _video_status(driver) -> str:
    return driver.find_element(By.CSS_SELECTOR, "#video-status textarea").get_attribute("value")


def _detect_video(driver, path: Path, previous_status: str) -> str:
    """Upload ``path`` in the video tab, run, and wait for the new status."""
    for clear in driver.find_elements(By.CSS_SELECTOR, "#video button[aria-label='Clear']"):
        clear.click()
    driver.find_element(By.CSS_SELECTOR, "#video input[type=file]").send_keys(str(path))
    WebDriverWait(driver, WAIT_S).until(
        lambda d: (
            d.find_elements(By.CSS_SELECTOR, "#video video")
            or path.stem in d.find_element(By.CSS_SELECTOR, "#video").text
        )
    )
    driver.find_element(By.CSS_SELECTOR, "#detect-video").click()
    WebDriverWait(driver, WAIT_S).until(lambda d: _video_status(d) not in ("", previous_status))
    return _video_status(driver)


def test_video_tab_in_a_browser(served_demo, browser, tmp_path):
    av = pytest.importorskip("av", reason="PyAV (av) is not installed")
    from tests.cli.test_video import make_clip

    clip = tmp_path / "toy_clip.mp4"
    make_clip(clip, "libx264" if "libx264" in av.codecs_available else "mpeg4")
    notes = tmp_path / "notes.mp4"
    notes.write_text("not a video at all\n")

    browser.get(served_demo)
    tab = WebDriverWait(browser, WAIT_S).until(
        lambda d: d.find_elements(By.XPATH, "//button[@role='tab' and normalize-space()='Video']")
    )
    tab[0].click()
    classes = WebDriverWait(browser, WAIT_S).until(
        lambda d: d.find_element(By.CSS_SELECTOR, "#video-classes textarea")
    )
    classes.clear()
    classes.send_keys("red square")
    status = _detect_video(browser, clip, "")
    assert status.endswith("in 2 frame(s) of toy_clip.mp4 (sampled at 1 fps)"), status
    assert not status.startswith("0 "), status
    drawn = WebDriverWait(browser, WAIT_S).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#drawn-video video")
    )
    assert "toy_clip_det.mp4" in (drawn[0].get_attribute("src") or "")
    playable = "return arguments[0].readyState >= 1 && arguments[0].duration > 0"
    WebDriverWait(browser, WAIT_S).until(lambda d: d.execute_script(playable, drawn[0]))
    table = browser.find_element(By.CSS_SELECTOR, "#video-table").text
    assert "red square" in table and "base" in table
    assert browser.find_elements(By.CSS_SELECTOR, "#video-results-json a")
    browser.save_screenshot(str(tmp_path / "demo_video.png"))
    assert (tmp_path / "demo_video.png").stat().st_size > 10_000

    # Not a video: the command line's one-line message, in the page; then the tab still works.
    status = _detect_video(browser, notes, status)
    assert status.startswith("error: video notes.mp4 cannot be read"), status
    assert len(status.splitlines()) == 1
    assert _detect_video(browser, clip, status).endswith("(sampled at 1 fps)")


def _exemplar_status(driver) -> str:
    return driver.find_element(By.CSS_SELECTOR, "#exemplar-status textarea").get_attribute("value")


def test_exemplar_class_in_a_browser(served_demo, browser, tmp_path):
    """A box on an example image becomes a class; a detection of it is marked as such."""
    example = tmp_path / "example.png"
    img = Image.new("RGB", (64, 64), (128, 128, 128))
    ImageDraw.Draw(img).rectangle((16, 20, 40, 44), fill=(220, 30, 30))
    img.save(example)
    photo = tmp_path / "photo.png"
    img.save(photo)

    browser.get(served_demo)
    WebDriverWait(browser, WAIT_S).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#images input[type=file]")
    )
    WebDriverWait(browser, WAIT_S).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#exemplar-image input[type=file]")
    )
    browser.find_element(By.CSS_SELECTOR, "#exemplar-image input[type=file]").send_keys(
        str(example)
    )
    WebDriverWait(browser, WAIT_S).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#exemplar-image canvas, #exemplar-image img")
    )
    browser.find_element(
        By.CSS_SELECTOR, "#exemplar-name textarea, #exemplar-name input"
    ).send_keys("my thing")
    box = browser.find_element(By.CSS_SELECTOR, "#exemplar-box textarea, #exemplar-box input")
    box.send_keys("70,0,10,10")  # outside the 64 x 64 image: one line, nothing added
    # The editor can show its canvas before the upload is its value; a click before then is
    # answered "upload an image ...", so click (this box adds nothing) until the image is there.
    add = browser.find_element(By.CSS_SELECTOR, "#add-exemplar")

    def answered_with_the_image(driver) -> bool:
        status = _exemplar_status(driver)
        if status.startswith("error: ") and "upload an image" not in status:
            return True
        add.click()
        return False

    WebDriverWait(browser, WAIT_S, poll_frequency=1).until(answered_with_the_image)
    assert "is not inside its 64x64 image" in _exemplar_status(browser)
    box.clear()
    box.send_keys("16,20,25,25")
    browser.find_element(By.CSS_SELECTOR, "#add-exemplar").click()
    WebDriverWait(browser, WAIT_S).until(lambda d: "my thing: 1 box" in _exemplar_status(d))

    _upload(browser, photo)
    classes = browser.find_element(By.CSS_SELECTOR, "#classes textarea")
    classes.clear()
    classes.send_keys("blue circle")
    status = _detect(browser, "")
    assert status.endswith("detection(s) in 1 image(s)"), status
    table = browser.find_element(By.CSS_SELECTOR, "#table").text
    assert "my thing" in table and "exemplar" in table, table
    browser.save_screenshot(str(tmp_path / "demo_exemplar.png"))


@pytest.fixture(scope="module")
def served_mask_demo(tiny_clip, tmp_path_factory):
    """The demo of a tiny mask model whose masks fill their boxes (threshold 0)."""
    from ovdet.demo import DemoModel, build_app
    from tests.demo.test_demo import write_mask_checkpoint

    checkpoint = write_mask_checkpoint(tiny_clip, tmp_path_factory.mktemp("mask_model"))
    app = build_app(DemoModel.from_checkpoint(checkpoint), "red square", score_thresh=0.0)
    with serve(app) as url:
        yield url


def test_masks_painted_in_a_browser(served_mask_demo, browser, tmp_path):
    """The page's picture of a mask model's detections has their masks painted: it differs from
    the same boxes drawn without masks on the masks' pixels, elsewhere only by the noise of its
    lossy WebP copy (measured: 38 levels on the masks on average, 2.5 elsewhere)."""
    import json
    import urllib.request

    from tests.demo.test_demo import mask_difference, red_square_image

    photo = red_square_image(tmp_path / "red_square_photo.png")
    browser.get(served_mask_demo)
    WebDriverWait(browser, WAIT_S).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#images input[type=file]")
    )
    _upload(browser, photo)
    status = _detect(browser, "")
    assert status.endswith("detection(s) in 1 image(s)") and not status.startswith("0 "), status
    drawn = WebDriverWait(browser, WAIT_S).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#drawn img")
    )
    loaded = "return arguments[0].complete && arguments[0].naturalWidth > 0"
    WebDriverWait(browser, WAIT_S).until(lambda d: d.execute_script(loaded, drawn[0]))
    link = browser.find_element(By.CSS_SELECTOR, "#results-json a").get_attribute("href")
    with urllib.request.urlopen(link) as response:  # the page's results.json
        results = json.loads(response.read())
    detections = results["detections"]
    assert detections and all("segmentation" in d for d in detections)
    with urllib.request.urlopen(drawn[0].get_attribute("src")) as response:  # what the page shows
        (tmp_path / "drawn").write_bytes(response.read())
    difference, union = mask_difference(Image.open(tmp_path / "drawn"), photo, detections)
    inside, outside = difference[union].mean(), difference[~union].mean()
    assert union.any() and inside > 15 and outside < 5, (inside, outside)

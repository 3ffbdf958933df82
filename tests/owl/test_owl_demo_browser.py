"""The web demo serving an OWLv2 (``ovdet-demo --detector hf:...``) in headless Chromium."""

from __future__ import annotations

import pytest
from PIL import Image

from tests.demo.test_demo_browser import (  # skips where the browser is missing
    WAIT_S,
    _detect,
    _upload,
    browser,  # noqa: F401 (the fixture)
    serve,
)

skimage_data = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def served_owl_demo(owlv2_dir):
    from ovdet.demo import DemoModel, build_app

    model = DemoModel.from_hf_detector(f"hf:{owlv2_dir}")
    app = build_app(model, "person", score_thresh=0.0)
    with serve(app) as url:
        yield url


def test_owl_demo_in_a_browser(served_owl_demo, browser, tmp_path):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    photo = tmp_path / "astronaut.png"
    Image.fromarray(skimage_data.astronaut()).save(photo)
    browser.get(served_owl_demo)
    WebDriverWait(browser, WAIT_S).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#images input[type=file]")
    )
    _upload(browser, photo)
    status = _detect(browser, "")
    # threshold 0: each of the tiny model's 16 patches is a detection
    assert status == "16 detection(s) in 1 image(s)", status
    table = browser.find_element(By.CSS_SELECTOR, "#table").text
    assert "person" in table

"""An image above the load limit (``INPUT.MAX_LOAD_PIXELS``) is downscaled on load, yet its boxes
and recorded size are in its own pixels: a scene and its copy upscaled 4x give the same boxes,
times 4, in ``OVDetector.predict``, ``ovdet-infer``'s ``results.json`` and ``--coco-out``
(docs/RELIABILITY.md). The load limit is set low, so the images stay small.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from ovdet import OVDetector
from ovdet.cli import infer as infer_cli
from ovdet.data.image_io import as_loaded_image, load_image
from ovdet.structures import LoadedImage
from tests.cli.conftest import LOAD_LIMIT

SMALL = (100, 80)  # width, height of the scene
FACTOR = 4  # the big copy: 400 x 320, above the load limit, loads as 100 x 80
assert SMALL[0] * SMALL[1] == LOAD_LIMIT
CLASSES = "red square,blue circle"
TOP = 10  # the best boxes compared


def draw_scene(size: tuple[int, int] = SMALL) -> Image.Image:
    """A background ramp with two shapes."""
    width, height = size
    ramp = np.linspace(90, 170, width, dtype=np.float32)[None, :, None]
    pixels = np.broadcast_to(ramp, (height, width, 3)).astype(np.uint8)
    image = Image.fromarray(np.ascontiguousarray(pixels))
    draw = ImageDraw.Draw(image)
    draw.rectangle((10, 12, 42, 50), fill=(220, 30, 30))
    draw.ellipse((55, 20, 90, 68), fill=(30, 60, 220))
    return image


def write_scene(folder: Path) -> tuple[Path, Path]:
    """(small scene, its 4x copy) as files in ``folder``. The small one is saved losslessly from
    the big one's pixels as loaded, so the detector sees the same pixels in both: their boxes
    differ by the frame they are reported in, nothing else."""
    big = draw_scene().resize((SMALL[0] * FACTOR, SMALL[1] * FACTOR), Image.Resampling.NEAREST)
    big.save(folder / "b_big.jpg", quality=95)
    Image.fromarray(load_image(folder / "b_big.jpg", LOAD_LIMIT).array).save(folder / "a_small.png")
    return folder / "a_small.png", folder / "b_big.jpg"


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> tuple[Path, Path]:
    return write_scene(tmp_path_factory.mktemp("scene"))


@pytest.fixture(scope="module")
def detector(untrained_checkpoint) -> OVDetector:
    return OVDetector.from_checkpoint(untrained_checkpoint)


def test_load_image_keeps_the_original_size(scene, tmp_path):
    small, big = scene
    loaded = load_image(big, LOAD_LIMIT)
    assert loaded.array.shape == (SMALL[1], SMALL[0], 3)  # downscaled on load
    assert (loaded.width, loaded.height) == (SMALL[0] * FACTOR, SMALL[1] * FACTOR)
    np.testing.assert_allclose(loaded.scale, [1 / FACTOR] * 4)
    assert load_image(small, LOAD_LIMIT).scale.tolist() == [1.0] * 4
    # EXIF rotation by 90 degrees: the upright size, width and height swapped
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.open(big).save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    rotated = load_image(tmp_path / "rotated.jpg", LOAD_LIMIT)
    assert (rotated.width, rotated.height) == (SMALL[1] * FACTOR, SMALL[0] * FACTOR)
    assert rotated.array.shape == (SMALL[0], SMALL[1], 3)
    # arrays and PIL images are their own originals; a loaded image is kept
    array = np.zeros((7, 9, 3), np.uint8)
    assert as_loaded_image(array) == LoadedImage(array, 9, 7)
    assert as_loaded_image(loaded) is loaded


def _top_boxes(det) -> np.ndarray:
    assert len(det) >= TOP
    return det.boxes[:TOP]


def test_predict_gives_boxes_in_the_original_pixels(detector, scene):
    small, big = scene
    [on_small] = detector.predict(str(small), classes=CLASSES, score_thresh=0.0)
    [on_big] = detector.predict(str(big), score_thresh=0.0)
    np.testing.assert_allclose(_top_boxes(on_big), FACTOR * _top_boxes(on_small), rtol=1e-4)
    np.testing.assert_allclose(on_big.scores, on_small.scores, rtol=1e-5)
    assert on_big.boxes[:, 2].max() > SMALL[0] + 1  # not in the downscaled frame
    # a LoadedImage given directly: the same boxes as its path
    [loaded] = detector.predict(load_image(big, LOAD_LIMIT), score_thresh=0.0)
    np.testing.assert_allclose(loaded.boxes, on_big.boxes, rtol=0, atol=1e-4)


def test_infer_records_boxes_and_sizes_in_the_original_pixels(
    untrained_checkpoint, scene, tmp_path
):
    folder = scene[0].parent
    out, coco_out = tmp_path / "out", tmp_path / "auto.json"
    assert infer_cli.main([
        "--checkpoint", str(untrained_checkpoint), "--classes", CLASSES, "--input", str(folder),
        "--output", str(out), "--score-thresh", "0", "--coco-out", str(coco_out),
        "--label-thresh", "0", "--no-progress",
    ]) == 0  # fmt: skip
    results = json.loads((out / "results.json").read_text())
    sizes = {Path(i["file_name"]).name: (i["width"], i["height"]) for i in results["images"]}
    assert sizes == {"a_small.png": SMALL, "b_big.jpg": (SMALL[0] * FACTOR, SMALL[1] * FACTOR)}

    def top_boxes(records: list[dict], image_id: int) -> np.ndarray:
        boxes = [r["bbox"] for r in records if r["image_id"] == image_id]  # best first
        assert len(boxes) >= TOP
        return np.array(boxes[:TOP])

    small_id, big_id = (i["id"] for i in sorted(results["images"], key=lambda i: i["file_name"]))
    detections = results["detections"]
    np.testing.assert_allclose(  # results.json rounds to 0.01 px
        top_boxes(detections, big_id), FACTOR * top_boxes(detections, small_id), atol=0.05
    )
    coco = json.loads(coco_out.read_text())
    assert {(i["width"], i["height"]) for i in coco["images"]} == set(sizes.values())
    np.testing.assert_allclose(
        top_boxes(coco["annotations"], 2), FACTOR * top_boxes(coco["annotations"], 1), atol=0.05
    )
    drawn = Image.open(out / "b_big_det.jpg")
    assert drawn.size == SMALL  # drawn on the loaded pixels

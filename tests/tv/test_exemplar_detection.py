"""Image exemplars find their class: boxes of a generated image, embedded by the trained
detector, make classes (given by no text) that the detector finds in other images."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from ovdet.evaluation import evaluate_coco
from ovdet.ovbench.predict import predict_with_method
from ovdet.structures.exemplars import Exemplar, ExemplarSpec


def _exemplar_image() -> tuple[np.ndarray, dict[str, tuple[int, int, int, int]]]:
    """A generated image with one object of each base class, and their boxes (x, y, w, h)."""
    image = Image.new("RGB", (64, 64), (125, 125, 125))
    draw = ImageDraw.Draw(image)
    draw.rectangle((4, 4, 23, 23), fill=(220, 30, 30))
    draw.ellipse((36, 4, 55, 23), fill=(30, 60, 220))
    boxes = {"red square": (4, 4, 20, 20), "blue circle": (36, 4, 20, 20)}
    return np.asarray(image).copy(), boxes


def _ap50(checkpoint, toy_dataset, exemplar_of: dict[str, str]) -> dict[str, float]:
    """Per category, box AP50 on the toy images with the categories of ``exemplar_of`` given by
    the exemplar box of the class it names (no text)."""
    array, boxes = _exemplar_image()
    specs = [ExemplarSpec(name, (Exemplar(array, boxes[of]),)) for name, of in exemplar_of.items()]
    gt = toy_dataset / "instances.json"
    results = predict_with_method(
        checkpoint, gt, toy_dataset / "images", score_thresh=0.001, progress=False,
        exemplars=specs, overrides=["MODEL.OVDET.EXEMPLARS.SOURCE", "region"],
    )  # fmt: skip
    metrics = evaluate_coco(str(gt), results, str(toy_dataset / "split.json"))
    return {name: metrics["per_category"][name]["AP50"] for name in exemplar_of}


def test_exemplar_boxes_alone_make_the_detector_find_their_classes(trained_checkpoint, toy_dataset):
    found = _ap50(
        trained_checkpoint, toy_dataset, {"red square": "red square", "blue circle": "blue circle"}
    )
    # the control: each class given by the other's box
    swapped = _ap50(
        trained_checkpoint, toy_dataset, {"red square": "blue circle", "blue circle": "red square"}
    )
    for name in found:
        assert found[name] >= 0.8, (found, swapped)
        assert swapped[name] < 0.5 * found[name], (found, swapped)

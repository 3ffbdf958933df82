"""Image exemplars find their class: boxes of a generated image, embedded by the trained
detector, make classes (given by no text) that the detector finds in other images."""

from __future__ import annotations

import numpy as np
import pytest
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
    the exemplar box of the class it names (no text), the others by their text."""
    array, boxes = _exemplar_image()
    specs = [ExemplarSpec(name, (Exemplar(array, boxes[of]),)) for name, of in exemplar_of.items()]
    gt = toy_dataset / "instances.json"
    results = predict_with_method(
        checkpoint, gt, toy_dataset / "images", score_thresh=0.001, progress=False,
        exemplars=specs, overrides=["MODEL.OVDET.EXEMPLARS.SOURCE", "region"],
    )  # fmt: skip
    metrics = evaluate_coco(str(gt), results, str(toy_dataset / "split.json"))
    return {name: values["AP50"] for name, values in metrics["per_category"].items()}


def test_exemplar_boxes_alone_make_the_detector_find_their_classes(trained_checkpoint, toy_dataset):
    found = _ap50(
        trained_checkpoint, toy_dataset, {"red square": "red square", "blue circle": "blue circle"}
    )
    # the control: each class given by the other's box
    swapped = _ap50(
        trained_checkpoint, toy_dataset, {"red square": "blue circle", "blue circle": "red square"}
    )
    for name in ("red square", "blue circle"):
        assert found[name] >= 0.8, (found, swapped)
        assert swapped[name] < 0.5 * found[name], (found, swapped)


def test_a_region_exemplar_class_beside_text_classes_leaves_them_their_objects(
    trained_checkpoint, toy_dataset
):
    """Raw region embeddings out-score every text row on every region (the regions' cone);
    calibrated, an exemplar class finds its objects and the text classes keep theirs."""
    text_only = _ap50(trained_checkpoint, toy_dataset, {})
    mixed = _ap50(trained_checkpoint, toy_dataset, {"blue circle": "blue circle"})
    assert mixed["blue circle"] >= 0.8, mixed
    assert text_only["red square"] >= 0.8, text_only  # a base class, found by its text
    assert mixed["red square"] >= 0.8 * text_only["red square"], (mixed, text_only)


@pytest.mark.parametrize("source", ["region", "clip"])
def test_clip_rescoring_scores_exemplar_classes_by_their_clip_crops(trained_checkpoint, source):
    """CLIP's crops cannot be scored against the detector's rows (region embeddings, or CLIP
    crop rows centred in its regions' cone): with rescoring on, an exemplar class is scored
    there by its CLIP crop embedding as it is."""
    import torch
    import torch.nn.functional as F

    from ovdet.api import OVDetector
    from ovdet.core.exemplar_rows import reference_boxes

    array, boxes = _exemplar_image()
    exemplars = {"blue circle": [Exemplar(array, boxes["blue circle"])]}
    detector = OVDetector.from_checkpoint(
        str(trained_checkpoint), overrides=["MODEL.OVDET.EXEMPLARS.SOURCE", source]
    )
    detector.set_classes("red square", exemplars=exemplars)
    head = detector.head
    assert head.rescoring_embeddings is head.text_embeddings  # rescoring off: nothing apart
    detector.enable_clip_rescoring(True)
    rows = detector.class_embeddings("red square", exemplars=exemplars)
    torch.testing.assert_close(head.text_embeddings.cpu(), rows)  # the detector's rows kept
    clip_rows = detector.exemplar_embedder.for_clip_rescoring().class_rows(
        [exemplars["blue circle"]], rows[:1]
    )
    rescoring = head.rescoring_embeddings.cpu()
    torch.testing.assert_close(rescoring[0], rows[0])  # the text class: its text
    torch.testing.assert_close(rescoring[1], clip_rows[0])
    if source == "region":
        assert float(rescoring[1] @ rows[1]) < 0.99
    else:  # the same crop, centred for the detector only: no part along the regions' mean
        regions = detector.exemplar_embedder.region_boxes(array, reference_boxes(64, 64))
        centre = F.normalize(F.normalize(regions.cpu(), dim=-1).mean(0), dim=0)
        assert abs(float(rows[1] @ centre)) < 1e-5 < abs(float(rescoring[1] @ centre)) - 0.01
    detector.set_classes("red square, blue circle")  # a text vocabulary: nothing apart again
    assert head.rescoring_embeddings is head.text_embeddings


def test_clip_rescoring_takes_over_the_name_of_a_name_and_region_class(trained_checkpoint):
    """A class by name and region exemplars: without rescoring the detector's row mixes both;
    turning CLIP rescoring on gives the detector the exemplars alone and CLIP the name (mixed
    with its crops); turning it off again brings the mixed row back."""
    import torch

    from ovdet.api import OVDetector

    array, boxes = _exemplar_image()
    exemplars = {"blue circle+": [Exemplar(array, boxes["blue circle"])]}
    detector = OVDetector.from_checkpoint(
        str(trained_checkpoint), overrides=["MODEL.OVDET.EXEMPLARS.SOURCE", "region"]
    )
    detector.set_classes("red square, blue circle", exemplars=exemplars)
    head = detector.head
    mixed = head.text_embeddings.cpu().clone()
    text = detector.text_embeddings("red square, blue circle")
    region = detector.exemplar_embedder.class_rows([exemplars["blue circle+"]], text)[0]
    torch.testing.assert_close(mixed[0], text[0])
    assert float(mixed[1] @ text[1]) > float(region @ text[1]) + 0.05  # the name mixed in
    detector.enable_clip_rescoring(True)
    torch.testing.assert_close(head.text_embeddings[1].cpu(), region)  # exemplars alone
    rescoring = head.rescoring_embeddings.cpu()
    torch.testing.assert_close(rescoring[0], text[0])
    clip = detector.exemplar_embedder.for_clip_rescoring().class_rows(
        [exemplars["blue circle+"]], text
    )[0]
    assert float(rescoring[1] @ text[1]) > float(clip @ text[1]) + 0.05  # the name is CLIP's
    torch.testing.assert_close(
        detector.class_embeddings("red square, blue circle", exemplars), mixed
    )
    detector.enable_clip_rescoring(False)
    torch.testing.assert_close(head.text_embeddings.cpu(), mixed)
    assert head.rescoring_embeddings is head.text_embeddings

"""Loading and validating COCO-format detection results.

A results file is a JSON list of ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``
dicts, the format pycocotools' ``loadRes`` and the COCO / LVIS evaluation servers read.
pycocotools checks almost none of it (a NaN score or an unknown category silently corrupts the
numbers, an empty list crashes), so :func:`load_results` checks every entry first and names the
first offending one in a :class:`~ovdet.utils.errors.ResultsError`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence, Union

from ovdet.data.segmentation import check_segmentation
from ovdet.evaluation.ground_truth import GroundTruth, load_ground_truth
from ovdet.utils.errors import ResultsError
from ovdet.utils.json_input import is_int, is_number, read_json_file

__all__ = ["IOU_TYPES", "REQUIRED_KEYS", "Results", "load_results"]

# What AP is computed on: boxes, or instance masks (a ``segmentation`` per detection).
IOU_TYPES = ("bbox", "segm")

REQUIRED_KEYS = ("image_id", "category_id", "bbox", "score")

# A results file path or the parsed list of detections.
Results = Union[str, Path, Sequence[dict]]


def _check_entry(det: Any, image_ids: set, cat_ids: set, sizes: dict | None = None) -> dict:
    """Return a clean copy of one detection, or raise ``ValueError`` saying what is wrong."""
    if not isinstance(det, dict):
        raise ValueError(f"expected an object, got {type(det).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in det]
    if missing:
        raise ValueError(f"missing key(s) {', '.join(missing)}")
    image_id, cat_id, bbox, score = (det[k] for k in REQUIRED_KEYS)
    if not is_int(image_id):
        raise ValueError(f"image_id must be an integer, got {image_id!r}")
    if not is_int(cat_id):
        raise ValueError(f"category_id must be an integer, got {cat_id!r}")
    if image_id not in image_ids:
        raise ValueError(f"unknown image_id {image_id} (not in the ground truth)")
    if cat_id not in cat_ids:
        raise ValueError(f"unknown category_id {cat_id} (not in the ground truth)")
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or not all(map(is_number, bbox)):
        raise ValueError(f"bbox must be 4 numbers [x, y, width, height], got {bbox!r}")
    if not all(math.isfinite(v) for v in bbox):
        raise ValueError(f"bbox has a non-finite number: {bbox!r}")
    if bbox[2] < 0 or bbox[3] < 0:
        raise ValueError(f"bbox has a negative width or height (COCO boxes are xywh): {bbox!r}")
    if not is_number(score):
        raise ValueError(f"score must be a number, got {score!r}")
    if not math.isfinite(score):
        raise ValueError(f"score is not finite: {score!r}")
    entry = {
        "image_id": int(image_id),
        "category_id": int(cat_id),
        "bbox": [float(v) for v in bbox],
        "score": float(score),
    }
    if sizes is not None:
        if "segmentation" not in det:
            raise ValueError("missing key segmentation (mask AP needs a mask per detection)")
        width, height = sizes[image_id]
        segmentation, problems = check_segmentation(det["segmentation"], width, height)
        if segmentation is None:
            raise ValueError(f"segmentation is not a usable mask of its image: {problems[0]}")
        entry["segmentation"] = segmentation
    return entry


def load_results(results: Results, coco_gt: GroundTruth, iou_type: str = "bbox") -> list[dict]:
    """Read and validate COCO-format detections against their ground truth.

    Args:
        results: a path to a JSON results file, or the list of detection dicts.
        coco_gt: the ground truth the detections refer to (anything
            :func:`~ovdet.evaluation.ground_truth.load_ground_truth` accepts). Its image and
            category ids are the valid ones.
        iou_type: ``"segm"`` also requires and checks each entry's ``segmentation`` (an RLE
            of its image's size, or polygons) and keeps it.

    Returns:
        New dicts with exactly ``image_id`` (int), ``category_id`` (int), ``bbox``
        (``[x, y, w, h]`` floats) and ``score`` (float), in input order; other keys are
        dropped. An empty list is valid.

    Raises:
        ResultsError: if the file is unreadable or not a JSON list, or an entry lacks a key, has
            an unknown image or category id, a bbox that is not 4 finite numbers with
            non-negative width and height, or a non-finite score. The message names the entry.
    """
    if isinstance(results, (str, Path)):
        source = f"results file {results}"
        data = read_json_file(results, "results file", ResultsError)
    else:
        source = "results"
        data = results
    if isinstance(data, (str, bytes, dict)) or not isinstance(data, Sequence):
        raise ResultsError(f"{source} must be a JSON list of detections, got {type(data).__name__}")
    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type must be one of {IOU_TYPES}, got {iou_type!r}")
    dataset = load_ground_truth(coco_gt)
    image_ids = {img["id"] for img in dataset["images"]}
    cat_ids = {cat["id"] for cat in dataset["categories"]}
    sizes = None
    if iou_type == "segm":
        sizes = {img["id"]: (int(img["width"]), int(img["height"])) for img in dataset["images"]}
    checked = []
    for i, det in enumerate(data):
        try:
            checked.append(_check_entry(det, image_ids, cat_ids, sizes))
        except ValueError as e:
            raise ResultsError(f"{source}: entry {i}: {e}") from None
    return checked

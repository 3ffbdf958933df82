"""Loading and checking COCO / LVIS ground-truth annotation files for evaluation.

The evaluators accept a path, an already-parsed dataset dict, or a ``pycocotools`` ``COCO`` /
``lvis`` ``LVIS`` object; :func:`load_ground_truth` turns any of them into a checked dataset dict
so that a malformed file fails with a :class:`~ovdet.utils.errors.DataError` naming the problem,
rather than with a ``KeyError`` deep inside pycocotools.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any, Union

from ovdet.data.splits import normalize_name
from ovdet.utils.errors import DataError
from ovdet.utils.json_input import is_int, is_number, read_json_file

__all__ = ["GroundTruth", "load_ground_truth", "is_lvis"]

# Anything the evaluators accept as ground truth: a path, a dataset dict, or an object with a
# ``dataset`` dict attribute (pycocotools' COCO, lvis' LVIS).
GroundTruth = Union[str, Path, dict, Any]


def _is_box(x: object) -> bool:
    return (
        isinstance(x, (list, tuple))
        and len(x) == 4
        and all(map(is_number, x))
        and all(math.isfinite(v) for v in x)
    )


def _check(dataset: Any, source: str) -> dict:
    if not isinstance(dataset, dict):
        raise DataError(f"{source}: expected a JSON object with images/annotations/categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(dataset.get(key), list):
            raise DataError(f"{source}: missing or non-list {key!r}")

    image_ids = set()
    for i, img in enumerate(dataset["images"]):
        if not isinstance(img, dict) or not is_int(img.get("id")):
            raise DataError(f"{source}: images[{i}] has no integer 'id'")
        image_ids.add(img["id"])

    cat_ids = set()
    for i, cat in enumerate(dataset["categories"]):
        if not isinstance(cat, dict) or not is_int(cat.get("id")):
            raise DataError(f"{source}: categories[{i}] has no integer 'id'")
        if not isinstance(cat.get("name"), str) or not cat["name"].strip():
            raise DataError(f"{source}: categories[{i}] has no 'name'")
        cat_ids.add(cat["id"])
    if len(cat_ids) != len(dataset["categories"]):
        raise DataError(f"{source}: duplicate category ids")
    names = Counter(normalize_name(c["name"]) for c in dataset["categories"])
    dups = sorted(n for n, count in names.items() if count > 1)
    if dups:
        raise DataError(f"{source}: duplicate category names {dups} (categories match by name)")

    for i, ann in enumerate(dataset["annotations"]):
        if not isinstance(ann, dict):
            raise DataError(f"{source}: annotations[{i}] is not an object")
        for key in ("id", "image_id", "category_id"):
            if not is_int(ann.get(key)):
                raise DataError(f"{source}: annotations[{i}] has no integer {key!r}")
        if not _is_box(ann.get("bbox")):
            raise DataError(f"{source}: annotations[{i}] has no 'bbox' of 4 finite numbers")
        if ann["image_id"] not in image_ids:
            raise DataError(f"{source}: annotations[{i}] has unknown image_id {ann['image_id']}")
        if ann["category_id"] not in cat_ids:
            raise DataError(
                f"{source}: annotations[{i}] has unknown category_id {ann['category_id']}"
            )
    return dataset


def load_ground_truth(gt: GroundTruth) -> dict:
    """Read and check a COCO-format ground-truth dataset.

    Args:
        gt: a path to a COCO/LVIS JSON file, a parsed dataset dict, or a ``COCO``/``LVIS``
            object (its ``dataset`` attribute is used).

    Returns:
        The dataset dict (not copied): ``images``, ``annotations`` and ``categories`` lists whose
        entries have integer ids, category names, and 4-number ``bbox`` es.

    Raises:
        DataError: if the file cannot be read or is not a valid COCO-format dataset.
    """
    if isinstance(gt, (str, Path)):
        return _check(read_json_file(gt, "annotation file"), f"annotation file {gt}")
    if isinstance(gt, dict):
        return _check(gt, "ground truth")
    dataset = getattr(gt, "dataset", None)
    if dataset is None:
        raise DataError(f"unsupported ground truth of type {type(gt).__name__}")
    return _check(dataset, f"ground truth {type(gt).__name__}")


def is_lvis(dataset: dict) -> bool:
    """Whether a dataset looks like LVIS: every category has an r/c/f ``frequency``."""
    cats = dataset.get("categories") or []
    return bool(cats) and all(c.get("frequency") in ("r", "c", "f") for c in cats)

"""Retrieval quality of a text query against COCO ground truth."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ovdet.search.store import Hit

__all__ = ["box_iou", "ground_truth_boxes", "precision_at_k"]


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two (x1, y1, x2, y2) boxes."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def ground_truth_boxes(coco: dict, image_root: str | Path, class_name: str) -> dict[str, list]:
    """Resolved image path -> the (x1, y1, x2, y2) boxes of ``class_name`` in a COCO dict."""
    ids = {c["id"] for c in coco["categories"] if c["name"] == class_name}
    if not ids:
        raise KeyError(f"class {class_name!r} is not in the ground truth")
    root = Path(image_root)
    files = {img["id"]: str((root / img["file_name"]).resolve()) for img in coco["images"]}
    boxes: dict[str, list] = {f: [] for f in files.values()}
    for a in coco["annotations"]:
        if a["category_id"] in ids:
            x, y, w, h = a["bbox"]
            boxes[files[a["image_id"]]].append((x, y, x + w, y + h))
    return boxes


def precision_at_k(
    hits: Sequence[Hit], truth: dict[str, list], k: int = 10, iou: float = 0.5
) -> float:
    """The fraction of the first ``k`` hits that overlap (IoU >= ``iou``) a ground-truth box
    of the class in their file (``truth``: see :func:`ground_truth_boxes`). Fewer than ``k``
    hits count the missing ones as wrong."""
    correct = 0
    for hit in list(hits)[:k]:
        gt = truth.get(str(Path(hit.file).resolve()), [])
        correct += any(box_iou(hit.box, g) >= iou for g in gt)
    return correct / k if k else float(np.nan)

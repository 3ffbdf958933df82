"""Instance masks as COCO run-length encodings (``results.json``, COCO results files).

Kept free of PyTorch, as :mod:`ovdet.structures.detections`.
"""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils

__all__ = ["mask_to_polygon", "mask_to_rle"]


def mask_to_rle(mask: np.ndarray) -> dict:
    """bool [H, W] -> ``{"size": [H, W], "counts": str}``, COCO's compressed RLE as JSON
    takes it (pycocotools' ``encode``, counts decoded to text)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def mask_to_polygon(mask: np.ndarray) -> np.ndarray:
    """bool [H, W] -> float32 [P, 2] (x, y) outline of its largest connected part (OpenCV's
    ``findContours``, pixel-corner coordinates); [0, 2] for an empty mask."""
    import cv2

    contours, _ = cv2.findContours(
        mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
    )
    if not contours:
        return np.zeros((0, 2), np.float32)
    largest = max(contours, key=cv2.contourArea).reshape(-1, 2).astype(np.float32)
    return largest

"""Instance masks as COCO run-length encodings (``results.json``, COCO results files).

Kept free of PyTorch, as :mod:`ovdet.structures.detections`.
"""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils

__all__ = ["mask_to_rle"]


def mask_to_rle(mask: np.ndarray) -> dict:
    """bool [H, W] -> ``{"size": [H, W], "counts": str}``, COCO's compressed RLE as JSON
    takes it (pycocotools' ``encode``, counts decoded to text)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}

"""Instance masks: pasting a detection's box-relative mask into an image, and writing masks
as COCO run-length encodings (``results.json``, COCO results) or polygons (YOLO labels).

Kept free of PyTorch, as :mod:`ovdet.structures.detections`.
"""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils

__all__ = ["mask_to_polygon", "mask_to_rle", "paste_masks", "resize_masks"]


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


def _bilinear_weights(centres: np.ndarray, size: int) -> np.ndarray:
    """float32 [P, size]: the weights with which bilinear sampling at ``centres`` (in cell
    units, cell ``i`` centred at ``i``) reads each of ``size`` cells; beyond the first and last
    cells the mask is 0 (zero padding)."""
    low = np.floor(centres)
    frac = (centres - low).astype(np.float32)
    weights = np.zeros((len(centres), size + 2), np.float32)  # one zero cell each side
    rows = np.arange(len(centres))
    first = np.clip(low, -1, size).astype(np.int64) + 1
    second = np.clip(low + 1, -1, size).astype(np.int64) + 1
    np.add.at(weights, (rows, first), 1.0 - frac)
    np.add.at(weights, (rows, second), frac)
    return weights[:, 1:-1]


def paste_masks(
    probs: np.ndarray, boxes: np.ndarray, image_size: tuple[int, int], threshold: float = 0.5
) -> np.ndarray:
    """Box-relative mask probabilities -> full-image binary masks.

    Each image pixel near a box samples its box's mask bilinearly at the pixel's centre, the
    mask's M x M cells spanning the box exactly and nothing beyond them (detectron2's pasting).
    The probabilities are relative to their box, so pasting them at the boxes of any scale (the
    resized input's or the original image's) gives the masks at that scale.

    Args:
        probs: float [K, M, M].
        boxes: float [K, 4] (x1, y1, x2, y2) in the pixels of the target image.
        image_size: (H, W) of the target image.
        threshold: probability at or above which a pixel is in the mask.

    Returns:
        bool [K, H, W].
    """
    height, width = int(image_size[0]), int(image_size[1])
    probs = np.asarray(probs, np.float32)
    out = np.zeros((len(probs), height, width), dtype=bool)
    for k, (x1, y1, x2, y2) in enumerate(np.asarray(boxes, np.float64).tolist()):
        left, top = max(int(np.floor(x1)) - 1, 0), max(int(np.floor(y1)) - 1, 0)
        right, bottom = min(int(np.ceil(x2)) + 1, width), min(int(np.ceil(y2)) + 1, height)
        if right <= left or bottom <= top:
            continue
        side_y, side_x = probs[k].shape
        # Pixel centres in mask cells (cell i centred at i).
        xs = (np.arange(left, right) + 0.5 - x1) / max(x2 - x1, 1e-6) * side_x - 0.5
        ys = (np.arange(top, bottom) + 0.5 - y1) / max(y2 - y1, 1e-6) * side_y - 0.5
        sampled = _bilinear_weights(ys, side_y) @ probs[k] @ _bilinear_weights(xs, side_x).T
        out[k, top:bottom, left:right] = sampled >= threshold
    return out


def resize_masks(masks: np.ndarray | None, size: tuple[int, int]) -> np.ndarray | None:
    """bool [K, H, W] masks at another image size (H', W') by nearest neighbour (to draw them
    on a downscaled view); ``None`` stays ``None``."""
    if masks is None or masks.shape[1:] == tuple(size):
        return masks
    rows = (np.arange(size[0]) * masks.shape[1] // size[0])[:, None]
    cols = (np.arange(size[1]) * masks.shape[2] // size[1])[None, :]
    return masks[:, rows, cols]

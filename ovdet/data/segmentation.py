"""COCO instance segmentations: validation at load time and decoding to masks.

An annotation's ``segmentation`` is a list of polygons (``[x1, y1, x2, y2, ...]`` in pixels) or
a run-length encoding (``{"size": [h, w], "counts": ...}``, ``counts`` a list of run lengths or
COCO's compressed string). pycocotools decodes them; this module checks them first, because
pycocotools trusts its input (a corrupt RLE makes it write outside the mask).
"""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils

from ovdet.utils.json_input import is_int, is_number

__all__ = [
    "BAD_RLE",
    "NO_MASK",
    "OTHER_SIZE",
    "SHORT_POLYGON",
    "check_segmentation",
    "decode_masks",
    "rle_run_lengths",
]

# The kinds of problems :func:`check_segmentation` reports (counted by the loader).
SHORT_POLYGON = "polygons with fewer than 3 points dropped"
NO_MASK = "annotations without a usable mask dropped"
OTHER_SIZE = "masks of another size than their image dropped"
BAD_RLE = "RLE masks that do not decode dropped"


def rle_run_lengths(counts: str) -> list[int] | None:
    """The run lengths of COCO's compressed RLE string, or ``None`` if it is not one.

    The format (pycocotools' ``rleToString``): each run length is written in groups of 5 bits,
    least significant first, as characters ``chr(48 + group)``, bit 0x20 meaning "more groups
    follow"; the last group's bit 0x10 is the sign; from the fourth run on, the difference to the
    run two before is written.
    """
    runs: list[int] = []
    value, shift = 0, 0
    for char in counts:
        code = ord(char) - 48
        if not 0 <= code < 64:
            return None
        value |= (code & 0x1F) << (5 * shift)
        shift += 1
        if code & 0x20:
            continue
        if code & 0x10:  # sign of the last group
            value -= 1 << (5 * shift)
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
        value, shift = 0, 0
    return None if shift else runs


def check_segmentation(segmentation, width: int, height: int) -> tuple[object | None, list[str]]:
    """A usable segmentation of a ``width`` x ``height`` image, and the problems met.

    Polygons with fewer than 3 points (or not numbers) are dropped, each counted as
    :data:`SHORT_POLYGON`; an RLE of another size counts as :data:`OTHER_SIZE`, one whose runs
    do not cover the image exactly as :data:`BAD_RLE`; no usable mask left counts as
    :data:`NO_MASK` too.

    Returns:
        (the segmentation to decode, or ``None``; the problems, one entry each).
    """
    problems: list[str] = []
    if isinstance(segmentation, list):
        polygons = []
        for polygon in segmentation:
            numbers = isinstance(polygon, list) and all(map(is_number, polygon))
            if numbers and len(polygon) >= 6 and np.isfinite(polygon).all():
                polygons.append([float(v) for v in polygon[: len(polygon) // 2 * 2]])
            else:
                problems.append(SHORT_POLYGON)
        if polygons:
            return polygons, problems
    elif isinstance(segmentation, dict):
        size, counts = segmentation.get("size"), segmentation.get("counts")
        if not (isinstance(size, list) and len(size) == 2 and all(map(is_int, size))):
            problems.append(BAD_RLE)
        elif list(size) != [height, width]:
            problems.append(OTHER_SIZE)
        else:
            runs = counts if isinstance(counts, list) else None
            if isinstance(counts, str):
                runs = rle_run_lengths(counts)
            ok = runs is not None and all(is_int(r) and r >= 0 for r in runs)
            if ok and sum(runs) == height * width:
                return {"size": [height, width], "counts": counts}, problems
            problems.append(BAD_RLE)
    return None, problems + [NO_MASK]


def decode_masks(segmentations: list, width: int, height: int) -> np.ndarray:
    """Checked segmentations (:func:`check_segmentation`) -> uint8 [K, height, width] 0/1."""
    masks = np.zeros((len(segmentations), height, width), dtype=np.uint8)
    for k, seg in enumerate(segmentations):
        if isinstance(seg, list):
            rle = mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
        elif isinstance(seg["counts"], list):
            rle = mask_utils.frPyObjects(seg, height, width)
        else:
            rle = {"size": seg["size"], "counts": seg["counts"].encode("ascii")}
        masks[k] = mask_utils.decode(rle)
    return masks

"""Albumentations pipelines for training and test, built from the config."""

from __future__ import annotations

from typing import Any, Sequence

import albumentations as A
import cv2
import numpy as np

__all__ = ["ResizeShortestEdge", "build_augmentation", "resize_for_inference"]


class ResizeShortestEdge(A.SmallestMaxSize):
    """Resize so the shorter side is one of ``short_sizes`` (picked at random), unless that
    makes the longer side exceed ``max_size``: then the longer side is ``max_size``.

    This is detectron2's ``ResizeShortestEdge`` on albumentations' resize (boxes follow).
    """

    def __init__(self, short_sizes: int | Sequence[int], max_size: int, p: float = 1.0):
        super().__init__(max_size=short_sizes, interpolation=cv2.INTER_LINEAR, p=p)
        self.long_max = int(max_size)

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict:
        h, w = params["shape"][:2]
        sizes = self.max_size if isinstance(self.max_size, (list, tuple)) else [self.max_size]
        short = self.py_random.choice(list(sizes))
        scale = short / min(h, w)
        if self.long_max > 0 and max(h, w) * scale > self.long_max:
            scale = self.long_max / max(h, w)
        return {"scale": scale}


def build_augmentation(cfg, is_train: bool) -> A.Compose:
    """The bbox-safe pipeline: resize, and at training horizontal flip and colour jitter.

    Boxes are Pascal VOC (x1, y1, x2, y2) in pixels with a ``labels`` field (and an ``indices``
    field to follow extra boxes); boxes that become smaller than one pixel are dropped.
    """
    inp = cfg.INPUT
    if is_train:
        ops = [ResizeShortestEdge(list(inp.MIN_SIZE_TRAIN), inp.MAX_SIZE_TRAIN)]
        if inp.HFLIP_PROB > 0:
            ops.append(A.HorizontalFlip(p=inp.HFLIP_PROB))
        if inp.COLOR_JITTER > 0:
            j = inp.COLOR_JITTER
            ops.append(A.ColorJitter(brightness=j, contrast=j, saturation=j, hue=0.0, p=0.8))
    else:
        ops = [ResizeShortestEdge([inp.MIN_SIZE_TEST], inp.MAX_SIZE_TEST)]
    return A.Compose(
        ops,
        bbox_params=A.BboxParams(
            format="pascal_voc", label_fields=["labels", "indices"], min_width=1, min_height=1
        ),
    )


def resize_for_inference(transform: A.Compose, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An RGB uint8 image [H, W, 3] resized by the test pipeline, and the box scale.

    Returns:
        (resized uint8 [H', W', 3], float32 [4] ``(sx, sy, sx, sy)``: boxes in the resized
        image divided by it are in the original's pixels). Per axis: rounding makes the two
        differ, by a lot for thin images (1 x 1000 -> 1 x 64).
    """
    resized = np.asarray(
        transform(image=image, bboxes=np.zeros((0, 4)), labels=[], indices=[])["image"]
    )
    sx, sy = resized.shape[1] / image.shape[1], resized.shape[0] / image.shape[0]
    return resized, np.array([sx, sy, sx, sy], np.float32)

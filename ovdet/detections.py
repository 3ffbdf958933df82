"""The result type of detection, shared by :class:`ovdet.api.OVDetector` and the ONNX runtime.

Kept free of PyTorch: :mod:`ovdet.export.runtime` returns it without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence, Union

import numpy as np
from PIL import Image

__all__ = ["Detections", "ImageInput", "as_image_list"]

ImageInput = Union[str, Path, np.ndarray, Image.Image]
"""What ``predict`` takes per image: a path, an RGB uint8 array [H, W, 3] or a PIL image."""


@dataclass
class Detections:
    """Detections in one image, in the image's original pixel coordinates.

    Attributes:
        boxes: float32 [K, 4] (x1, y1, x2, y2).
        scores: float32 [K].
        labels: int64 [K], indices into ``class_names``.
        class_names: the vocabulary the labels index.
        embeddings: float32 [K, D] region embeddings, if requested.
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    class_names: list[str] = field(repr=False)
    embeddings: np.ndarray | None = field(default=None, repr=False)

    @property
    def names(self) -> list[str]:
        """The class name of each detection."""
        return [self.class_names[i] for i in self.labels]

    def __len__(self) -> int:
        return len(self.scores)


def as_image_list(images: ImageInput | Sequence[ImageInput]) -> list[ImageInput]:
    """One image or a sequence of them, as a list (an array or a path is one image)."""
    if isinstance(images, (str, Path, np.ndarray, Image.Image)):
        return [images]
    return list(images)

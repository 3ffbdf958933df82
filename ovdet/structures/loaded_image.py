"""An image as read for detection: its pixels, perhaps downscaled on load, and its original size.

A file above the load limit (``INPUT.MAX_LOAD_PIXELS``) is decoded downscaled
(:func:`ovdet.data.image_io.load_image`), yet detections and recorded image sizes are in the
original's pixels. :class:`LoadedImage` carries the original size beside the pixels, so the one
scale between the two frames is known wherever the pixels go (:attr:`LoadedImage.scale`).

Kept free of PyTorch, as :mod:`ovdet.structures.detections`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["LoadedImage"]


@dataclass(frozen=True)
class LoadedImage:
    """The pixels a detector sees and the size of the image they came from.

    Attributes:
        array: RGB uint8 [h, w, 3], downscaled from the original where it was too large.
        width: the original image's width in pixels (after EXIF rotation).
        height: the original image's height in pixels.
    """

    array: np.ndarray
    width: int
    height: int

    @classmethod
    def unscaled(cls, array: np.ndarray) -> LoadedImage:
        """Pixels that are the original (not downscaled): RGB uint8 [H, W, 3]."""
        return cls(array, int(array.shape[1]), int(array.shape[0]))

    @property
    def scale(self) -> np.ndarray:
        """float32 [4] ``(sx, sy, sx, sy)``: pixels of :attr:`array` per original pixel.

        Boxes (x1, y1, x2, y2) in :attr:`array`'s pixels divided by it are in the original's;
        boxes in the original's multiplied by it are in :attr:`array`'s. 1 where not downscaled.
        """
        sx = self.array.shape[1] / self.width
        sy = self.array.shape[0] / self.height
        return np.array([sx, sy, sx, sy], np.float32)

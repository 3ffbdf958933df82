"""Reading and checking image exemplars: each one's pixels, its box in them and its cache key.

Every exemplar of a vocabulary is read and checked (:func:`load_exemplars`) before any is
embedded (:mod:`ovdet.core.exemplars`), so a bad one leaves nothing written to the cache.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ovdet.data.image_io import load_image
from ovdet.structures.exemplars import Exemplar
from ovdet.structures.loaded_image import LoadedImage
from ovdet.utils.errors import ImageError, VocabularyError

__all__ = ["LoadedExemplar", "load_exemplars"]


class LoadedExemplar:
    """An exemplar read and checked: its pixels, its box in those pixels and its cache key.

    Attributes:
        image: the pixels a detector sees (downscaled on load where huge).
        box: Tensor[4] (x1, y1, x2, y2) in ``image.array``'s pixels.
        digest: a hash of the image's bytes and the box (in the original's pixels).
        image_digest: a hash of the image's bytes alone.
    """

    def __init__(
        self, image: LoadedImage, box: torch.Tensor, digest: str, image_digest: str = ""
    ) -> None:
        self.image, self.box, self.digest = image, box, digest
        self.image_digest = image_digest or digest


def _read(exemplar: Exemplar, max_pixels: int) -> tuple[LoadedImage, bytes]:
    if isinstance(exemplar.image, str):
        path = Path(exemplar.image)
        try:
            data = path.read_bytes()
        except OSError as e:
            raise ImageError(f"cannot read exemplar image {path}: {e.strerror or e}") from None
        try:
            return load_image(path, max_pixels), data
        except ImageError as e:
            raise ImageError(f"exemplar image {path}: {e}") from None
    array = exemplar.image
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise ImageError(
            f"an exemplar's pixels must be an RGB uint8 array [H, W, 3], got {array.dtype} "
            f"{list(array.shape)}"
        )
    array = np.ascontiguousarray(array)
    return LoadedImage.unscaled(array), repr(array.shape).encode() + array.tobytes()


def load_exemplars(exemplars: Sequence[Exemplar], max_pixels: int = 0) -> list[LoadedExemplar]:
    """Reads every exemplar's image and checks its box.

    Raises:
        ImageError: an unreadable image.
        VocabularyError: a box of zero area or not inside its image.
    """
    loaded = []
    for exemplar in exemplars:
        image, data = _read(exemplar, max_pixels)
        x, y, w, h = exemplar.box or (0.0, 0.0, float(image.width), float(image.height))
        if w <= 0 or h <= 0:
            raise VocabularyError(f"exemplar box {exemplar.describe()} has zero area")
        if x < 0 or y < 0 or x + w > image.width or y + h > image.height:
            raise VocabularyError(
                f"exemplar box {exemplar.describe()} is not inside its "
                f"{image.width}x{image.height} image"
            )
        original = torch.tensor([x, y, x + w, y + h], dtype=torch.float32)
        digest = hashlib.sha256(data + repr((x, y, w, h)).encode()).hexdigest()
        box = original * torch.from_numpy(image.scale)
        loaded.append(LoadedExemplar(image, box, digest, hashlib.sha256(data).hexdigest()))
    return loaded

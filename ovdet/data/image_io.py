"""Reading images of any common mode as RGB uint8, honouring EXIF orientation."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from ovdet.structures.loaded_image import LoadedImage
from ovdet.utils.errors import ImageError

__all__ = ["IMAGE_EXTENSIONS", "as_loaded_image", "as_rgb_array", "load_image", "read_image"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert grayscale, 16-bit, palette, RGBA (on white) and CMYK images to RGB."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scaled = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        return Image.fromarray(scaled.round().astype(np.uint8), "L").convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


# EXIF orientations that swap width and height (transposed, rotated by 90 or 270 degrees).
_SWAPPING_ORIENTATIONS = (5, 6, 7, 8)


def _upright_size(img: Image.Image) -> tuple[int, int]:
    """(width, height) of an opened image once its EXIF rotation is applied."""
    orientation = img.getexif().get(ExifTags.Base.Orientation, 1)
    return img.size[::-1] if orientation in _SWAPPING_ORIENTATIONS else img.size


def load_image(path: str | Path, max_pixels: int = 0) -> LoadedImage:
    """Read an image for detection: its RGB ``uint8`` pixels and its original size.

    EXIF rotation is applied; grayscale, 16-bit, palette, RGBA and CMYK images are converted.
    Images of more than ``max_pixels`` pixels (if > 0) are downscaled while decoding (JPEG) or
    right after, keeping the aspect ratio, so a huge photo cannot exhaust memory; the result
    keeps the original's size (after rotation), in whose pixels detections are reported.

    Returns:
        a :class:`~ovdet.structures.loaded_image.LoadedImage`: ``array`` [h, w, 3] and the
        original ``width`` and ``height``.

    Raises:
        ImageError: a missing, empty, truncated or undecodable file.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"image {path} does not exist")
    if path.stat().st_size == 0:
        raise ImageError(f"image {path} is an empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = _upright_size(img)
                if max_pixels and img.width * img.height > max_pixels:
                    factor = (max_pixels / (img.width * img.height)) ** 0.5
                    target = (max(1, int(img.width * factor)), max(1, int(img.height * factor)))
                    img.draft("RGB", target)  # JPEG decodes at reduced size; no-op otherwise
                img = ImageOps.exif_transpose(img)
                if max_pixels and img.width * img.height > max_pixels:
                    img.thumbnail(target if img.size[0] >= target[0] else target[::-1])
                img = _to_rgb(img)
                img.load()
    except Image.DecompressionBombError as e:
        raise ImageError(f"image {path} is too large to decode safely: {e}") from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"cannot read image {path}: {e}") from e
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ImageError(f"image {path} decoded to an unexpected shape {arr.shape}")
    return LoadedImage(np.ascontiguousarray(arr), int(width), int(height))


def read_image(path: str | Path, max_pixels: int = 0) -> np.ndarray:
    """The pixels of :func:`load_image`: RGB ``uint8`` [H, W, 3] (downscaled above
    ``max_pixels``; where boxes are reported, use :func:`load_image`, which keeps the
    original's size).

    Raises:
        ImageError: a missing, empty, truncated or undecodable file.
    """
    return load_image(path, max_pixels).array


def as_rgb_array(image: str | Path | Image.Image | np.ndarray, max_pixels: int = 0) -> np.ndarray:
    """A path (read with :func:`read_image`), a PIL image or an array -> RGB uint8 [H, W, 3].

    A grey array [H, W] is repeated to three channels; any other shape or dtype is a ValueError.
    """
    if isinstance(image, (str, Path)):
        return read_image(image, max_pixels)
    if isinstance(image, Image.Image):
        return np.asarray(_to_rgb(image), dtype=np.uint8)
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 array [H, W, 3], got {array.shape}")
    return array


def as_loaded_image(
    image: str | Path | Image.Image | np.ndarray | LoadedImage, max_pixels: int = 0
) -> LoadedImage:
    """What a detector takes per image, as a :class:`LoadedImage`: a path is read with
    :func:`load_image` (downscaled above ``max_pixels``, the original's size kept); a loaded
    image is kept; a PIL image or an array (:func:`as_rgb_array`) is its own original."""
    if isinstance(image, LoadedImage):
        return image
    if isinstance(image, (str, Path)):
        return load_image(image, max_pixels)
    return LoadedImage.unscaled(as_rgb_array(image))

"""Captions and crop windows of the synthetic CLIP pre-training crops.

:func:`make_caption` phrases a class name in varied web-like ways ("a photo of a small red
circle"); :func:`_crop_window` frames an object's box at about 1.5x, as the ViLD teacher crops
proposals.
"""

from __future__ import annotations

import numpy as np

__all__ = ["make_caption"]

_CROP_FRAME = (1.35, 1.65)  # crop side / longest box side, "about 1.5x"

# "{obj}" is the object phrase with an article ("a small red circle"); "{name}" the bare name.
_CAPTION_TEMPLATES = (
    "{obj}",
    "a photo of {obj}",
    "photo of {obj}",
    "a picture of {obj}",
    "an image of {obj}",
    "a close-up of {obj}",
    "a cropped photo of {obj}",
    "a blurry photo of {obj}",
    "{obj} on a {bg} background",
    "{obj} in a cluttered scene",
    "there is {obj} here",
    "a drawing of {obj}",
    "{name}",
    "{name} shape",
    "{name} icon",
    "the {name}",
    "{name} on a {bg} background",
    "{name}, close up",
)
_SMALL_WORDS = ("small", "tiny", "little")
_LARGE_WORDS = ("large", "big")


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def make_caption(
    rng: np.random.Generator,
    name: str,
    *,
    relative_size: float = 0.5,
    background_level: float = 128.0,
) -> str:
    """A short web-like caption that names a class, in varied phrasing.

    Captions stay within 14 tokens of open_clip's default tokenizer (context length 16).

    Args:
        rng: the random generator.
        name: the class name ("red circle"), used verbatim.
        relative_size: the object's size within the size range, 0 (smallest) .. 1 (largest);
            picks words like "small" or "large".
        background_level: the background's grey level, picks "dark grey" / "light grey".

    Returns:
        The caption, e.g. "a photo of a small red circle".
    """
    template = _CAPTION_TEMPLATES[int(rng.integers(len(_CAPTION_TEMPLATES)))]
    adjective = ""
    if rng.random() < 0.5:
        if relative_size < 0.3:
            adjective = _SMALL_WORDS[int(rng.integers(len(_SMALL_WORDS)))] + " "
        elif relative_size > 0.7:
            adjective = _LARGE_WORDS[int(rng.integers(len(_LARGE_WORDS)))] + " "
    if background_level < 110:
        bg_words = ("dark grey", "dark", "noisy", "textured")
    elif background_level > 145:
        bg_words = ("light grey", "light", "noisy", "textured")
    else:
        bg_words = ("grey", "gray", "noisy", "textured")
    bg = bg_words[int(rng.integers(len(bg_words)))]
    return template.format(obj=_article(adjective + name), name=name, bg=bg)


def _crop_window(
    rng: np.random.Generator, box: tuple[int, int, int, int], image_size: int
) -> tuple[int, int, int]:
    """A square window (x0, y0, side) of about 1.5x the box's longest side, inside the image."""
    x, y, w, h = box
    side = max(w, h) * rng.uniform(*_CROP_FRAME)
    side = int(round(min(side, image_size)))
    cx = x + w / 2 + rng.uniform(-0.06, 0.06) * side
    cy = y + h / 2 + rng.uniform(-0.06, 0.06) * side
    x0 = int(round(min(max(cx - side / 2, 0), image_size - side)))
    y0 = int(round(min(max(cy - side / 2, 0), image_size - side)))
    return x0, y0, side

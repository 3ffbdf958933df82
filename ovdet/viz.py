"""Drawing detections: boxes, class names and scores."""

from __future__ import annotations

import colorsys
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ovdet.utils.io import atomic_open

__all__ = ["color_for", "draw_detections", "save_image"]


def color_for(name: str) -> tuple[int, int, int]:
    """A stable, saturated colour per class name."""
    hue = (sum(ord(c) * 31**i for i, c in enumerate(name)) % 997) / 997
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_detections(
    image: np.ndarray,
    boxes: np.ndarray,
    scores: Sequence[float],
    names: Sequence[str],
    line_width: int | None = None,
) -> Image.Image:
    """Draw boxes with ``name score`` labels on an RGB uint8 image [H, W, 3]."""
    img = Image.fromarray(image).convert("RGB")
    draw = ImageDraw.Draw(img)
    width = line_width or max(1, round(max(img.size) / 300))
    font = ImageFont.load_default()
    for box, score, name in zip(np.asarray(boxes).tolist(), scores, names):
        color = color_for(name)
        draw.rectangle(box, outline=color, width=width)
        label = f"{name} {score:.2f}"
        left, top, right, bottom = draw.textbbox((box[0], box[1]), label, font=font)
        y = box[1] - (bottom - top) - 2 if box[1] - (bottom - top) - 2 >= 0 else box[1]
        draw.rectangle((box[0], y, box[0] + right - left + 2, y + bottom - top + 2), fill=color)
        draw.text((box[0] + 1, y), label, fill=(0, 0, 0), font=font)
    return img


def save_image(image: Image.Image, path: str | Path) -> None:
    """Save atomically (never a half-written picture)."""
    path = Path(path)
    fmt = "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG"
    with atomic_open(path, "wb") as f:
        image.save(f, format=fmt, quality=92)

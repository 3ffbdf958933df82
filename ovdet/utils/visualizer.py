"""Drawing detections: boxes, class names and scores that stay readable.

Labels are laid out by :func:`layout_labels` (pure geometry, no drawing): each label lies inside
the image and no two labels overlap; a label that finds no free place is dropped while its box
is still drawn. Each class keeps one colour (:func:`color_for`), novel classes are marked by a
``*`` after the name and a dashed outline, and an optional legend lists the classes drawn.
"""

from __future__ import annotations

import colorsys
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ovdet.utils.io import atomic_open

__all__ = [
    "NOVEL_MARK",
    "color_for",
    "draw_detections",
    "label_text",
    "layout_labels",
    "save_image",
]

NOVEL_MARK = "*"
"""Appended to the name of a novel class in labels and the legend."""

Rect = tuple[int, int, int, int]
"""A label rectangle (x1, y1, x2, y2) in pixels, half-open: it covers x1 <= x < x2."""


def color_for(name: str) -> tuple[int, int, int]:
    """A stable, saturated colour per class name (the same in every run and process)."""
    hue = (sum(ord(c) * 31**i for i, c in enumerate(name)) % 997) / 997
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def label_text(name: str, score: float | None = None, novel: bool = False) -> str:
    """The text of one label: ``name 0.87``, ``name* 0.87`` for a novel class."""
    text = f"{name}{NOVEL_MARK if novel else ''}"
    return text if score is None else f"{text} {score:.2f}"


def _overlaps(a: Rect, b: Rect) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _candidates(box: Sequence[float], size: tuple[int, int], image_size: tuple[int, int]):
    """Places to try for one label, best first, each shifted to lie inside the image."""
    width, height = size
    img_w, img_h = image_size
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    xs = [x1, x2 - width]  # left-aligned with the box, then right-aligned
    ys = [y1 - height, y1, y2, y2 - height]  # above, inside top, below, inside bottom
    seen = set()
    for x in xs:
        for y in ys:
            x_in = min(max(x, 0), img_w - width)
            y_in = min(max(y, 0), img_h - height)
            if (x_in, y_in) not in seen:
                seen.add((x_in, y_in))
                yield (x_in, y_in, x_in + width, y_in + height)


def layout_labels(
    boxes: np.ndarray | Sequence[Sequence[float]],
    label_sizes: Sequence[tuple[int, int]],
    scores: Sequence[float],
    image_size: tuple[int, int],
) -> list[Rect | None]:
    """Place one label per box so that labels stay inside the image and never overlap.

    Labels are placed in order of decreasing score, each at the first free place among: above
    the box, inside its top, below it, inside its bottom (left-aligned with the box, then
    right-aligned), shifted into the image where they would cross its border. A label with no
    free place (or larger than the image) is dropped: lower-scored labels give way.

    Args:
        boxes: Tensor[N, 4] (x1, y1, x2, y2) in pixels.
        label_sizes: N (width, height) of the labels in pixels.
        scores: N scores; higher-scored labels are placed first.
        image_size: (width, height) of the image.

    Returns:
        N rectangles (x1, y1, x2, y2), half-open and within ``[0, width] x [0, height]``,
        pairwise disjoint; ``None`` where the label was dropped.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if not len(boxes) == len(label_sizes) == len(scores):
        raise ValueError(
            f"{len(boxes)} boxes, {len(label_sizes)} label sizes and {len(scores)} scores differ"
        )
    img_w, img_h = image_size
    placed: list[Rect | None] = [None] * len(boxes)
    taken: list[Rect] = []
    order = sorted(range(len(boxes)), key=lambda i: -float(scores[i]))  # stable for ties
    for i in order:
        width, height = (int(v) for v in label_sizes[i])
        if width > img_w or height > img_h or width <= 0 or height <= 0:
            continue
        for rect in _candidates(boxes[i], (width, height), (img_w, img_h)):
            if not any(_overlaps(rect, other) for other in taken):
                placed[i] = rect
                taken.append(rect)
                break
    return placed


def _text_color(fill: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black on light colours, white on dark ones (ITU-R BT.601 luma)."""
    luma = 0.299 * fill[0] + 0.587 * fill[1] + 0.114 * fill[2]
    return (0, 0, 0) if luma >= 140 else (255, 255, 255)


def _dashed_rectangle(
    draw: ImageDraw.ImageDraw, box: Sequence[float], color, width: int, dash: int
) -> None:
    """A rectangle outline drawn in dashes of ``dash`` pixels with gaps of the same length."""
    x1, y1, x2, y2 = box
    for (ax, ay), (bx, by) in (
        ((x1, y1), (x2, y1)),
        ((x2, y1), (x2, y2)),
        ((x2, y2), (x1, y2)),
        ((x1, y2), (x1, y1)),
    ):
        length = max(abs(bx - ax), abs(by - ay))
        steps = max(1, int(length // (2 * dash)) + 1)
        for k in range(steps):
            t0 = min(1.0, 2 * k * dash / max(length, 1e-6))
            t1 = min(1.0, (2 * k + 1) * dash / max(length, 1e-6))
            if t1 <= t0:
                break
            start = (ax + (bx - ax) * t0, ay + (by - ay) * t0)
            end = (ax + (bx - ax) * t1, ay + (by - ay) * t1)
            draw.line([start, end], fill=color, width=width)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed-size bitmap font
        return ImageFont.load_default()


def _text_size(draw: ImageDraw.ImageDraw, text: str, font, pad: int) -> tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - left + 2 * pad, bottom - top + 2 * pad


def _draw_text_box(draw, rect: Rect, text: str, font, fill, pad: int) -> None:
    draw.rectangle((rect[0], rect[1], rect[2] - 1, rect[3] - 1), fill=fill)
    left, top, _, _ = draw.textbbox((0, 0), text, font=font)
    draw.text((rect[0] + pad - left, rect[1] + pad - top), text, fill=_text_color(fill), font=font)


def _legend_panel(
    entries: Sequence[tuple[str, bool]], font, pad: int, height: int, show_note: bool
) -> Image.Image:
    """A white panel listing ``entries`` (name, novel) with colour swatches, [height', W', 3]."""
    scratch = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    texts = [label_text(name, novel=novel) for name, novel in entries]
    note = f"{NOVEL_MARK} novel class"
    sizes = [_text_size(scratch, t, font, pad) for t in texts]
    row = max([h for _, h in sizes] + [_text_size(scratch, "Ag", font, pad)[1]])
    swatch = row
    width = swatch + pad + max([w for w, _ in sizes] + [0]) + 2 * pad
    if show_note:
        width = max(width, _text_size(scratch, note, font, pad)[0] + 2 * pad)
    rows = len(entries) + (1 if show_note else 0)
    panel = Image.new("RGB", (width, max(height, rows * row + 2 * pad)), (255, 255, 255))
    draw = ImageDraw.Draw(panel)
    y = pad
    for (name, _), text in zip(entries, texts):
        draw.rectangle((pad, y + 1, pad + swatch - 2, y + row - 2), fill=color_for(name))
        left, top, _, _ = draw.textbbox((0, 0), text, font=font)
        draw.text((2 * pad + swatch - left, y + pad - top), text, fill=(0, 0, 0), font=font)
        y += row
    if show_note:
        left, top, _, _ = draw.textbbox((0, 0), note, font=font)
        draw.text((pad - left, y + pad - top), note, fill=(0, 0, 0), font=font)
    return panel


def draw_detections(
    image: np.ndarray,
    boxes: np.ndarray,
    scores: Sequence[float],
    names: Sequence[str],
    line_width: int | None = None,
    *,
    novel: Sequence[bool] | None = None,
    legend: bool = False,
    font_size: int | None = None,
    masks: np.ndarray | None = None,
) -> Image.Image:
    """Draw boxes with readable ``name score`` labels, and masks if given.

    Every box is drawn; labels are placed by :func:`layout_labels` (inside the image, never on
    top of each other; a lower-scored label with no free place is dropped, its box kept).

    Args:
        image: RGB uint8 [H, W, 3].
        boxes: Tensor[N, 4] (x1, y1, x2, y2) in pixels.
        scores: N scores.
        names: N class names; each class has one colour (:func:`color_for`).
        line_width: box outline width in pixels (default: scales with the image).
        novel: N flags; novel classes get a ``*`` after the name and a dashed outline.
        legend: append a panel to the right listing the classes drawn (novel ones marked).
        font_size: label font size in pixels (default: scales with the image).
        masks: bool [N, H, W] instance masks of the image, painted translucent in their
            class's colour under the boxes (which keep the novel marker).

    Returns:
        The drawn image, [H, W, 3], or [max(H, legend height), W + legend width, 3] with the
        legend.
    """
    img = Image.fromarray(np.asarray(image)).convert("RGB")
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = [float(s) for s in scores]
    names = list(names)
    novel = [False] * len(names) if novel is None else [bool(v) for v in novel]
    if not len(boxes) == len(scores) == len(names) == len(novel):
        raise ValueError(
            f"{len(boxes)} boxes, {len(scores)} scores, {len(names)} names and {len(novel)} "
            "novel flags differ"
        )
    if masks is not None:
        img = _paint_masks(img, np.asarray(masks, dtype=bool), names, scores)
    draw = ImageDraw.Draw(img)
    width = line_width or max(1, round(max(img.size) / 300))
    font = _font(font_size or max(10, round(min(img.size) / 40)))
    pad = 1 + width // 2

    texts = [label_text(n, s, v) for n, s, v in zip(names, scores, novel)]
    sizes = [_text_size(draw, t, font, pad) for t in texts]
    rects = layout_labels(boxes, sizes, scores, img.size)

    for i in sorted(range(len(boxes)), key=lambda i: scores[i]):  # best boxes drawn last (on top)
        color = color_for(names[i])
        if novel[i]:
            _dashed_rectangle(draw, boxes[i].tolist(), color, width, dash=max(4, 3 * width))
        else:
            draw.rectangle(boxes[i].tolist(), outline=color, width=width)
    for i, rect in enumerate(rects):
        if rect is not None:
            _draw_text_box(draw, rect, texts[i], font, color_for(names[i]), pad)

    if legend and names:
        entries = sorted({(n, v) for n, v in zip(names, novel)})
        panel = _legend_panel(entries, font, pad + 2, img.height, show_note=any(novel))
        canvas = Image.new("RGB", (img.width + panel.width, panel.height), (255, 255, 255))
        canvas.paste(img, (0, 0))
        canvas.paste(panel, (img.width, 0))
        img = canvas
    return img


# Opacity of the painted masks.
MASK_ALPHA = 0.45


def _paint_masks(
    img: Image.Image, masks: np.ndarray, names: Sequence[str], scores: Sequence[float]
) -> Image.Image:
    """Blend each mask (bool [N, H, W]) into the image in its class's colour, best on top."""
    if masks.shape != (len(names), img.height, img.width):
        raise ValueError(
            f"masks of shape {masks.shape} for {len(names)} detections on a "
            f"{img.width}x{img.height} image"
        )
    pixels = np.asarray(img, dtype=np.float32).copy()
    for i in sorted(range(len(names)), key=lambda i: scores[i]):
        color = np.asarray(color_for(names[i]), dtype=np.float32)
        pixels[masks[i]] = (1 - MASK_ALPHA) * pixels[masks[i]] + MASK_ALPHA * color
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))


def save_image(image: Image.Image, path: str | Path) -> None:
    """Save atomically (never a half-written picture)."""
    path = Path(path)
    fmt = "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG"
    with atomic_open(path, "wb") as f:
        image.save(f, format=fmt, quality=92)

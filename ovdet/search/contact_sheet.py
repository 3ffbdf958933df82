"""A contact sheet: the hits of a query in one picture, each a framed crop with its score."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ovdet.search.store import Hit
from ovdet.utils.visualizer import draw_detections

__all__ = ["contact_sheet"]


def _hit_image(hit: Hit, cache: dict) -> np.ndarray | None:
    """The RGB uint8 image [H, W, 3] a hit comes from (a decoded frame for videos)."""
    key = (hit.file, hit.timestamp)
    if key in cache:
        return cache[key]
    from ovdet.video.io import VideoReader, is_video

    image = None
    try:
        if is_video(hit.file):
            best = None
            for frame in VideoReader(hit.file):
                if best is None or abs(frame.timestamp - hit.timestamp) < abs(
                    best.timestamp - hit.timestamp
                ):
                    best = frame
                if frame.timestamp > (hit.timestamp or 0.0) + 1.0:
                    break
            image = None if best is None else best.image
        else:
            from ovdet.data.image_io import read_image

            image = read_image(hit.file)
    except OSError:
        image = None
    cache[key] = image
    return image


def contact_sheet(
    hits: Sequence[Hit], title: str = "", tile: int = 160, columns: int = 5, margin: float = 0.5
) -> Image.Image:
    """A grid of the hits: each tile is the hit's box drawn on a crop around it.

    Args:
        hits: search results, best first (files that can no longer be read show as grey tiles).
        title: a line of text above the grid (e.g. the query).
        tile: side of a tile in pixels.
        columns: tiles per row.
        margin: context around each box, as a fraction of its size.
    """
    font = ImageFont.load_default()
    rows = max(1, -(-len(hits) // columns))
    header = 16 if title else 0
    sheet = Image.new("RGB", (columns * tile, header + rows * (tile + 14)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((4, 2), title, fill=(0, 0, 0), font=font)
    cache: dict = {}
    for i, hit in enumerate(hits):
        x, y = (i % columns) * tile, header + (i // columns) * (tile + 14)
        image = _hit_image(hit, cache)
        if image is None:
            draw.rectangle((x, y, x + tile - 1, y + tile - 1), fill=(128, 128, 128))
        else:
            x1, y1, x2, y2 = hit.box
            mw, mh = (x2 - x1) * margin, (y2 - y1) * margin
            h, w = image.shape[:2]
            cx1, cy1 = int(max(0, x1 - mw)), int(max(0, y1 - mh))
            cx2, cy2 = int(min(w, x2 + mw + 1)), int(min(h, y2 + mh + 1))
            crop = np.ascontiguousarray(image[cy1:cy2, cx1:cx2])
            box = np.array([[x1 - cx1, y1 - cy1, x2 - cx1, y2 - cy1]], np.float32)
            drawn = draw_detections(crop, box, [hit.score], [hit.kind], line_width=1)
            drawn.thumbnail((tile, tile))
            sheet.paste(drawn, (x + (tile - drawn.width) // 2, y + (tile - drawn.height) // 2))
        when = f" t={hit.timestamp:.1f}s" if hit.timestamp is not None else ""
        label = f"{i + 1}. {hit.score:.3f}{when}"
        draw.text((x + 2, y + tile), label, fill=(0, 0, 0), font=font)
    return sheet

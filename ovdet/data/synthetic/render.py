"""Rendering of synthetic scenes: textured backgrounds, clutter and anti-aliased shapes.

:func:`render_scene` draws one image of coloured shapes on a noisy background and returns it
with the tight box and the area of each object's visible pixels (:class:`Scene`). The only
source of randomness is the ``numpy.random.Generator`` it is given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from ovdet.data.synthetic.categories import CLASS_NAMES, COLORS

__all__ = ["Scene", "render_scene"]

_SUPERSAMPLE = 4  # shapes are drawn at 4x and box-filtered down (anti-aliased edges)
_MAX_PLACEMENT_TRIES = 30


@dataclass(frozen=True)
class Scene:
    """One rendered image and its objects.

    Attributes:
        image: ``uint8[H, W, 3]`` RGB image.
        labels: class index (into :data:`CLASS_NAMES`) of each placed object, bottom to top.
        boxes: ``[x, y, w, h]`` tight box of each object's visible pixels (integers, pixels).
        areas: number of visible pixels of each object.
        sizes: nominal size (diameter, pixels) each object was drawn at.
        background_level: mean grey level of the background (0..255), used for captions.
        owner: ``int16[H, W]`` index (into ``labels``) of the object visible at each pixel, -1
            for the background: object ``k``'s exact mask is ``owner == k``.
    """

    image: np.ndarray
    labels: tuple[int, ...]
    boxes: tuple[tuple[int, int, int, int], ...]
    areas: tuple[int, ...]
    sizes: tuple[float, ...]
    background_level: float
    owner: np.ndarray


def _smooth_noise(rng: np.random.Generator, size: int, cells: int, channels: int) -> np.ndarray:
    """Bilinearly upsampled Gaussian noise on a ``cells x cells`` grid: ``float[size, size, C]``."""
    grid = rng.standard_normal(size=(cells + 1, cells + 1, channels), dtype=np.float32)
    t = np.linspace(0.0, cells, size, dtype=np.float32)
    i = np.minimum(t.astype(np.int64), cells - 1)
    f = (t - i)[:, None, None]
    rows = grid[i] * (1.0 - f) + grid[i + 1] * f  # [size, cells + 1, C]
    f = f.reshape(1, size, 1)
    return rows[:, i] * (1.0 - f) + rows[:, i + 1] * f


def _background(rng: np.random.Generator, size: int) -> tuple[np.ndarray, float]:
    """A textured greyish background ``float[size, size, 3]`` and its mean level."""
    level = rng.uniform(85.0, 170.0)
    tint = rng.uniform(-12.0, 12.0, size=3)
    coarse = _smooth_noise(rng, size, int(rng.integers(2, 6)), 3) * rng.uniform(6.0, 24.0)
    fine = _smooth_noise(rng, size, int(rng.integers(10, 24)), 1) * rng.uniform(3.0, 10.0)
    return (level + tint + coarse + fine).astype(np.float32), level


def _draw_clutter(rng: np.random.Generator, image: Image.Image) -> None:
    """Grey distractor lines and blobs: structure that is not an object."""
    draw = ImageDraw.Draw(image)
    size = image.width

    def grey() -> tuple[int, int, int]:
        v = int(rng.integers(60, 200))
        return (v, v, v)

    for _ in range(int(rng.integers(1, 7))):  # polylines
        points = [tuple(float(v) for v in rng.uniform(-0.1, 1.1, size=2) * size)]
        for _ in range(int(rng.integers(1, 4))):
            step = rng.normal(scale=0.3 * size, size=2)
            points.append((points[-1][0] + float(step[0]), points[-1][1] + float(step[1])))
        draw.line(points, fill=grey(), width=int(rng.integers(1, 4)))
    for _ in range(int(rng.integers(0, 5))):  # irregular blobs
        cx, cy = rng.uniform(0, size, size=2)
        radius = rng.uniform(0.02, 0.12) * size
        n = int(rng.integers(5, 10))
        angles = np.sort(rng.uniform(0, 2 * np.pi, size=n))
        radii = radius * rng.uniform(0.5, 1.3, size=n)
        poly = [
            (float(cx + r * np.cos(a)), float(cy + r * np.sin(a))) for a, r in zip(angles, radii)
        ]
        draw.polygon(poly, fill=grey())


def _star(points: int, inner: float) -> np.ndarray:
    angles = -np.pi / 2 + np.arange(2 * points) * np.pi / points
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


def _regular(n: int, start: float) -> np.ndarray:
    angles = start + np.arange(n) * 2 * np.pi / n
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


_W = 0.32  # half-width of the cross's arms
_CROSS = np.array([
    [-_W, -1], [_W, -1], [_W, -_W], [1, -_W], [1, _W], [_W, _W],
    [_W, 1], [-_W, 1], [-_W, _W], [-1, _W], [-1, -_W], [-_W, -_W],
])  # fmt: skip
# Unit polygons (radius about 1) and the rotation range (degrees) each shape is drawn with.
_POLYGONS: dict[str, tuple[np.ndarray, float]] = {
    "square": (np.array([[-0.88, -0.88], [0.88, -0.88], [0.88, 0.88], [-0.88, 0.88]]), 12.0),
    "triangle": (_regular(3, -np.pi / 2), 180.0),
    "star": (_star(5, 0.45), 180.0),
    "cross": (_CROSS, 15.0),
    "diamond": (np.array([[0.0, -1.0], [0.72, 0.0], [0.0, 1.0], [-0.72, 0.0]]), 12.0),
    "hexagon": (_regular(6, 0.0), 180.0),
}


def _shape_alpha(rng: np.random.Generator, shape: str, size: float) -> np.ndarray:
    """Anti-aliased coverage ``float32[h, w]`` in [0, 1] of one shape, cropped to its extent."""
    canvas = int(math.ceil(size * 1.5)) + 2
    big = canvas * _SUPERSAMPLE
    mask = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)
    c = big / 2.0
    r = size * _SUPERSAMPLE / 2.0
    stretch = rng.uniform(0.85, 1.15)  # horizontal aspect jitter
    if shape in ("circle", "ring"):
        draw.ellipse((c - r * stretch, c - r, c + r * stretch, c + r), fill=255)
        if shape == "ring":
            k = rng.uniform(0.5, 0.62)
            draw.ellipse((c - k * r * stretch, c - k * r, c + k * r * stretch, c + k * r), fill=0)
    else:
        unit, max_rotation = _POLYGONS[shape]
        theta = np.deg2rad(rng.uniform(-max_rotation, max_rotation))
        rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
        pts = (unit * np.array([stretch, 1.0])) @ rot.T * r + c
        draw.polygon([(float(x), float(y)) for x, y in pts], fill=255)
    alpha = np.asarray(mask.resize((canvas, canvas), Image.BOX), dtype=np.float32) / 255.0
    ys, xs = np.nonzero(alpha > 0)
    return alpha[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def render_scene(
    rng: np.random.Generator,
    labels: Sequence[int],
    *,
    image_size: int = 128,
    object_size: tuple[float, float] = (14.0, 56.0),
    min_visible: float = 0.6,
) -> Scene:
    """Render one scene with objects of the given classes.

    Objects are placed in order, each on top of the previous ones, at a random position where
    every object placed so far keeps at least ``min_visible`` of its pixels; an object that finds
    no such position in 30 tries is left out. The first object always fits.

    Args:
        rng: the random generator (the only source of randomness).
        labels: class indices (into :data:`CLASS_NAMES`) of the objects to place.
        image_size: side of the square image, pixels.
        object_size: range of the objects' nominal diameter, pixels (drawn log-uniformly).
        min_visible: least fraction of each object's pixels left visible by occluders.

    Returns:
        The scene; its ``labels`` lists the objects actually placed.
    """
    background, level = _background(rng, image_size)
    canvas = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8))
    _draw_clutter(rng, canvas)
    image = np.asarray(canvas, dtype=np.float32).copy()
    owner = np.full((image_size, image_size), -1, dtype=np.int16)  # top object at each pixel
    placed: list[tuple[int, int, int, int, int, float]] = []  # (label, x, y, w, h, size)
    full_area: list[int] = []
    visible: list[int] = []
    for label in labels:
        color, shape = CLASS_NAMES[label].split(" ")
        size = _log_uniform(rng, *object_size)
        alpha = _shape_alpha(rng, shape, size)
        solid = alpha >= 0.5
        h, w = alpha.shape
        if h > image_size or w > image_size:
            continue
        for _ in range(_MAX_PLACEMENT_TRIES):
            y = int(rng.integers(0, image_size - h + 1))
            x = int(rng.integers(0, image_size - w + 1))
            window = owner[y : y + h, x : x + w]
            under = window[solid]
            lost = np.bincount(under[under >= 0], minlength=len(placed))
            if all(
                (visible[k] - lost[k]) >= min_visible * full_area[k] for k in range(len(placed))
            ):
                break
        else:
            continue
        for k in range(len(placed)):
            visible[k] -= int(lost[k])
        window[solid] = len(placed)
        area = int(solid.sum())
        placed.append((label, x, y, w, h, size))
        full_area.append(area)
        visible.append(area)
        # Colour with jitter and a gentle linear shading, composited with anti-aliased edges.
        rgb = np.asarray(COLORS[color], dtype=np.float32) + rng.uniform(-16, 16, size=3)
        direction = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        ramp = (xx - w / 2) * np.cos(direction) + (yy - h / 2) * np.sin(direction)
        shade = ramp / max(h, w) * rng.uniform(0.0, 30.0)
        a = alpha[..., None]
        patch = image[y : y + h, x : x + w]
        patch *= 1.0 - a
        patch += a * (rgb + shade[..., None])
    image += rng.standard_normal(size=image.shape, dtype=np.float32) * rng.uniform(2.0, 7.0)
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)

    boxes, areas = [], []
    for k, (_, x, y, w, h, _) in enumerate(placed):
        ys, xs = np.nonzero(owner[y : y + h, x : x + w] == k)
        x0, y0 = int(xs.min()), int(ys.min())
        boxes.append((x + x0, y + y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1))
        areas.append(int(ys.size))
    return Scene(
        image=image,
        labels=tuple(p[0] for p in placed),
        boxes=tuple(boxes),
        areas=tuple(areas),
        sizes=tuple(p[5] for p in placed),
        background_level=float(level),
        owner=owner,
    )

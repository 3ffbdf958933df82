"""A synthetic open-vocabulary detection dataset of coloured shapes, with captions.

Every category is an *attribute x object* composition: one of 8 colours times one of 8 shapes
("red circle", "blue star", ...), 64 categories in all. The base/novel split holds out 16
compositions whose colour and whose shape each occur in 6 base categories, so a detector trained
on base boxes has seen every *word* of a novel name, but never the composition. This is the
smallest setting in which open-vocabulary detection is meaningful, and it trains on a CPU.

:func:`generate_synthetic_dataset` writes, under one output directory::

    images/train/000001.png ...          detection images (RGB PNG)
    images/val/000001.png ...
    annotations/instances_train.json     COCO format; ALL 64 categories annotated (the training
    annotations/instances_val.json       loader drops novel boxes by the split, as the benchmark
                                         protocol does)
    split.json                           {"base": [48 names], "novel": [16 names]}
    captions/train.csv                   crop-caption pairs for CLIP pre-training (open_clip_train)
    captions/val.csv                     held-out labelled crops (all 64 classes) for zero-shot
    captions/crops/{train,val}/*.png     the crops

Scenes have a smooth textured background with pixel noise, grey distractor lines and blobs
(clutter that is not an object), and 1..``max_objects`` objects at sizes from
``min_object_size`` to ``max_object_size`` pixels, with slight colour jitter and shading. Objects
may overlap, but each keeps at least ``min_visible`` of its pixels visible. **Boxes are the tight
box of the visible pixels** (COCO's convention, the "modal" box) and ``area`` is the number of
visible pixels.

Caption CSVs are tab separated with the columns ``filepath``, ``title`` and ``label`` (the class
name, ignored by open_clip_train). File paths are relative to the CSV's directory, so the dataset
can be moved; run open_clip_train from that directory (:func:`ovdet.clip_pretrain.pretrain_clip`
does). Each crop is one object framed at about 1.5x its box (as the ViLD teacher crops
proposals), resized to ``crop_size`` pixels, and captioned in varied web-like phrasing that names
its class ("a photo of a small red circle", "red circle on a grey background", ...).

Generation is deterministic: every image and crop draws from its own
``numpy.random.Generator`` seeded by ``(seed, stream, index)``, so the same seed gives
byte-identical files, independently of ``workers`` and of how many other items are generated.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import shutil
from dataclasses import dataclass
from functools import partial
from multiprocessing import get_context
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from ovdet.data.splits import OpenVocabularySplit
from ovdet.errors import DataError

__all__ = [
    "COLORS",
    "SHAPES",
    "CLASS_NAMES",
    "PRESETS",
    "Scene",
    "SyntheticDatasetInfo",
    "synthetic_categories",
    "synthetic_split",
    "render_scene",
    "make_caption",
    "generate_synthetic_dataset",
]

logger = logging.getLogger(__name__)

# Colours well separated in RGB (jitter of +-16 per channel keeps them apart).
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 30, 30),
    "green": (35, 165, 45),
    "blue": (35, 70, 225),
    "yellow": (240, 220, 35),
    "purple": (135, 40, 175),
    "orange": (250, 135, 20),
    "white": (245, 245, 245),
    "black": (18, 18, 18),
}
SHAPES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "star",
    "cross",
    "ring",
    "diamond",
    "hexagon",
)
#: The 64 class names, colour-major: "red circle", "red square", ..., "black hexagon".
CLASS_NAMES: tuple[str, ...] = tuple(f"{c} {s}" for c in COLORS for s in SHAPES)

# A composition (colour c, shape s) is novel when (s - c) mod 8 is one of these offsets: a
# Latin-square pattern with 2 novel classes per colour and 2 per shape (16 novel, 48 base).
_NOVEL_OFFSETS = (1, 4)

# Keyword arguments of generate_synthetic_dataset for each named size.
PRESETS: dict[str, dict[str, int]] = {
    "small": {
        "num_train_images": 300,
        "num_val_images": 100,
        "num_caption_crops": 4000,
        "num_val_caption_crops": 640,
    },
    "default": {
        "num_train_images": 3000,
        "num_val_images": 500,
        "num_caption_crops": 30000,
        "num_val_caption_crops": 1920,
    },
}

# Random streams: each item's generator is seeded by (seed, stream, index).
_STREAM_TRAIN, _STREAM_VAL, _STREAM_CAPTIONS, _STREAM_VAL_CAPTIONS = range(4)

_SUPERSAMPLE = 4  # shapes are drawn at 4x and box-filtered down (anti-aliased edges)
_CROP_FRAME = (1.35, 1.65)  # crop side / longest box side, "about 1.5x"
_MAX_PLACEMENT_TRIES = 30


def _category_id(color_index: int, shape_index: int) -> int:
    """Category id of a composition: 11..18, 21..28, ..., 81..88 (ids are not positions)."""
    return 10 * (color_index + 1) + shape_index + 1


def _is_novel(color_index: int, shape_index: int) -> bool:
    return (shape_index - color_index) % len(SHAPES) in _NOVEL_OFFSETS


def synthetic_categories() -> list[dict]:
    """COCO ``categories`` entries of the 64 classes, sorted by id.

    Returns:
        Dicts with ``id`` (11..88, with gaps), ``name`` ("red circle") and ``supercategory`` (the
        shape).
    """
    return [
        {"id": _category_id(ci, si), "name": f"{c} {s}", "supercategory": s}
        for ci, c in enumerate(COLORS)
        for si, s in enumerate(SHAPES)
    ]


def synthetic_split() -> OpenVocabularySplit:
    """The 48 base / 16 novel split of the synthetic classes.

    Every novel class is a composition whose colour and whose shape each appear in 6 base
    classes; each colour and each shape has exactly 2 novel compositions.
    """
    base, novel = [], []
    for ci, c in enumerate(COLORS):
        for si, s in enumerate(SHAPES):
            (novel if _is_novel(ci, si) else base).append(f"{c} {s}")
    return OpenVocabularySplit(tuple(base), tuple(novel), name="synthetic")


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


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
    """

    image: np.ndarray
    labels: tuple[int, ...]
    boxes: tuple[tuple[int, int, int, int], ...]
    areas: tuple[int, ...]
    sizes: tuple[float, ...]
    background_level: float


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
    )


# --------------------------------------------------------------------------------------------
# Captions and crops
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# Dataset writing
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _SceneParams:
    image_size: int
    max_objects: int
    object_size: tuple[float, float]
    min_visible: float
    crop_size: int


@dataclass(frozen=True)
class SyntheticDatasetInfo:
    """Paths of a generated synthetic dataset.

    Attributes:
        root: the output directory.
        train_images: directory of the training images (COCO ``file_name`` is relative to it).
        val_images: directory of the validation images.
        train_annotations: COCO json of the training images (all 64 classes annotated).
        val_annotations: COCO json of the validation images (all 64 classes annotated).
        split_file: ``split.json`` with the base and novel class names.
        train_captions: tab-separated CLIP pre-training CSV (``filepath``, ``title``, ``label``).
        val_captions: held-out labelled crops of all classes, same format; ``None`` if none.
        class_names: the 64 class names.
    """

    root: Path
    train_images: Path
    val_images: Path
    train_annotations: Path
    val_annotations: Path
    split_file: Path
    train_captions: Path
    val_captions: Path | None
    class_names: tuple[str, ...] = CLASS_NAMES


def _item_rng(seed: int, stream: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream, index])


def _render_detection_image(
    index: int, *, seed: int, stream: int, params: _SceneParams, out_dir: Path
) -> tuple[tuple[int, ...], tuple[tuple[int, int, int, int], ...], tuple[int, ...]]:
    """Render and save one detection image; return its labels, boxes and areas."""
    rng = _item_rng(seed, stream, index)
    n = int(rng.integers(1, params.max_objects + 1))
    labels = rng.integers(0, len(CLASS_NAMES), size=n).tolist()
    scene = render_scene(
        rng,
        labels,
        image_size=params.image_size,
        object_size=params.object_size,
        min_visible=params.min_visible,
    )
    Image.fromarray(scene.image).save(out_dir / f"{index + 1:06d}.png", compress_level=1)
    return scene.labels, scene.boxes, scene.areas


def _render_caption_crop(
    index: int,
    *,
    seed: int,
    stream: int,
    params: _SceneParams,
    classes: tuple[int, ...],
    out_dir: Path,
) -> tuple[str, str]:
    """Render a scene whose first object is ``classes[index % len]``; crop it and caption it."""
    rng = _item_rng(seed, stream, index)
    anchor = classes[index % len(classes)]
    n = int(rng.integers(1, params.max_objects + 1))
    others = [classes[int(i)] for i in rng.integers(0, len(classes), size=n - 1)]
    scene = render_scene(
        rng,
        [anchor, *others],
        image_size=params.image_size,
        object_size=params.object_size,
        min_visible=params.min_visible,
    )
    x0, y0, side = _crop_window(rng, scene.boxes[0], params.image_size)
    crop = Image.fromarray(scene.image[y0 : y0 + side, x0 : x0 + side])
    crop = crop.resize((params.crop_size, params.crop_size), Image.BICUBIC)
    crop.save(out_dir / f"{index + 1:06d}.png", compress_level=1)
    low, high = params.object_size
    relative = math.log(scene.sizes[0] / low) / max(math.log(high / low), 1e-6)
    name = CLASS_NAMES[anchor]
    caption = make_caption(
        rng, name, relative_size=relative, background_level=scene.background_level
    )
    return caption, name


def _map(
    fn: Callable[[int], object], count: int, workers: int, desc: str, progress: bool
) -> Iterator:
    """``fn(0) .. fn(count - 1)`` in order, in a process pool when ``workers > 0``."""
    bar = tqdm(total=count, desc=desc, disable=not progress, unit="img")
    try:
        if workers > 0 and count > 1:
            with get_context("spawn").Pool(workers) as pool:
                for result in pool.imap(fn, range(count), chunksize=32):
                    bar.update()
                    yield result
        else:
            for i in range(count):
                yield fn(i)
                bar.update()
    finally:
        bar.close()


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, separators=(",", ":")) + "\n", encoding="utf-8")


def _write_detection_split(
    root: Path,
    split: str,
    count: int,
    stream: int,
    seed: int,
    params: _SceneParams,
    workers: int,
    progress: bool,
) -> tuple[Path, Path]:
    image_dir = root / "images" / split
    image_dir.mkdir(parents=True, exist_ok=True)
    render = partial(
        _render_detection_image, seed=seed, stream=stream, params=params, out_dir=image_dir
    )
    images, annotations = [], []
    for i, (labels, boxes, areas) in enumerate(
        _map(render, count, workers, f"{split} images", progress)
    ):
        images.append(
            {
                "id": i + 1,
                "file_name": f"{i + 1:06d}.png",
                "width": params.image_size,
                "height": params.image_size,
            }
        )
        for label, box, area in zip(labels, boxes, areas):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": _category_id(*divmod(label, len(SHAPES))),
                    "bbox": [float(v) for v in box],
                    "area": float(area),
                    "iscrowd": 0,
                }
            )
    ann_path = root / "annotations" / f"instances_{split}.json"
    ann_path.parent.mkdir(parents=True, exist_ok=True)
    info = {
        "description": "ovdet synthetic colour x shape open-vocabulary detection dataset",
        "version": "1",
        "split": split,
        "seed": seed,
        "image_size": params.image_size,
        "max_objects": params.max_objects,
        "object_size": list(params.object_size),
        "min_visible": params.min_visible,
        "bbox": "tight box of the visible pixels; area = number of visible pixels",
    }
    _write_json(
        ann_path,
        {
            "info": info,
            "licenses": [],
            "images": images,
            "annotations": annotations,
            "categories": synthetic_categories(),
        },
    )
    logger.info("wrote %d images, %d boxes: %s", len(images), len(annotations), ann_path)
    return image_dir, ann_path


def _write_captions(
    root: Path,
    split: str,
    count: int,
    stream: int,
    seed: int,
    params: _SceneParams,
    classes: tuple[int, ...],
    workers: int,
    progress: bool,
) -> Path:
    caption_dir = root / "captions"
    crop_dir = caption_dir / "crops" / split
    crop_dir.mkdir(parents=True, exist_ok=True)
    render = partial(
        _render_caption_crop,
        seed=seed,
        stream=stream,
        params=params,
        classes=classes,
        out_dir=crop_dir,
    )
    csv_path = caption_dir / f"{split}.csv"
    with csv_path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
        writer.writerow(["filepath", "title", "label"])
        for i, (caption, name) in enumerate(
            _map(render, count, workers, f"{split} caption crops", progress)
        ):
            writer.writerow([f"crops/{split}/{i + 1:06d}.png", caption, name])
    logger.info("wrote %d caption crops: %s", count, csv_path)
    return csv_path


def generate_synthetic_dataset(
    output_dir: str | Path,
    *,
    num_train_images: int,
    num_val_images: int,
    num_caption_crops: int,
    num_val_caption_crops: int = 0,
    image_size: int = 128,
    max_objects: int = 5,
    min_object_size: float = 14.0,
    max_object_size: float = 56.0,
    min_visible: float = 0.6,
    crop_size: int = 48,
    novel_captions: bool = True,
    seed: int = 0,
    workers: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> SyntheticDatasetInfo:
    """Generate the synthetic dataset (see the module docstring for the layout).

    Args:
        output_dir: directory to write into; must be empty or absent unless ``overwrite``.
        num_train_images: number of training detection images.
        num_val_images: number of validation detection images.
        num_caption_crops: number of crop-caption pairs for CLIP pre-training. Classes cycle, so
            every allowed class occurs once ``num_caption_crops`` reaches their number.
        num_val_caption_crops: number of held-out labelled crops (all 64 classes, whatever
            ``novel_captions``) for measuring CLIP's zero-shot accuracy; 0 writes none.
        image_size: side of the square detection images, pixels.
        max_objects: most objects per image (each image has 1..max_objects).
        min_object_size: smallest nominal object diameter, pixels.
        max_object_size: largest nominal object diameter, pixels (at most ``image_size / 1.5``).
        min_visible: least visible fraction of each object under occlusion.
        crop_size: side of the saved caption crops, pixels (the CLIP input size).
        novel_captions: if False, no novel class occurs in the pre-training captions or crops
            (the ablation where CLIP never sees the novel compositions).
        seed: random seed; the same seed gives byte-identical files.
        workers: processes to render with (0: in this process). Output does not depend on it.
        overwrite: replace the dataset files of an earlier run in ``output_dir``.
        progress: show tqdm progress bars.

    Returns:
        The paths of what was written.

    Raises:
        DataError: on bad arguments or a non-empty ``output_dir`` without ``overwrite``.
    """
    counts = {
        "num_train_images": num_train_images,
        "num_val_images": num_val_images,
        "num_caption_crops": num_caption_crops,
        "num_val_caption_crops": num_val_caption_crops,
    }
    for key, value in counts.items():
        if not isinstance(value, int) or value < 0:
            raise DataError(f"{key} must be a non-negative integer, got {value!r}")
    if image_size < 32:
        raise DataError(f"image_size must be at least 32 pixels, got {image_size}")
    if max_objects < 1:
        raise DataError(f"max_objects must be at least 1, got {max_objects}")
    if not 4 <= min_object_size <= max_object_size <= image_size / 1.5:
        raise DataError(
            f"need 4 <= min_object_size <= max_object_size <= image_size / 1.5, got "
            f"{min_object_size}, {max_object_size}, image_size {image_size}"
        )
    if not 0.0 < min_visible <= 1.0:
        raise DataError(f"min_visible must be in (0, 1], got {min_visible}")
    if crop_size < 8:
        raise DataError(f"crop_size must be at least 8 pixels, got {crop_size}")
    if workers < 0:
        raise DataError(f"workers must be >= 0, got {workers}")

    root = Path(output_dir)
    outputs = ("images", "annotations", "captions", "split.json")
    if root.exists():
        if not root.is_dir():
            raise DataError(f"output {root} exists and is not a directory")
        if any(root.iterdir()):
            if not overwrite:
                raise DataError(
                    f"output directory {root} is not empty; pass overwrite=True (--overwrite) "
                    "to replace its dataset"
                )
            for name in outputs:
                path = root / name
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()
    root.mkdir(parents=True, exist_ok=True)

    params = _SceneParams(
        image_size=image_size,
        max_objects=max_objects,
        object_size=(float(min_object_size), float(max_object_size)),
        min_visible=float(min_visible),
        crop_size=crop_size,
    )
    split = synthetic_split()
    split_file = root / "split.json"
    split_file.write_text(
        json.dumps({"base": list(split.base), "novel": list(split.novel)}, indent=2) + "\n",
        encoding="utf-8",
    )

    train_images, train_json = _write_detection_split(
        root, "train", num_train_images, _STREAM_TRAIN, seed, params, workers, progress
    )
    val_images, val_json = _write_detection_split(
        root, "val", num_val_images, _STREAM_VAL, seed, params, workers, progress
    )

    all_classes = tuple(range(len(CLASS_NAMES)))
    caption_classes = all_classes
    if not novel_captions:
        caption_classes = tuple(i for i in all_classes if split.is_base(CLASS_NAMES[i]))
    if 0 < num_caption_crops < len(caption_classes):
        logger.warning(
            "only %d caption crops for %d classes: some classes never occur in captions",
            num_caption_crops,
            len(caption_classes),
        )
    train_captions = _write_captions(
        root,
        "train",
        num_caption_crops,
        _STREAM_CAPTIONS,
        seed,
        params,
        caption_classes,
        workers,
        progress,
    )
    val_captions = None
    if num_val_caption_crops > 0:
        val_captions = _write_captions(
            root,
            "val",
            num_val_caption_crops,
            _STREAM_VAL_CAPTIONS,
            seed,
            params,
            all_classes,
            workers,
            progress,
        )
    return SyntheticDatasetInfo(
        root=root,
        train_images=train_images,
        val_images=val_images,
        train_annotations=train_json,
        val_annotations=val_json,
        split_file=split_file,
        train_captions=train_captions,
        val_captions=val_captions,
    )

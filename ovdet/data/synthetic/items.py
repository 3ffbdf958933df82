"""One item of the synthetic dataset: a detection image or a captioned crop, saved as PNG.

Every item draws from its own ``numpy.random.Generator`` seeded by ``(seed, stream, index)``,
so an item's file does not depend on which process renders it nor on how many other items are
generated. The functions here are picklable module-level functions, for a process pool.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ovdet.data.synthetic.captions import _crop_window, make_caption
from ovdet.data.synthetic.categories import CLASS_NAMES, SHAPES, _category_id
from ovdet.data.synthetic.render import Scene, render_scene
from ovdet.structures.masks import mask_to_rle

__all__: list[str] = []


@dataclass(frozen=True)
class _SceneParams:
    image_size: int
    max_objects: int
    object_size: tuple[float, float]
    min_visible: float
    crop_size: int


def _box_annotations(
    image_id: int, labels, boxes, areas, first_id: int, segmentations=None
) -> list[dict]:
    """COCO annotations of one scene's objects (ids from ``first_id``): class indices, ``[x, y,
    w, h]`` boxes, visible areas and, if given, RLE masks of the visible pixels -> annotation
    dicts."""
    annotations = [
        {
            "id": first_id + k,
            "image_id": image_id,
            "category_id": _category_id(*divmod(label, len(SHAPES))),
            "bbox": [float(v) for v in box],
            "area": float(area),
            "iscrowd": 0,
        }
        for k, (label, box, area) in enumerate(zip(labels, boxes, areas))
    ]
    for annotation, segmentation in zip(annotations, segmentations or ()):
        annotation["segmentation"] = segmentation
    return annotations


def _write_json(path: Path, data: dict) -> None:
    """Write ``data`` as compact JSON (the dataset's annotation files)."""
    path.write_text(json.dumps(data, separators=(",", ":")) + "\n", encoding="utf-8")


def _item_rng(seed: int, stream: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream, index])


def _render_and_save_scene(
    index: int, *, seed: int, stream: int, params: _SceneParams, out_dir: Path
) -> tuple[np.random.Generator, Scene]:
    """Render one scene of random objects, save it as ``out_dir/{index + 1:06d}.png``; return the
    item's random generator (for what the caller draws next) and the scene."""
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
    return rng, scene


def _render_detection_image(
    index: int, *, seed: int, stream: int, params: _SceneParams, out_dir: Path
) -> tuple[tuple[int, ...], tuple[tuple[int, int, int, int], ...], tuple[int, ...], list[dict]]:
    """Render and save one detection image; return its labels, boxes, areas and the exact
    masks of the objects' visible pixels (COCO RLE)."""
    _, scene = _render_and_save_scene(
        index, seed=seed, stream=stream, params=params, out_dir=out_dir
    )
    masks = [mask_to_rle(scene.owner == k) for k in range(len(scene.labels))]
    return scene.labels, scene.boxes, scene.areas, masks


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

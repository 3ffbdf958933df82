"""The image-labelled split of the synthetic dataset: scenes of the same kind, no boxes.

As web data would, each image comes with image-level labels (the classes of its objects, base
and novel alike) and a caption naming them ("two red circles and a blue star on a grey
background"), and nothing says where the objects are. :func:`write_image_labelled_split` writes

    images/weak/000001.png ...            the images
    annotations/image_labels_weak.json    COCO format, images with "pos_category_ids" (Detic's)
    annotations/captions_weak.json        COCO captions format, one caption per image
    annotations/instances_weak.json       the objects' boxes, COCO format, which training never
                                          reads (to measure what the image-label loss chooses)

With ``novel_captions=False`` in :func:`~ovdet.data.synthetic.generate_synthetic_dataset`, CLIP's
pre-training captions never name a novel class; this split still does, so that its image labels
and captions are the only source of the novel names (as LVIS's rare classes are for a
web-trained CLIP).
"""

from __future__ import annotations

import logging
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ovdet.data.synthetic.categories import CLASS_NAMES, SHAPES, _category_id, synthetic_categories
from ovdet.data.synthetic.items import (
    _box_annotations,
    _render_and_save_scene,
    _SceneParams,
    _write_json,
)

__all__ = ["make_scene_caption", "write_image_labelled_split"]

logger = logging.getLogger(__package__)

_NUMBERS = ("no", "a", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_PREFIXES = ("", "a photo of ", "a picture of ", "an image with ", "there are ")
_SUFFIXES = ("", " on a grey background", " in a cluttered scene", ", close up")


def _plural(name: str) -> str:
    return name + ("es" if name.endswith(("s", "x", "ch", "sh")) else "s")


def make_scene_caption(rng: np.random.Generator, labels: list[int]) -> str:
    """A web-like caption naming every object of a scene, with counts.

    Args:
        rng: the random generator (phrasing).
        labels: class indices (into :data:`CLASS_NAMES`) of the scene's objects.

    Returns:
        E.g. ``"a photo of two red circles and a blue star on a grey background"``.
    """
    counts = Counter(labels)
    order = sorted(counts, key=lambda c: labels.index(c))
    phrases = []
    for c in order:
        n, name = counts[c], CLASS_NAMES[c]
        number = _NUMBERS[n] if n < len(_NUMBERS) else str(n)
        phrases.append(f"{'an' if name[0] in 'aeiou' else 'a'} {name}" if n == 1 else
                       f"{number} {_plural(name)}")  # fmt: skip
    listed = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
    prefix = _PREFIXES[int(rng.integers(len(_PREFIXES)))]
    suffix = _SUFFIXES[int(rng.integers(len(_SUFFIXES)))]
    return prefix + listed + suffix


def _render_labelled_image(
    index: int, *, seed: int, stream: int, params: _SceneParams, out_dir: Path
) -> tuple[tuple[int, ...], tuple[tuple[int, int, int, int], ...], tuple[int, ...], str]:
    """Render and save one image; return its objects' labels, boxes and areas, and its
    caption."""
    rng, scene = _render_and_save_scene(
        index, seed=seed, stream=stream, params=params, out_dir=out_dir
    )
    caption = make_scene_caption(rng, list(scene.labels))
    return scene.labels, scene.boxes, scene.areas, caption


def write_image_labelled_split(
    root: Path,
    count: int,
    stream: int,
    seed: int,
    params: _SceneParams,
    map_fn: Callable[..., Iterator],
) -> tuple[Path, Path, Path, Path]:
    """Write the image-labelled split under ``root``.

    Args:
        root: the dataset folder.
        count: number of images.
        stream: the random stream of these images (distinct from the other splits').
        seed: the dataset's seed.
        params: the scene parameters of the detection images.
        map_fn: ``map_fn(fn, count, desc)`` yields ``fn(0) .. fn(count - 1)`` in order (the
            writer's process pool and progress bar).

    Returns:
        (image folder, image-label JSON, captions JSON, hidden boxes JSON).
    """
    image_dir = root / "images" / "weak"
    image_dir.mkdir(parents=True, exist_ok=True)
    render = partial(
        _render_labelled_image, seed=seed, stream=stream, params=params, out_dir=image_dir
    )
    images, captions, boxes = [], [], []
    items = map_fn(render, count, "image-labelled images")
    for i, (labels, scene_boxes, areas, caption) in enumerate(items):
        ids = sorted({_category_id(*divmod(label, len(SHAPES))) for label in labels})
        boxes += _box_annotations(i + 1, labels, scene_boxes, areas, len(boxes) + 1)
        images.append(
            {
                "id": i + 1,
                "file_name": f"{i + 1:06d}.png",
                "width": params.image_size,
                "height": params.image_size,
                "pos_category_ids": ids,
            }
        )
        captions.append({"id": i + 1, "image_id": i + 1, "caption": caption})
    ann_dir = root / "annotations"
    ann_dir.mkdir(parents=True, exist_ok=True)
    info = {
        "description": "ovdet synthetic dataset, image-labelled split (no boxes)",
        "seed": seed,
    }
    labels_json, captions_json = ann_dir / "image_labels_weak.json", ann_dir / "captions_weak.json"
    _write_json(labels_json, {"info": info, "images": images, "annotations": [],
                              "categories": synthetic_categories()})  # fmt: skip
    plain = [{k: v for k, v in img.items() if k != "pos_category_ids"} for img in images]
    _write_json(captions_json, {"info": info, "images": plain, "annotations": captions})
    boxes_json = ann_dir / "instances_weak.json"
    hidden = {**info, "description": info["description"] + ": the hidden boxes"}
    _write_json(boxes_json, {"info": hidden, "images": plain, "annotations": boxes,
                             "categories": synthetic_categories()})  # fmt: skip
    logger.info("wrote %d image-labelled images: %s, %s", count, labels_json, captions_json)
    return image_dir, labels_json, captions_json, boxes_json

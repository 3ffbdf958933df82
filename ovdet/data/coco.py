"""Reading COCO-format detection annotations with an open-vocabulary split.

Annotations are validated: problems that make the file unusable raise :class:`DataError`;
problems in single annotations are fixed or dropped and *counted*, with one warning per kind.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ovdet.data.segmentation import check_segmentation
from ovdet.data.splits import OpenVocabularySplit, load_split
from ovdet.utils.errors import DataError
from ovdet.utils.json_input import is_int, is_number, read_json_file

__all__ = ["DatasetRecords", "ImageRecord", "load_coco_detection"]

logger = logging.getLogger(__name__)


@dataclass
class ImageRecord:
    """One image and its kept annotations.

    Attributes:
        image_id: the COCO image id.
        path: the image file.
        width, height: from the JSON.
        boxes: float32 [K, 4] (x1, y1, x2, y2) in pixels, clipped to the image.
        labels: int64 [K] in ``1..C``, indices (+1) into the dataset's ``class_names``.
        segmentations: per annotation its checked COCO segmentation (polygons or RLE, see
            :mod:`ovdet.data.segmentation`), when loaded with masks; ``None`` otherwise.
    """

    image_id: int
    path: Path
    width: int
    height: int
    boxes: np.ndarray
    labels: np.ndarray
    segmentations: list | None = None


@dataclass
class DatasetRecords:
    """A loaded dataset: its images, the class names its labels index, and what was fixed."""

    images: list[ImageRecord]
    class_names: list[str]
    category_ids: list[int]  # COCO category id of each class, same order as class_names
    split: OpenVocabularySplit | None
    counts: Counter = field(default_factory=Counter)


def _read_json(path: Path) -> dict:
    data = read_json_file(path, "annotation file")
    if not isinstance(data, dict):
        raise DataError(f"annotation file {path} must hold a JSON object")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DataError(f"annotation file {path} has no '{key}' list")
    return data


def check_categories(categories: list, path: Path) -> None:
    """Raise :class:`DataError` unless every category of a COCO-format file has an integer
    ``id`` and a ``name``, neither used twice (box and image-label files alike)."""
    seen_ids, seen_names = set(), set()
    for cat in categories:
        if not (
            isinstance(cat, dict) and is_int(cat.get("id")) and isinstance(cat.get("name"), str)
        ):
            raise DataError(
                f"{path}: each category needs an integer 'id' and a 'name'; got {cat!r:.100}"
            )
        if cat["id"] in seen_ids:
            raise DataError(f"{path}: category id {cat['id']} is used twice")
        if cat["name"] in seen_names:
            raise DataError(f"{path}: category name {cat['name']!r} is used twice")
        seen_ids.add(cat["id"])
        seen_names.add(cat["name"])


def load_coco_detection(
    json_file: str | Path,
    image_root: str | Path,
    split: str | OpenVocabularySplit | None = None,
    keep: Sequence[str] = ("base",),
    filter_empty: bool = True,
    check_files: bool = True,
    with_masks: bool = False,
) -> DatasetRecords:
    """Load a COCO-format instances JSON for training or evaluation.

    Args:
        json_file: the instances JSON.
        image_root: the folder that ``file_name`` entries are relative to.
        split: a split spec (``"ovcoco"``, ``"lvis"``, a file) or object; ``None`` keeps every
            category as one class.
        keep: which kinds of the split to keep as classes (``("base",)`` for training: novel
            objects stay in the images, unannotated; ``("base", "novel")`` for evaluation).
        filter_empty: drop images left without annotations.
        check_files: drop (and count) images whose file does not exist.
        with_masks: also read each annotation's ``segmentation`` (``MODEL.MASK_ON``):
            polygons with fewer than 3 points are dropped, and annotations whose mask is
            missing, of another size than the image or does not decode are dropped, each
            problem counted.

    Returns:
        The records; ``counts`` tells how many annotations were clipped or dropped and why.

    Raises:
        DataError: unreadable JSON, missing lists, duplicate ids, unknown category ids.
    """
    json_file, image_root = Path(json_file), Path(image_root)
    data = _read_json(json_file)
    categories = data["categories"]
    check_categories(categories, json_file)
    if isinstance(split, str):
        split = load_split(split, categories)
    elif split is not None:
        split = split.restrict_to(categories)

    kept = [c for c in categories if split is None or split.kind(c["name"]) in keep]
    if not kept:
        raise DataError(f"{json_file}: no category of the kinds {list(keep)} in split {split}")
    contiguous = {c["id"]: i + 1 for i, c in enumerate(kept)}
    known = {c["id"] for c in categories}

    counts: Counter = Counter()
    images: dict[int, dict] = {}
    for img in data["images"]:
        ok = isinstance(img, dict) and is_int(img.get("id"))
        ok = ok and isinstance(img.get("file_name"), str) and bool(img["file_name"])
        ok = ok and all(
            is_number(img.get(k)) and math.isfinite(img[k]) and img[k] > 0
            for k in ("width", "height")
        )
        if not ok:
            raise DataError(
                f"{json_file}: each image needs an integer id, a file_name and a positive width "
                f"and height; got {img!r:.100}"
            )
        images[img["id"]] = img

    per_image: dict[int, tuple[list, list, list]] = {i: ([], [], []) for i in images}
    for ann in data["annotations"]:
        try:
            image_id, cat_id, bbox = ann["image_id"], ann["category_id"], ann["bbox"]
        except (KeyError, TypeError) as e:
            raise DataError(f"{json_file}: annotation {ann!r:.100} lacks {e}") from e
        if not (is_int(image_id) and is_int(cat_id)):
            raise DataError(
                f"{json_file}: annotation {ann.get('id')!r:.20} needs an integer image_id and "
                "category_id"
            )
        if cat_id not in known:
            raise DataError(
                f"{json_file}: annotation {ann.get('id')} has unknown category id {cat_id}"
            )
        if image_id not in images:
            raise DataError(f"{json_file}: annotation {ann.get('id')} has unknown image id")
        if ann.get("iscrowd", 0):
            counts["crowd annotations ignored"] += 1
            continue
        if cat_id not in contiguous:
            counts["annotations of other split kinds removed"] += 1
            continue
        if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4 and all(map(is_number, bbox))):
            counts["malformed boxes dropped"] += 1
            continue
        x, y, w, h = (float(v) for v in bbox)
        if not np.isfinite([x, y, w, h]).all() or w <= 0 or h <= 0:
            counts["degenerate boxes dropped"] += 1
            continue
        img = images[image_id]
        img_w, img_h = float(img["width"]), float(img["height"])
        x1, y1, x2, y2 = max(x, 0.0), max(y, 0.0), min(x + w, img_w), min(y + h, img_h)
        if x2 - x1 < 1 or y2 - y1 < 1:
            counts["boxes outside the image dropped"] += 1
            continue
        segmentation = None
        if with_masks:
            segmentation, problems = check_segmentation(
                ann.get("segmentation"), int(img["width"]), int(img["height"])
            )
            counts.update(problems)
            if segmentation is None:
                continue
        if (x1, y1, x2, y2) != (x, y, x + w, y + h):
            counts["boxes clipped to the image"] += 1
        per_image[image_id][0].append((x1, y1, x2, y2))
        per_image[image_id][1].append(contiguous[cat_id])
        per_image[image_id][2].append(segmentation)

    records = []
    for image_id, img in images.items():
        boxes, labels, segmentations = per_image[image_id]
        if not boxes and filter_empty:
            counts["images without annotations dropped"] += 1
            continue
        path = image_root / img["file_name"]
        if check_files and not path.is_file():
            counts["images with a missing file dropped"] += 1
            continue
        records.append(
            ImageRecord(
                image_id=image_id,
                path=path,
                width=int(img["width"]),
                height=int(img["height"]),
                boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
                labels=np.asarray(labels, dtype=np.int64),
                segmentations=segmentations if with_masks else None,
            )
        )
    for what, n in sorted(counts.items()):
        if what != "annotations of other split kinds removed":
            logger.warning("%s: %d %s", json_file.name, n, what)
    if not records:
        raise DataError(f"{json_file}: no usable image left ({dict(counts)})")
    logger.info(
        "Loaded %s: %d images, %d classes, %d boxes",
        json_file.name,
        len(records),
        len(kept),
        sum(len(r.labels) for r in records),
    )
    return DatasetRecords(
        images=records,
        class_names=[c["name"] for c in kept],
        category_ids=[c["id"] for c in kept],
        split=split,
        counts=counts,
    )

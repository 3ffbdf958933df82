"""Writing the synthetic dataset to disk: images, COCO json, the split and caption CSVs.

:func:`generate_synthetic_dataset` validates its arguments, renders every item (in a process
pool when asked) and writes the layout described in :mod:`ovdet.data.synthetic`;
:data:`PRESETS` names its usual sizes.
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
from dataclasses import dataclass
from functools import partial
from multiprocessing import get_context
from pathlib import Path
from typing import Callable, Iterator

from tqdm import tqdm

from ovdet.data.synthetic.categories import (
    CLASS_NAMES,
    synthetic_categories,
    synthetic_split,
)
from ovdet.data.synthetic.image_labels import write_image_labelled_split
from ovdet.data.synthetic.items import (
    _box_annotations,
    _render_caption_crop,
    _render_detection_image,
    _SceneParams,
    _write_json,
)
from ovdet.utils.errors import DataError

__all__ = [
    "PRESETS",
    "SyntheticDatasetInfo",
    "generate_synthetic_dataset",
    "write_exemplar_split",
]

# The package's logger, as before the package was split into modules.
logger = logging.getLogger(__package__)

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
_STREAM_TRAIN, _STREAM_VAL, _STREAM_CAPTIONS, _STREAM_VAL_CAPTIONS, _STREAM_WEAK = range(5)
_STREAM_EXEMPLAR = 5


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
        weak_images: directory of the image-labelled images (no boxes), ``None`` if none.
        weak_labels: their COCO JSON with ``pos_category_ids`` (base and novel classes).
        weak_captions: their COCO captions JSON (one caption per image naming its objects).
        weak_boxes: their objects' boxes, COCO instances JSON, which training never reads (for
            analysis, e.g. ``benchmarks/weak_region_quality.py``).
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
    weak_images: Path | None = None
    weak_labels: Path | None = None
    weak_captions: Path | None = None
    weak_boxes: Path | None = None


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
    for i, (labels, boxes, areas, masks) in enumerate(
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
        annotations += _box_annotations(i + 1, labels, boxes, areas, len(annotations) + 1, masks)
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
        "segmentation": "RLE of the visible pixels: the exact mask the shape was drawn with",
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
    num_weak_images: int = 0,
    seed: int = 0,
    workers: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> SyntheticDatasetInfo:
    """Generate the synthetic dataset (see :mod:`ovdet.data.synthetic` for the layout).

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
        num_weak_images: number of image-labelled images (scenes of the same kind with image
            labels and a caption naming base and novel objects, no boxes; see
            :mod:`ovdet.data.synthetic.image_labels`); 0 writes none.
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
        "num_weak_images": num_weak_images,
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
    weak = (None, None, None, None)
    if num_weak_images > 0:
        weak = write_image_labelled_split(
            root,
            num_weak_images,
            _STREAM_WEAK,
            seed,
            params,
            lambda fn, count, desc: _map(fn, count, workers, desc, progress),
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
        weak_images=weak[0],
        weak_labels=weak[1],
        weak_captions=weak[2],
        weak_boxes=weak[3],
    )


def write_exemplar_split(
    output_dir: str | Path,
    num_images: int,
    *,
    image_size: int = 128,
    max_objects: int = 5,
    min_object_size: float = 14.0,
    max_object_size: float = 56.0,
    min_visible: float = 0.6,
    crop_size: int = 48,
    seed: int = 0,
    workers: int = 0,
    progress: bool = True,
    **unused,
) -> tuple[Path, Path]:
    """Scenes apart from the train and val images (their own random stream), of the same kind,
    with every box: where image exemplars of the classes are taken from
    (:mod:`ovdet.ovbench.exemplars`). The scene keywords are those of
    :func:`generate_synthetic_dataset` (its other keywords are ignored).

    Returns:
        (``output_dir/images/exemplar``, ``output_dir/annotations/instances_exemplar.json``).
    """
    params = _SceneParams(
        image_size=image_size,
        max_objects=max_objects,
        object_size=(float(min_object_size), float(max_object_size)),
        min_visible=float(min_visible),
        crop_size=crop_size,
    )
    return _write_detection_split(
        Path(output_dir), "exemplar", num_images, _STREAM_EXEMPLAR, seed, params, workers, progress
    )

"""Zero-shot classification accuracy of a CLIP: on labelled crops (a caption CSV) or on the
ground-truth boxes of a COCO file (cropped as the ViLD teacher crops proposals)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ovdet.data.splits import OpenVocabularySplit
from ovdet.utils.errors import DataError

__all__ = ["box_zero_shot_accuracy", "crop_zero_shot_accuracy"]


def _read_labelled_crops(
    captions_csv: Path, image_column: str, label_column: str, separator: str
) -> list[tuple[Path, str]]:
    if not captions_csv.is_file():
        raise DataError(f"caption CSV {captions_csv} does not exist")
    with open(captions_csv, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter=separator))
    if not rows or label_column not in rows[0] or image_column not in rows[0]:
        raise DataError(
            f"{captions_csv} needs {image_column!r} and {label_column!r} columns separated by "
            f"{separator!r}"
        )
    return [(captions_csv.parent / r[image_column], r[label_column]) for r in rows]


def _text_classifier(clip, names: list[str], templates: str) -> torch.Tensor:
    from ovdet.clip.text_classifier import TextClassifierBuilder, Vocabulary

    return TextClassifierBuilder(clip, templates, cache_dir="")(Vocabulary.from_names(names))


def _accuracy_by_group(predicted, truth, is_novel) -> dict[str, float]:
    """Top-1 accuracy of all / base / novel items (``nan`` for a group without items)."""
    correct = torch.as_tensor(predicted) == torch.as_tensor(truth)
    is_novel = torch.as_tensor(is_novel, dtype=torch.bool)
    groups = {"all": torch.ones_like(is_novel), "base": ~is_novel, "novel": is_novel}
    result = {}
    for group, member in groups.items():
        result[group] = correct[member].float().mean().item() if member.any() else float("nan")
    result["num_crops"] = len(truth)
    return result


@torch.no_grad()
def crop_zero_shot_accuracy(
    clip,
    captions_csv: str | Path,
    split: OpenVocabularySplit,
    templates: str = "a",
    batch_size: int = 256,
    image_column: str = "filepath",
    label_column: str = "label",
    separator: str = "\t",
) -> dict[str, float]:
    """Top-1 accuracy of CLIP classifying each crop among all ``split`` classes.

    Args:
        clip: a loaded CLIP (:class:`ovdet.clip.ClipBackend`) or a CLIP spec string.
        captions_csv: a CSV with ``filepath`` and ``label`` columns (the synthetic dataset's
            ``captions/val.csv``).
        split: base and novel class names; the vocabulary is their union.
        templates: prompt templates (see :func:`ovdet.clip.text_classifier.load_templates`).
        batch_size: crops per image-tower call.
        image_column, label_column: the CSV's columns of crop paths and class names.
        separator: the CSV's column separator.

    Returns:
        ``{"all": acc, "base": acc, "novel": acc}`` over the crops of each group (``nan`` for a
        group without crops), and ``num_crops``.
    """
    from ovdet.clip import load_clip

    clip = load_clip(clip) if isinstance(clip, str) else clip
    names = list(split.base) + list(split.novel)
    text = _text_classifier(clip, names, templates)
    index = {n.lower(): i for i, n in enumerate(names)}
    crops = _read_labelled_crops(Path(captions_csv), image_column, label_column, separator)
    unknown = sorted({label for _, label in crops if label.lower() not in index})
    if unknown:
        raise DataError(f"crop labels outside the split: {unknown[:5]}")
    mean = torch.tensor(clip.mean).view(1, 3, 1, 1)
    std = torch.tensor(clip.std).view(1, 3, 1, 1)
    predictions = []
    for start in range(0, len(crops), batch_size):
        batch = [
            np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) / 255.0
            for p, _ in crops[start : start + batch_size]
        ]
        pixels = torch.stack([torch.from_numpy(a).permute(2, 0, 1) for a in batch])
        pixels = F.interpolate(pixels, size=(clip.image_size,) * 2, mode="bilinear")
        features = F.normalize(clip.encode_image((pixels - mean) / std), dim=-1)
        predictions.append((features @ text.t()).argmax(dim=1))
    predicted = torch.cat(predictions).tolist()
    truth = [index[label.lower()] for _, label in crops]
    return _accuracy_by_group(predicted, truth, [t >= len(split.base) for t in truth])


@torch.no_grad()
def box_zero_shot_accuracy(
    clip,
    gt_json: str | Path,
    image_root: str | Path,
    split: OpenVocabularySplit | str | None = None,
    templates: str = "a",
    crop_scales: tuple[float, ...] = (1.0, 1.5),
    max_load_pixels: int = 0,
    progress: bool = False,
) -> dict[str, float]:
    """Top-1 accuracy of CLIP classifying the ground-truth boxes of a COCO file.

    Each box is cropped at ``crop_scales`` (ViLD's teacher: the box and 1.5x the box), embedded
    by :class:`~ovdet.core.teacher.ClipRegionTeacher` and classified among all the file's
    categories; accuracy is reported for base and novel boxes by ``split``.

    Args:
        clip: a loaded CLIP (:class:`ovdet.clip.ClipBackend`) or a CLIP spec string.
        gt_json, image_root: the COCO file and the folder of its images.
        split: base/novel split (spec or object); ``None``: every category is base.
        templates: prompt templates (see :func:`ovdet.clip.text_classifier.load_templates`).
        crop_scales: box scales cropped and averaged, as the teacher does.
        max_load_pixels: downscale larger images while reading (0: never).
        progress: a progress bar over images.

    Returns:
        ``{"all", "base", "novel"}`` accuracies (``nan`` for a group without boxes) and
        ``num_crops``.

    Raises:
        DataError: no boxes in the file.
    """
    from tqdm import tqdm

    from ovdet.clip import load_clip
    from ovdet.core.novel_classes import novel_class_mask
    from ovdet.core.teacher import ClipRegionTeacher
    from ovdet.data.coco import load_coco_detection
    from ovdet.data.image_io import read_image

    clip = load_clip(clip) if isinstance(clip, str) else clip
    records = load_coco_detection(str(gt_json), str(image_root), split=None, filter_empty=True)
    if not records.images:
        raise DataError(f"{gt_json} has no image with a box to classify")
    names = records.class_names
    text = _text_classifier(clip, names, templates)
    if isinstance(split, str):
        from ovdet.data.splits import load_split

        split = load_split(split)
    is_novel_class = (
        novel_class_mask(names, list(split.base)).tolist() if split else [False] * len(names)
    )
    teacher = ClipRegionTeacher.from_clip(clip, crop_scales)
    predicted, truth = [], []
    for record in tqdm(records.images, desc="CLIP on boxes", disable=not progress, unit="img"):
        image = read_image(record.path, max_load_pixels)
        height, width = image.shape[:2]
        boxes = torch.as_tensor(record.boxes, dtype=torch.float32).reshape(-1, 4)
        scale = torch.tensor([width / record.width, height / record.height] * 2)
        pixels = torch.tensor(image).permute(2, 0, 1).float().div(255.0)[None]  # read-only array
        embeddings = teacher(pixels, [boxes * scale])
        predicted.extend((embeddings @ text.t().to(embeddings.dtype)).argmax(dim=1).tolist())
        truth.extend(int(c) - 1 for c in record.labels)  # labels are 1..C
    return _accuracy_by_group(predicted, truth, [is_novel_class[t] for t in truth])

"""Aggregating per-category precision into base / novel / all average precision.

Both pycocotools' ``COCOeval`` and lvis' ``LVISEval`` accumulate a precision array indexed by
IoU threshold, recall threshold and category. Averaging the entries of a subset of categories
exactly as their ``summarize`` does (the mean of every entry that is not ``-1``, the marker of a
category without ground truth) gives AP for any group of categories; for all categories it
reproduces the library's own summary number for number.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ovdet.data.splits import OpenVocabularySplit, load_split
from ovdet.utils.errors import DataError

__all__ = ["GROUPS", "resolve_split", "mean_precision", "aggregate_precision"]

# Rows of the summary, in order: every evaluated category, then the two halves of the split.
GROUPS = ("all", "base", "novel")


def resolve_split(
    split: OpenVocabularySplit | str | None, categories: Sequence[dict]
) -> OpenVocabularySplit:
    """The split restricted to (and ordered like) a dataset's categories.

    Args:
        split: a split, a spec for :func:`~ovdet.data.splits.load_split` (``"ovcoco"``,
            ``"lvis"`` or a file path), or ``None`` to make every category base.
        categories: the ground truth's ``categories`` entries.

    Raises:
        DataError: if the spec is bad, or no category of the dataset is base or novel.
    """
    if split is None:
        return OpenVocabularySplit(tuple(c["name"] for c in categories), (), name="none")
    if isinstance(split, str):
        resolved = load_split(split, categories)
    else:
        resolved = split.restrict_to(categories)
    if not resolved.all:
        raise DataError(
            f"split {resolved.name!r}: none of the dataset's {len(categories)} categories is "
            "base or novel; is it the right split for these annotations?"
        )
    return resolved


def mean_precision(
    precision: np.ndarray,
    iou_thrs: np.ndarray,
    cat_indices: Sequence[int],
    iou: float | None = None,
) -> float | None:
    """Average precision over some categories, computed as ``COCOeval.summarize`` does.

    Args:
        precision: ``ndarray[T, R, K]``, precision per IoU threshold, recall threshold and
            category (one area range and max-detections setting already selected); ``-1`` marks
            a category without ground truth.
        iou_thrs: ``ndarray[T]``, the IoU thresholds.
        cat_indices: indices into ``K`` of the categories to average over.
        iou: a single IoU threshold (e.g. 0.5 for AP50), or ``None`` for the mean over all.

    Returns:
        The mean of the selected entries that are not ``-1``, or ``None`` when there are none
        (no selected category has ground truth).
    """
    s = precision
    if iou is not None:
        s = s[np.where(iou == iou_thrs)[0]]
    s = s[:, :, list(cat_indices)]
    valid = s[s > -1]
    return float(np.mean(valid)) if valid.size else None


def aggregate_precision(
    precision: np.ndarray,
    iou_thrs: np.ndarray,
    names: Sequence[str],
    split: OpenVocabularySplit,
) -> dict:
    """Per-category and per-group AP and AP50.

    Args:
        precision: ``ndarray[T, R, K]`` as for :func:`mean_precision`.
        iou_thrs: ``ndarray[T]``, the IoU thresholds.
        names: ``K`` category names, in the order of the precision array.
        split: assigns each name to base, novel or neither; categories in neither are left out
            of every group and of ``per_category``.

    Returns:
        ``{"all" | "base" | "novel": {"AP", "AP50", "num_categories"}, "per_category": {name:
        {"AP", "AP50", "kind"}}}``. ``num_categories`` counts the group's categories that have
        ground truth; a group without any has AP ``None``.
    """
    if precision.shape[2] != len(names):
        raise ValueError(f"precision has {precision.shape[2]} categories, got {len(names)} names")
    per_category = {}
    members: dict[str, list[int]] = {group: [] for group in GROUPS}
    for k, name in enumerate(names):
        kind = split.kind(name)
        if kind is None or not (precision[:, :, k] > -1).any():
            continue
        members["all"].append(k)
        members[kind].append(k)
        per_category[name] = {
            "AP": mean_precision(precision, iou_thrs, [k]),
            "AP50": mean_precision(precision, iou_thrs, [k], iou=0.5),
            "kind": kind,
        }
    metrics: dict = {
        group: {
            "AP": mean_precision(precision, iou_thrs, idx),
            "AP50": mean_precision(precision, iou_thrs, idx, iou=0.5),
            "num_categories": len(idx),
        }
        for group, idx in members.items()
    }
    metrics["per_category"] = per_category
    return metrics

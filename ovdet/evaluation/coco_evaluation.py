"""Open-vocabulary box or mask AP on COCO-format data: base, novel and all categories.

This is the OV-COCO protocol of OVR-CNN / ViLD / Detic in the *generalized* setting: the detector
sees base and novel names together, pycocotools' ``COCOeval`` scores each category once, and the
per-category precision is averaged over the base, the novel and all (base + novel) categories.
Categories in neither half of the split (the 15 COCO classes OV-COCO drops) are removed, ground
truth and detections alike, before ``COCOeval`` runs, so they affect nothing. Mask AP
(``iou_type="segm"``) is ``COCOeval``'s on the ``segmentation`` of ground truth and detections.
"""

from __future__ import annotations

import contextlib
import io
import logging

from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ovdet.data.splits import OpenVocabularySplit
from ovdet.evaluation.aggregation import aggregate_precision, resolve_split
from ovdet.evaluation.ground_truth import GroundTruth, load_ground_truth
from ovdet.evaluation.results import Results, load_results
from ovdet.evaluation.table import format_percent
from ovdet.utils.errors import DataError

__all__ = ["evaluate_coco"]

logger = logging.getLogger(__name__)


def _quiet():
    """Swallow the progress chatter pycocotools prints to stdout."""
    return contextlib.redirect_stdout(io.StringIO())


def _coco_from_dataset(dataset: dict) -> COCO:
    coco = COCO()
    coco.dataset = dataset
    with _quiet():
        coco.createIndex()
    return coco


def _restricted_ground_truth(dataset: dict, keep: set[int], iou_type: str = "bbox") -> dict:
    """A copy of ``dataset`` with only the categories in ``keep`` and their annotations.

    Annotations are copied (``COCOeval`` writes into them) and given the ``area`` and ``iscrowd``
    fields ``COCOeval`` needs when a hand-made file leaves them out.
    """
    annotations = []
    for ann in dataset["annotations"]:
        if ann["category_id"] in keep:
            if iou_type == "segm" and not ann.get("segmentation"):
                raise DataError(
                    f"mask AP needs a segmentation in every ground-truth annotation; annotation "
                    f"{ann.get('id')} has none"
                )
            ann = dict(ann)
            ann.setdefault("area", float(ann["bbox"][2] * ann["bbox"][3]))
            ann.setdefault("iscrowd", 0)
            annotations.append(ann)
    return {
        "info": dataset.get("info", {}),
        "images": dataset["images"],
        "categories": [c for c in dataset["categories"] if c["id"] in keep],
        "annotations": annotations,
    }


def evaluate_coco(
    gt: GroundTruth,
    results: Results,
    split: OpenVocabularySplit | str | None = None,
    iou_type: str = "bbox",
) -> dict:
    """Box or mask AP of COCO-format detections, per category and averaged over base / novel /
    all.

    Args:
        gt: the ground truth: a COCO JSON path, a dataset dict or a pycocotools ``COCO``.
        results: the detections: a COCO results JSON path or a list of dicts, validated by
            :func:`~ovdet.evaluation.results.load_results`.
        split: the base/novel split, a spec for :func:`~ovdet.data.splits.load_split`
            (``"ovcoco"``, a file path), or ``None`` to treat every category as base.
            Categories are matched by name.
        iou_type: ``"bbox"`` (box AP) or ``"segm"`` (mask AP: every detection and ground-truth
            annotation needs a ``segmentation``, RLE or polygons).

    Returns:
        A dict::

            {
                "all" | "base" | "novel": {"AP": float, "AP50": float, "num_categories": int},
                "per_category": {name: {"AP": float, "AP50": float, "kind": "base" | "novel"}},
                "num_detections": int,   # detections read, including ignored categories
                "split": str,            # the split's name
                "iou_type": "bbox" | "segm",
            }

        AP is COCO's mean over IoU 0.50:0.95 (``COCOeval.stats[0]``), AP50 at IoU 0.5
        (``stats[1]``), both at 100 detections per image, in [0, 1]. Categories without ground
        truth are left out of every average, as ``COCOeval`` does; a group with no category
        with ground truth has AP ``None``.

    Raises:
        DataError: if the ground truth or the split is bad.
        ResultsError: if the results are bad.
    """
    dataset = load_ground_truth(gt)
    detections = load_results(results, dataset, iou_type)
    split = resolve_split(split, dataset["categories"])
    keep = {c["id"] for c in dataset["categories"] if split.kind(c["name"]) is not None}

    gt_coco = _coco_from_dataset(_restricted_ground_truth(dataset, keep, iou_type))
    kept = [d for d in detections if d["category_id"] in keep]
    if len(kept) < len(detections):
        logger.info(
            "Ignoring %d detections of categories outside split %r",
            len(detections) - len(kept),
            split.name,
        )
    if kept:
        with _quiet():
            dt_coco = gt_coco.loadRes(kept)
    else:
        # loadRes cannot take an empty list; an empty result set scores 0 on every category.
        dt_coco = _coco_from_dataset({**gt_coco.dataset, "annotations": []})

    coco_eval = COCOeval(gt_coco, dt_coco, iouType=iou_type)
    with _quiet():
        coco_eval.evaluate()
        coco_eval.accumulate()

    params = coco_eval.params
    # precision: [T, R, K, A, M]; area range "all", the largest max-detections (100).
    precision = coco_eval.eval["precision"][:, :, :, params.areaRngLbl.index("all"), -1]
    names = [gt_coco.cats[cat_id]["name"] for cat_id in params.catIds]
    metrics = aggregate_precision(precision, params.iouThrs, names, split)
    metrics["num_detections"] = len(detections)
    metrics["split"] = split.name
    metrics["iou_type"] = iou_type
    logger.info(
        "COCO %s AP on %d images, %d detections, split %r: %s",
        "box" if iou_type == "bbox" else "mask",
        len(params.imgIds),
        len(detections),
        split.name,
        ", ".join(
            f"{g} AP50 {format_percent(metrics[g]['AP50'])}" for g in ("all", "base", "novel")
        ),
    )
    return metrics

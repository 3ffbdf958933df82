"""Open-vocabulary box AP on LVIS: AP, AP50 and APr / APc / APf through the ``lvis`` package.

LVIS is federated: an image is annotated exhaustively only for some categories, so ``LVISEval``
ignores detections of categories neither present in nor verified absent from
(``neg_category_ids``) an image, and unmatched detections of ``not_exhaustive_category_ids``.
The OV-LVIS protocol (ViLD, Detic) trains without the rare (``r``) categories and reports APr;
base / novel here default to that split (rare = novel).
"""

from __future__ import annotations

import contextlib
import io
import logging
from typing import Any, Iterator

import numpy as np

from ovdet.data.splits import OpenVocabularySplit
from ovdet.evaluation.aggregation import aggregate_precision, resolve_split
from ovdet.evaluation.ground_truth import GroundTruth, load_ground_truth
from ovdet.evaluation.results import Results, load_results
from ovdet.evaluation.table import format_percent
from ovdet.utils.errors import DataError

__all__ = ["evaluate_lvis"]

logger = logging.getLogger(__name__)

_IMAGE_KEYS = ("neg_category_ids", "not_exhaustive_category_ids")
_SUMMARY_KEYS = ("AP", "AP50", "APr", "APc", "APf")


def _index_without_file(cls: type, dataset: dict) -> Any:
    """An ``LVIS`` (or subclass) object indexing a parsed dataset dict.

    ``LVIS.__init__`` only reads files and ``LVISResults.__init__`` fails on an empty result list,
    so the object is set up the way both constructors finish: a ``dataset`` and its index.
    """
    obj = cls.__new__(cls)
    obj.logger = logging.getLogger(cls.__module__)
    obj.dataset = dataset
    obj._create_index()
    return obj


@contextlib.contextmanager
def _numpy_float_alias() -> Iterator[None]:
    """Provide ``np.float`` while ``LVISEval`` runs.

    lvis 0.5.3 (the latest release) calls the ``np.float`` alias that numpy 1.24 removed.
    """
    if hasattr(np, "float"):
        yield
        return
    np.float = float
    try:
        yield
    finally:
        del np.float


@contextlib.contextmanager
def _quiet_logger(name: str) -> Iterator[None]:
    """Drop a logger's messages below ERROR for the duration of the block."""
    log = logging.getLogger(name)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def _lvis_ground_truth(dataset: dict) -> dict:
    """A copy of an LVIS dataset, checked for the fields ``LVISEval`` reads.

    Annotations are copied (``LVISEval`` writes into them) and get a default ``area``.
    """
    for i, img in enumerate(dataset["images"]):
        missing = [k for k in _IMAGE_KEYS if not isinstance(img.get(k), list)]
        if missing:
            raise DataError(
                f"LVIS ground truth: images[{i}] has no {' / '.join(missing)} list; "
                "is this an LVIS annotation file?"
            )
    for cat in dataset["categories"]:
        if cat.get("frequency") not in ("r", "c", "f"):
            raise DataError(
                f"LVIS ground truth: category {cat['name']!r} has no 'frequency' of r/c/f; "
                "is this an LVIS annotation file?"
            )
    annotations = []
    for ann in dataset["annotations"]:
        ann = dict(ann)
        ann.setdefault("area", float(ann["bbox"][2] * ann["bbox"][3]))
        annotations.append(ann)
    return {**dataset, "annotations": annotations}


def evaluate_lvis(
    gt: GroundTruth,
    results: Results,
    split: OpenVocabularySplit | str | None = None,
    max_dets: int = 300,
    iou_type: str = "bbox",
) -> dict:
    """Box AP of detections on LVIS, with ``lvis.LVISEval``.

    Args:
        gt: the LVIS ground truth: a JSON path, a dataset dict or an ``lvis.LVIS``.
        results: the detections: a COCO results JSON path or a list of dicts, validated by
            :func:`~ovdet.evaluation.results.load_results`.
        split: the base/novel split for the ``base``/``novel`` rows; ``None`` or ``"lvis"``
            makes the rare categories novel (the OV-LVIS protocol).
        max_dets: detections kept per image, by score (LVIS's official value is 300).
        iou_type: ``"bbox"`` (box AP) or ``"segm"`` (mask AP, e.g. mask APr: every detection
            and ground-truth annotation needs a ``segmentation``).

    Returns:
        ``LVISEval``'s ``"AP"``, ``"AP50"``, ``"APr"``, ``"APc"``, ``"APf"`` (in [0, 1], ``None``
        for a frequency group without ground truth), plus ``"all"``, ``"base"``, ``"novel"``,
        ``"per_category"``, ``"num_detections"`` and ``"split"`` as in
        :func:`~ovdet.evaluation.coco_evaluation.evaluate_coco` (``all`` covers the split's
        categories, so with the default split ``all.AP == AP`` and ``novel.AP == APr``).

    Raises:
        DataError: if the ground truth is not a valid LVIS dataset or the split is bad.
        ResultsError: if the results are bad.
    """
    dataset = _lvis_ground_truth(load_ground_truth(gt))
    detections = load_results(results, dataset, iou_type)
    split = resolve_split("lvis" if split is None else split, dataset["categories"])
    if iou_type == "segm":
        bare = next((a for a in dataset["annotations"] if not a.get("segmentation")), None)
        if bare is not None:
            raise DataError(
                "mask AP needs a segmentation in every ground-truth annotation; annotation "
                f"{bare.get('id')} has none"
            )

    # Imported here: lvis pulls in matplotlib and OpenCV, and configures the root logger.
    from lvis import LVIS, LVISEval, LVISResults

    lvis_gt = _index_without_file(LVIS, dataset)
    if detections:
        # The detections are validated already: silence LVISResults' warning that they are not.
        with contextlib.redirect_stdout(io.StringIO()), _quiet_logger(LVISResults.__module__):
            lvis_dt = LVISResults(lvis_gt, detections, max_dets=max_dets)
    else:
        lvis_dt = _index_without_file(LVISResults, {**dataset, "annotations": []})
    lvis_eval = LVISEval(lvis_gt, lvis_dt, iou_type=iou_type)
    lvis_eval.params.max_dets = max_dets
    with _numpy_float_alias():
        lvis_eval.run()

    summary = lvis_eval.get_results()
    metrics: dict = {
        key: (None if summary[key] < 0 else float(summary[key])) for key in _SUMMARY_KEYS
    }
    params = lvis_eval.params
    # precision: [T, R, K, A]; area range "all".
    precision = lvis_eval.eval["precision"][:, :, :, params.area_rng_lbl.index("all")]
    names = [lvis_gt.cats[cat_id]["name"] for cat_id in params.cat_ids]
    metrics.update(aggregate_precision(precision, params.iou_thrs, names, split))
    metrics["num_detections"] = len(detections)
    metrics["split"] = split.name
    metrics["iou_type"] = iou_type
    logger.info(
        "LVIS %s AP on %d images, %d detections: %s",
        "box" if iou_type == "bbox" else "mask",
        len(params.img_ids),
        len(detections),
        ", ".join(f"{k} {format_percent(metrics[k])}" for k in _SUMMARY_KEYS),
    )
    return metrics

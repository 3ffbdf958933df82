"""The benchmark's mask rows (``--masks``): box and mask AP50 of one detector, and what masks cost.

:data:`~ovdet.ovbench.plan.MASK_DETECTOR` is the quick start's best recipe (ViLD-text +
ViLD-image, the detector ``vild``) with the class-agnostic mask head, trained on the base
classes' boxes and masks. It predicts as the best row of ``vild`` predicts
(:func:`mask_prediction`: with CLIP rescoring or without). Its detections on the validation
images (every class name in the vocabulary, as the other rows) are scored twice by pycocotools:
on their boxes (``iouType bbox``) and on their masks (``iouType segm``), base / novel / all. Its
inference time with masks is measured against the same checkpoint with the mask branch switched
off (the same weights, so the same detections), on the same validation images. Target (at the
default size): novel mask AP50 at least 0.8 x its novel box AP50.
"""

from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ovdet.ovbench.plan import MASK_DETECTOR, METHODS, Method
from ovdet.ovbench.timing import TIMING_ROUNDS, time_against

__all__ = [
    "MIN_MASK_TO_BOX_AP50",
    "check_mask_annotations",
    "evaluate_masks",
    "mask_prediction",
    "mask_row_label",
    "mask_targets",
    "masks_off",
    "time_masks_against_boxes",
]

logger = logging.getLogger(__name__)

#: The box-trained detector whose recipe :data:`~ovdet.ovbench.plan.MASK_DETECTOR` has.
_RECIPE = "vild"

#: The target: novel mask AP50 at least this fraction of the same detector's novel box AP50.
MIN_MASK_TO_BOX_AP50 = 0.8


def mask_prediction(metrics: dict) -> Method:
    """The row of the detector ``vild`` (the mask detector's recipe without masks) with the
    highest novel AP50 in ``metrics``: the mask detector predicts as it does."""
    from ovdet.ovbench.targets import ap50

    rows = [m for m in METHODS if m.detector == _RECIPE and m.open_vocabulary and m.key in metrics]
    return max(rows, key=lambda m: ap50(metrics, m.key, "novel"))


def mask_row_label(row: Method) -> str:
    """The label of the mask rows predicted as ``row``: ``"<row's label> + mask head"``."""
    return f"{row.description} + mask head"


def _detector(checkpoint: Path, prediction: str, device: str):
    """The checkpoint as an :class:`~ovdet.api.OVDetector` predicting by ``prediction``."""
    from ovdet.api import OVDetector
    from ovdet.utils.errors import ConfigError

    if prediction not in ("detector", "clip_rescoring"):
        raise ConfigError(f"the mask rows predict as an ovdet row, not by {prediction!r}")
    detector = OVDetector.from_checkpoint(checkpoint, device=device)
    if prediction == "clip_rescoring":
        detector.enable_clip_rescoring(True)
    return detector


@contextmanager
def masks_off(model) -> Iterator[None]:
    """Inside the block, ``model`` (an :class:`~ovdet.tv.OpenVocabularyFasterRCNN` with a mask
    head) predicts boxes only: torchvision's ``RoIHeads.has_mask()`` is false without a
    ``mask_predictor``. Every other weight, hence every detection, stays the same."""
    heads = model.roi_heads
    predictor = heads.mask_predictor
    heads.mask_predictor = None
    try:
        yield
    finally:
        heads.mask_predictor = predictor


def time_masks_against_boxes(
    checkpoint: Path,
    gt_json: Path,
    image_root: Path,
    device: str,
    prediction: str = "detector",
    rounds: int = TIMING_ROUNDS,
) -> dict:
    """Seconds of inference over every image of ``gt_json`` with masks and with boxes only.

    One checkpoint of :data:`~ovdet.ovbench.plan.MASK_DETECTOR` predicting by ``prediction``
    (``"detector"`` or ``"clip_rescoring"``), its own score threshold
    (``MODEL.ROI_HEADS.SCORE_THRESH_TEST``, what ``ovdet-infer`` keeps), every category of the
    ground truth in the vocabulary; each pass loads and resizes the images, runs the detector
    and, with masks, pastes each mask into its image and encodes it as an RLE (COCO results).
    Timed by :func:`~ovdet.ovbench.timing.time_against` (interleaved rounds, one thread).

    Returns:
        ``ratio`` (masks / boxes, the median over the rounds), ``ratios`` (each round's),
        ``boxes_s`` and ``masks_s`` (the median seconds of a pass), ``images``, ``rounds``,
        ``score_thresh``, ``detections_per_image`` (mean, with masks) and ``torch_threads``.
    """
    from ovdet.data.coco import load_coco_detection
    from ovdet.tv.engine.inference import inference_on_records

    detector = _detector(checkpoint, prediction, device)
    records = load_coco_detection(str(gt_json), str(image_root), split=None, filter_empty=False)
    detector.set_classes(records.class_names)
    model, cfg = detector.model, detector.cfg

    def run(masks: bool) -> int:
        if masks:
            return len(inference_on_records(model, records, cfg, device, progress=False))
        with masks_off(model):
            return len(inference_on_records(model, records, cfg, device, progress=False))

    timed = time_against(run, rounds)
    return {
        "ratio": timed["ratio"],
        "ratios": timed["ratios"],
        "boxes_s": timed["reference_s"],
        "masks_s": timed["candidate_s"],
        "images": len(records.images),
        "rounds": rounds,
        "score_thresh": float(cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST),
        "detections_per_image": timed["detections"] / max(1, len(records.images)),
        "torch_threads": 1,
    }


def evaluate_masks(
    out: Path, data, row: Method, device: str, progress: bool, timed: bool = True
) -> dict | None:
    """Box and mask AP (base / novel / all AP and AP50) of the mask detector in ``out``
    predicting as ``row`` (:func:`mask_prediction`), and, where ``timed``, its inference time
    with masks against boxes only (:func:`time_masks_against_boxes`), cached in
    ``out/eval/vild_masks.json`` with the SHA-256 of the checkpoint and the prediction it scored.

    Returns:
        ``{"label", "prediction", "box": {group: {"AP", "AP50"}}, "segm": {...},
        "num_detections", "inference": {...}}`` (no ``inference`` where not ``timed``), or
        ``None`` where ``out`` has no trained mask detector.
    """
    from ovdet.clip.spec import file_digest
    from ovdet.evaluation import evaluate_coco
    from ovdet.ovbench.predict import predict_with_method
    from ovdet.ovbench.stages import EVAL_SCORE_THRESH, start_stage
    from ovdet.utils.io import atomic_write_json

    checkpoint = out / MASK_DETECTOR.name / "model_final.pt"
    if not checkpoint.is_file():
        return None
    path = out / "eval" / f"{MASK_DETECTOR.name}.json"
    scored = {"checkpoint_sha256": file_digest(checkpoint), "prediction": row.prediction}
    if path.is_file():
        cached = json.loads(path.read_text())
        if all(cached.get(k) == v for k, v in scored.items()) and (
            "inference" in cached or not timed
        ):
            cached.pop("checkpoint_sha256")
            return cached
    label = mask_row_label(row)
    start_stage(f"stage 3: evaluating {label}: boxes and masks")
    gt, images = data.path("val_json"), data.path("val_images")
    results = predict_with_method(
        checkpoint, gt, images, row.prediction, device=device, score_thresh=EVAL_SCORE_THRESH,
        progress=progress,
    )  # fmt: skip
    summary = {"label": label, "prediction": row.prediction}
    for iou_type, key in (("bbox", "box"), ("segm", "segm")):
        m = evaluate_coco(str(gt), results, data.split_spec, iou_type=iou_type)
        summary[key] = {g: {k: m[g][k] for k in ("AP", "AP50")} for g in ("base", "novel", "all")}
    summary["num_detections"] = len(results)
    if timed:
        start_stage(f"stage 3: inference time of {label}, masks against boxes only")
        summary["inference"] = time_masks_against_boxes(
            checkpoint, gt, images, device, row.prediction
        )
    atomic_write_json({**summary, **scored}, path)
    logger.info(
        "stage 3: %s: novel AP50 box %s, mask %s",
        label, summary["box"]["novel"]["AP50"], summary["segm"]["novel"]["AP50"],
    )  # fmt: skip
    return summary


def mask_targets(masks: dict | None) -> list[dict]:
    """The mask rows' target: novel mask AP50 at least :data:`MIN_MASK_TO_BOX_AP50` x the same
    detector's novel box AP50 (none without mask rows)."""
    from ovdet.ovbench.targets import _target

    if not masks:
        return []

    def novel(key: str) -> float:
        value = masks[key]["novel"]["AP50"]
        return 0.0 if value is None else float(value)

    mask, box = novel("segm"), novel("box")
    return [
        _target(
            f"{masks['label']}: novel mask AP50 {mask:.3f} >= {MIN_MASK_TO_BOX_AP50} x its novel "
            f"box AP50 ({box:.3f})",
            mask >= MIN_MASK_TO_BOX_AP50 * box,
            "its novel box AP50 is 0" if box == 0 else "",
        )
    ]


def check_mask_annotations(data) -> None:
    """A dataset of one's own (``--data``) for ``--masks``: every annotation of its training and
    validation JSON has a ``segmentation`` (checked before any training).

    Raises:
        ConfigError: naming the first file and annotation without one.
    """
    from ovdet.utils.errors import ConfigError

    for key in ("train_json", "val_json"):
        path = data.path(key)
        annotations = json.loads(Path(path).read_text()).get("annotations", [])
        bare = next((a for a in annotations if not a.get("segmentation")), None)
        if bare is not None:
            raise ConfigError(
                f"--masks needs a segmentation in every annotation; annotation {bare.get('id')} "
                f"of {path} has none"
            )

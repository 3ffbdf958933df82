"""What a detector found on held-out images: counts of novel objects and pictures of them.

:func:`novel_detection_summary` runs an open-vocabulary detector with *every* class name in the
vocabulary over labelled images, counts the novel objects it found (right name, IoU >= 0.5) and
the novel-named detections that were right, and draws the first images with the novel classes
marked (:func:`ovdet.utils.visualizer.draw_detections` with ``novel`` flags: a ``*`` and a dashed
outline).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

__all__ = ["best_f1_threshold", "match_detections", "novel_detection_summary"]

#: Scores below this are never drawn or counted.
MIN_SCORE = 0.05

logger = logging.getLogger(__name__)


def match_detections(
    det_boxes: torch.Tensor,
    det_labels: torch.Tensor,
    det_scores: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_labels: torch.Tensor,
    iou_thresh: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy COCO-style matching of one image's detections to its ground truth.

    Detections are taken by decreasing score; each takes the unmatched ground-truth box of its
    class with the highest IoU, if that IoU is at least ``iou_thresh``.

    Args:
        det_boxes: Tensor[N, 4] (x1, y1, x2, y2); det_labels: LongTensor[N]; det_scores:
            Tensor[N].
        gt_boxes: Tensor[M, 4]; gt_labels: LongTensor[M] (same label space).

    Returns:
        BoolTensor[N] (detection is right), BoolTensor[M] (object was found).
    """
    matched = _match(det_boxes, det_labels, det_scores, gt_boxes, gt_labels, iou_thresh)
    found = torch.zeros(len(gt_boxes), dtype=torch.bool)
    found[matched[matched >= 0]] = True
    return matched >= 0, found


def _match(det_boxes, det_labels, det_scores, gt_boxes, gt_labels, iou_thresh=0.5):
    """LongTensor[N]: the ground-truth index each detection matched, or -1. Greedy by score,
    so the matches of the detections above any score are those of matching only them."""
    from torchvision.ops import box_iou

    matched = torch.full((len(det_boxes),), -1, dtype=torch.long)
    if len(det_boxes) == 0 or len(gt_boxes) == 0:
        return matched
    taken = torch.zeros(len(gt_boxes), dtype=torch.bool)
    iou = box_iou(det_boxes.float(), gt_boxes.float())
    iou[det_labels[:, None] != gt_labels[None, :]] = -1.0
    for i in torch.argsort(det_scores, descending=True).tolist():
        candidates = iou[i].masked_fill(taken, -1.0)
        best = int(candidates.argmax())
        if candidates[best] >= iou_thresh:
            matched[i] = best
            taken[best] = True
    return matched


def best_f1_threshold(scores: torch.Tensor, right: torch.Tensor, num_objects: int) -> float:
    """The score threshold with the best F1 of detections against objects.

    Args:
        scores: Tensor[N], every detection's score; right: BoolTensor[N], matched an object.
        num_objects: the number of ground-truth objects.

    Returns:
        The lowest score of the best prefix (by decreasing score); 1.0 without a right one.
    """
    if not bool(right.any()):
        return 1.0
    order = torch.argsort(scores, descending=True)
    true_pos = torch.cumsum(right[order].float(), 0)
    kept = torch.arange(1, len(order) + 1, dtype=torch.float32)
    f1 = 2 * true_pos / (kept + num_objects)
    return float(scores[order][int(torch.argmax(f1))])


def _enlarged(image: np.ndarray, boxes: np.ndarray, min_side: int) -> tuple[np.ndarray, np.ndarray]:
    """Small images scaled up (nearest neighbour) so that labels stay readable."""
    from PIL import Image

    factor = max(1, int(np.ceil(min_side / max(1, min(image.shape[:2])))))
    if factor == 1:
        return image, boxes
    h, w = image.shape[:2]
    big = Image.fromarray(image).resize((w * factor, h * factor), Image.NEAREST)
    return np.asarray(big), boxes * factor


def _montage(paths: list[Path], columns: int = 3):
    """The pictures side by side, ``columns`` per row (white gaps)."""
    from PIL import Image

    images = [Image.open(p).convert("RGB") for p in paths]
    width = max(im.width for im in images)
    height = max(im.height for im in images)
    rows = (len(images) + columns - 1) // columns
    gap = 8
    sheet = Image.new(
        "RGB", (columns * width + (columns - 1) * gap, rows * height + (rows - 1) * gap), "white"
    )
    for i, im in enumerate(images):
        sheet.paste(im, ((i % columns) * (width + gap), (i // columns) * (height + gap)))
    return sheet


def novel_detection_summary(
    detector,
    records,
    novel: list[str],
    output_dir: str | Path,
    score_thresh: float | None = None,
    num_pictures: int = 6,
    picture_side: int = 384,
    progress: bool = False,
) -> dict:
    """Detect with every class name over ``records``; count and draw the novel findings.

    Args:
        detector: an :class:`~ovdet.api.OVDetector` (its vocabulary is set here).
        records: labelled images (:class:`~ovdet.data.coco.DatasetRecords`, every category
            kept, e.g. loaded with ``split=None``); its class names are the vocabulary.
        novel: the novel class names (marked in the pictures and counted).
        output_dir: where ``NAME_det.jpg`` pictures and ``overview.jpg`` (them side by side)
            are written.
        score_thresh: the least score of a detection counted and drawn; ``None``: the one with
            the best F1 of all detections against all objects of ``records``
            (:func:`best_f1_threshold`, at least :data:`MIN_SCORE`), so the pictures show what
            the model found whatever the scale of its scores.
        num_pictures: images drawn (the first ones of ``records``).
        picture_side: pictures are scaled up (nearest neighbour) to at least this side.
        progress: a progress bar.

    Returns:
        ``novel_objects`` (novel ground-truth boxes), ``novel_found`` (of them, detected with
        the right name at IoU >= 0.5), ``novel_detections`` (detections with a novel name) and
        ``novel_right`` (of them, right), ``all_detections``, ``images``, ``score_thresh``,
        ``pictures`` (paths) and ``overview``.
    """
    from tqdm import tqdm

    from ovdet.data.image_io import read_image
    from ovdet.utils.io import check_writable_dir
    from ovdet.utils.visualizer import draw_detections, save_image

    out = check_writable_dir(output_dir)
    names = list(records.class_names)
    detector.set_classes(names)
    novel_lower = {n.lower() for n in novel}
    is_novel = torch.tensor([n.lower() in novel_lower for n in names], dtype=torch.bool)
    low = MIN_SCORE if score_thresh is None else score_thresh
    per_image = []
    for record in tqdm(records.images, desc="pictures", disable=not progress, unit="img"):
        image = read_image(record.path, detector.cfg.INPUT.MAX_LOAD_PIXELS)
        det = detector.predict(image, score_thresh=low)[0]
        boxes = torch.as_tensor(np.asarray(det.boxes), dtype=torch.float32).reshape(-1, 4)
        labels = torch.as_tensor(np.asarray(det.labels), dtype=torch.long).reshape(-1)
        scores = torch.as_tensor(np.asarray(det.scores), dtype=torch.float32).reshape(-1)
        scale = torch.tensor([image.shape[1] / record.width, image.shape[0] / record.height] * 2)
        gt_boxes = torch.as_tensor(record.boxes, dtype=torch.float32).reshape(-1, 4) * scale
        gt_labels = torch.as_tensor(record.labels, dtype=torch.long).reshape(-1) - 1  # 1..C
        matched = _match(boxes, labels, scores, gt_boxes, gt_labels)
        per_image.append((record, boxes, labels, scores, gt_labels, matched))
    if score_thresh is None:
        scores = torch.cat([p[3] for p in per_image]) if per_image else torch.zeros(0)
        right = (
            torch.cat([p[5] >= 0 for p in per_image])
            if per_image
            else torch.zeros(0, dtype=torch.bool)
        )
        num_objects = sum(len(p[4]) for p in per_image)
        score_thresh = max(MIN_SCORE, best_f1_threshold(scores, right, num_objects))
    counts = dict.fromkeys(
        ("novel_objects", "novel_found", "novel_detections", "novel_right", "all_detections"), 0
    )
    pictures = []
    for index, (record, boxes, labels, scores, gt_labels, matched) in enumerate(per_image):
        keep = scores >= score_thresh
        boxes, labels, scores, matched = boxes[keep], labels[keep], scores[keep], matched[keep]
        novel_det = is_novel[labels]
        novel_gt = is_novel[gt_labels]
        found = torch.zeros(len(gt_labels), dtype=torch.bool)
        found[matched[matched >= 0]] = True
        counts["novel_objects"] += int(novel_gt.sum())
        counts["novel_found"] += int((found & novel_gt).sum())
        counts["novel_detections"] += int(novel_det.sum())
        counts["novel_right"] += int(((matched >= 0) & novel_det).sum())
        counts["all_detections"] += len(labels)
        if index < num_pictures:
            image = read_image(record.path, detector.cfg.INPUT.MAX_LOAD_PIXELS)
            big, big_boxes = _enlarged(image, boxes.numpy(), picture_side)
            drawn = draw_detections(
                big, big_boxes, scores.tolist(), [names[i] for i in labels.tolist()],
                novel=novel_det.tolist(),
            )  # fmt: skip
            path = out / f"{Path(record.path).stem}_det.jpg"
            save_image(drawn, path)
            pictures.append(str(path))
    overview = ""
    if pictures:
        overview = str(out / "overview.jpg")
        save_image(_montage([Path(p) for p in pictures]), overview)
    summary = {
        **counts,
        "images": len(records.images),
        "score_thresh": round(float(score_thresh), 4),
        "pictures": pictures,
        "overview": overview,
    }
    logger.info(
        "novel objects in %d images: %d, found %d (right name, IoU >= 0.5, score >= %.2f); "
        "%d detections named a novel class, %d of them right",
        summary["images"], counts["novel_objects"], counts["novel_found"], score_thresh,
        counts["novel_detections"], counts["novel_right"],
    )  # fmt: skip
    return summary

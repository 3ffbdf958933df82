"""Post-processing of region scores into detections: one meaning of the score threshold."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torchvision.ops import boxes as box_ops

__all__ = ["ScoreThresholdMixin", "select_detections", "threshold_scores"]


class ScoreThresholdMixin:
    """A head with a ``score_thresh`` attribute that a ``with`` block may change for a while
    (ovdet's head and the OWL query head)."""

    score_thresh: float

    @contextmanager
    def score_threshold(self, score_thresh: float | None) -> Iterator[None]:
        """Use another score threshold inside a ``with`` block (``None``: keep the current)."""
        saved = self.score_thresh
        if score_thresh is not None:
            self.score_thresh = float(score_thresh)
        try:
            yield
        finally:
            self.score_thresh = saved


def threshold_scores(
    probs: torch.Tensor, score_thresh: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The (region, class) pairs whose probability exceeds ``score_thresh``.

    Regions with any class above the threshold are usually few, so for vocabularies of 256
    classes or more the comparison and the ``nonzero`` search run on their rows only, not on
    all ``N x C`` probabilities (one pass over the rows finds them). ``probs`` may be a strided
    view; it is never flattened (which would copy it).

    Args:
        probs: Tensor[N, C], class probabilities (C >= 1).
        score_thresh: keep probabilities strictly above it.

    Returns:
        (region index Tensor[K], class index Tensor[K], score Tensor[K]), ordered by region,
        then class.
    """
    rows = None
    if probs.shape[1] >= 256:  # below, the extra pass costs more than it saves
        rows = torch.nonzero(probs.amax(dim=1) > score_thresh).squeeze(1)
        if rows.numel() < probs.shape[0]:
            probs = probs[rows]
        else:
            rows = None
    box_idx, labels = torch.nonzero(probs > score_thresh).unbind(1)
    scores = probs[box_idx, labels]
    if rows is not None:
        box_idx = rows[box_idx]
    return box_idx, labels, scores


def select_detections(
    boxes: torch.Tensor,
    probs: torch.Tensor,
    score_thresh: float,
    nms_thresh: float,
    detections_per_img: int,
    max_candidates: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One image's detections from per-region class probabilities.

    Thresholds the (region, class) pairs, keeps the ``max_candidates`` highest-scoring ones
    (NMS only lets a higher-scoring box suppress a lower one, so this changes nothing while at
    least ``detections_per_img`` survive among them; it bounds NMS work for huge vocabularies
    with a threshold near 0), drops tiny boxes and runs per-class NMS.

    Args:
        boxes: Tensor[N, 4] (x1, y1, x2, y2), one per region.
        probs: Tensor[N, C] class probabilities.

    Returns:
        (region index Tensor[K], class index Tensor[K], score Tensor[K]), best first,
        K <= ``detections_per_img``.
    """
    box_idx, labels, scores = threshold_scores(probs, score_thresh)
    if scores.numel() > max_candidates:
        top = scores.topk(max_candidates).indices
        box_idx, labels, scores = box_idx[top], labels[top], scores[top]
    keep = box_ops.remove_small_boxes(boxes[box_idx], min_size=1e-2)
    box_idx, labels, scores = box_idx[keep], labels[keep], scores[keep]
    keep = box_ops.batched_nms(boxes[box_idx], scores, labels, nms_thresh)
    keep = keep[:detections_per_img]
    return box_idx[keep], labels[keep], scores[keep]

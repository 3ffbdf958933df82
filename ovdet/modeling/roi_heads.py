"""RoI heads of the open-vocabulary detector (torchvision engine)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.ops import boxes as box_ops

from ovdet.modeling.box_predictor import OpenVocabularyBoxPredictor
from ovdet.modeling.ensemble import ensemble_scores
from ovdet.modeling.losses import box_regression_loss, vild_text_loss

__all__ = ["OpenVocabularyRoIHeads", "select_detections", "threshold_scores"]


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


class OpenVocabularyRoIHeads(RoIHeads):
    """torchvision's ``RoIHeads`` with a text classifier and class-agnostic boxes.

    Training computes the ViLD-text loss and a class-agnostic box loss. Inference decodes one
    box per proposal and scores it against every class at once (no per-class boxes, so the cost
    barely grows with the vocabulary), then applies score threshold, per-class NMS and top-k.

    Labels in ``targets`` follow torchvision: ``1..C`` for classes, ``0`` for background.
    """

    box_predictor: OpenVocabularyBoxPredictor

    def __init__(self, *args, text_loss_weight: float = 1.0, box_loss_weight: float = 1.0, **kw):
        super().__init__(*args, **kw)
        self.text_loss_weight = text_loss_weight
        self.box_loss_weight = box_loss_weight
        self.register_buffer("is_novel_class", torch.zeros(0, dtype=torch.bool), persistent=False)
        self.ensemble = None  # (teacher, base_weight, novel_weight, clip_temperature, top_k)
        # (region, class) candidates kept for NMS, the highest-scoring (see select_detections).
        self.max_candidates = max(1000, 10 * self.detections_per_img)

    @property
    def classifier(self):
        return self.box_predictor.classifier

    def set_vocabulary(self, text_embeddings: torch.Tensor, is_novel: torch.Tensor | None = None):
        """Swap the vocabulary: Tensor[C, D] text embeddings, optional BoolTensor[C] novelty."""
        self.classifier.set_text_embeddings(text_embeddings)
        if is_novel is None:
            is_novel = torch.zeros(text_embeddings.shape[0], dtype=torch.bool)
        self.is_novel_class = is_novel.to(self.classifier.text_embeddings.device)

    def region_embeddings(self, features, boxes, image_shapes) -> torch.Tensor:
        """Embeddings of given boxes: list of Tensor[N_i, 4] -> Tensor[sum N_i, D]."""
        box_features = self.box_head(self.box_roi_pool(features, boxes, image_shapes))
        return self.classifier.embed(box_features)

    def forward(self, features, proposals, image_shapes, targets=None, images=None):
        """Losses (training) or detections (inference).

        Args:
            features: FPN feature maps.
            proposals: list of Tensor[N_i, 4] RPN proposals.
            image_shapes: list of (H, W) of the (resized) images.
            targets: training targets with ``boxes`` and ``labels``.
            images: Tensor[B, 3, H, W] in [0, 1], needed only by the inference ensemble.

        Returns:
            (detections, losses). Each detection dict holds ``boxes`` Tensor[K, 4], ``scores``
            Tensor[K], ``labels`` Tensor[K] (0-based class index into the vocabulary) and
            ``proposal_index`` Tensor[K]; ``embeddings`` Tensor[K, D] too.
        """
        if self.training:
            proposals, _, labels, regression_targets = self.select_training_samples(
                proposals, targets
            )
            box_features = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
            logits, deltas, _ = self.box_predictor(box_features)
            labels = torch.cat(labels)
            background = logits.shape[1] - 1
            gt_classes = torch.where(labels == 0, background, labels - 1)
            losses = {
                "loss_text": self.text_loss_weight * vild_text_loss(logits, gt_classes),
                "loss_box_reg": self.box_loss_weight
                * box_regression_loss(
                    deltas, torch.cat(regression_targets), gt_classes, background
                ),
            }
            return [], losses

        box_features = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        # One matrix product scores every region against the whole vocabulary, and one box per
        # region is decoded (class-agnostic): the product, the softmax and the threshold are the
        # only work that grows with the vocabulary.
        probs, deltas, embeddings = self.box_predictor.predict(box_features)
        boxes = self.box_coder.decode(deltas, proposals).reshape(-1, 4)
        counts = [len(p) for p in proposals]
        detections = []
        offset = 0
        for i, (n, shape) in enumerate(zip(counts, image_shapes)):
            sl = slice(offset, offset + n)
            offset += n
            detections.append(
                self._detect_in_image(
                    box_ops.clip_boxes_to_image(boxes[sl], shape),
                    probs[sl],
                    embeddings[sl],
                    None if images is None else images[i : i + 1],
                )
            )
        return detections, {}

    def _detect_in_image(self, boxes, probs, embeddings, image):
        """Tensor[N, 4], Tensor[N, C], Tensor[N, D] -> detections of one image."""
        proposal_index = torch.arange(boxes.shape[0], device=boxes.device)
        if self.ensemble is not None and image is not None and boxes.shape[0] > 0:
            teacher, base_w, novel_w, clip_t, top_k = self.ensemble
            keep = probs.max(dim=1).values.topk(min(top_k, boxes.shape[0])).indices
            boxes, probs, proposal_index = boxes[keep], probs[keep], proposal_index[keep]
            crop_emb = teacher(image, [boxes])
            clip_logits = (clip_t * crop_emb.float()) @ self.classifier.text_embeddings.t()
            clip_probs = F.softmax(clip_logits, -1)
            probs = ensemble_scores(probs, clip_probs, self.is_novel_class, base_w, novel_w)
        box_idx, labels, scores = select_detections(
            boxes, probs, self.score_thresh, self.nms_thresh, self.detections_per_img,
            self.max_candidates,
        )  # fmt: skip
        return {
            "boxes": boxes[box_idx],
            "scores": scores,
            "labels": labels,
            "proposal_index": proposal_index[box_idx],
            "embeddings": embeddings[proposal_index[box_idx]],
        }

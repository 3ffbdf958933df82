"""The "CLIP on proposals" baseline: class-agnostic proposals classified by CLIP's image tower.

No region feature of the detector is used: the RPN proposes boxes (ranked by objectness), each
box is cropped (at the teacher's scales) and embedded by the frozen CLIP image tower, and the
crop is classified by cosine similarity with the vocabulary's text embeddings. This is the
zero-shot upper bound of "just use CLIP" that ViLD compares against.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ovdet.core.head import get_head
from ovdet.core.postprocessing import select_detections
from ovdet.core.teacher import ClipRegionTeacher

__all__ = ["ClipOnProposals"]


class ClipOnProposals(nn.Module):
    """Detects with an open-vocabulary R-CNN's proposals and CLIP crop classification.

    Args:
        detector: an :class:`~ovdet.tv.OpenVocabularyFasterRCNN`; its transform, backbone, RPN
            and vocabulary (its head's ``text_embeddings``) are used.
        teacher: the CLIP region embedder.
        num_proposals: proposals classified per image (the top ones by objectness).
        clip_temperature: softmax temperature of the CLIP cosine similarities.
        score_thresh, nms_thresh, detections_per_img: post-processing, as in the detector.
    """

    def __init__(
        self,
        detector: nn.Module,
        teacher: ClipRegionTeacher,
        num_proposals: int = 100,
        clip_temperature: float = 100.0,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.5,
        detections_per_img: int = 100,
    ) -> None:
        super().__init__()
        self.detector = detector.eval()
        self.teacher = teacher
        self.num_proposals = num_proposals
        self.clip_temperature = clip_temperature
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_img = detections_per_img

    @torch.no_grad()
    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """images: Tensor[3, H, W] in [0, 1] each -> per image ``boxes`` Tensor[K, 4],
        ``scores`` Tensor[K], ``labels`` LongTensor[K] (vocabulary indices)."""
        det = self.detector
        images_t, _ = det.transform(images)
        features = det.backbone(images_t.tensors)
        proposals, _ = det.rpn(images_t, features)
        raw = det.transform.unnormalize(images_t.tensors)
        text = get_head(det).text_embeddings
        boxes = [p[: self.num_proposals] for p in proposals]
        embeddings = self.teacher(raw, boxes).to(text.dtype)  # [sum K_i, D]
        probs = F.softmax(self.clip_temperature * embeddings @ text.t(), dim=-1)
        results, start = [], 0
        for b in boxes:
            results.append(self._postprocess(b, probs[start : start + len(b)]))
            start += len(b)
        return results

    def _postprocess(self, boxes: torch.Tensor, probs: torch.Tensor) -> dict[str, torch.Tensor]:
        """Tensor[N, 4], Tensor[N, C] -> thresholded, per-class NMS detections."""
        box_idx, labels, scores = select_detections(
            boxes, probs, self.score_thresh, self.nms_thresh, self.detections_per_img,
            get_head(self.detector).max_candidates,
        )  # fmt: skip
        return {"boxes": boxes[box_idx], "scores": scores, "labels": labels}

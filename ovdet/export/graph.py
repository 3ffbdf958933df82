"""The detector as a traceable graph whose vocabulary is an input.

:class:`ExportableDetector` wraps a torchvision-engine open-vocabulary detector:
``(image Tensor[3, H, W], text Tensor[C, D]) -> (boxes, scores, labels, embeddings)``. It runs
the same modules as inference (normalisation, backbone, RPN, RoI pooling, the head's
projection, classifier and box regressor, torchvision's box decoding) and the same
post-processing rule as :func:`~ovdet.core.postprocessing.select_detections` written without
data-dependent Python branches, so that ``torch.onnx.export`` records one graph valid for every
image size and vocabulary size. The export agreement test keeps the two equal.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection._utils import _topk_min
from torchvision.ops import boxes as box_ops

from ovdet.core.head import get_head
from ovdet.core.masks import mask_probabilities

__all__ = ["ExportableDetector", "select_detections_traceable"]


def select_detections_traceable(
    boxes: torch.Tensor,
    probs: torch.Tensor,
    score_thresh: float | torch.Tensor,
    nms_thresh: float,
    detections_per_img: int,
    max_candidates: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`~ovdet.core.postprocessing.select_detections` for tracing: the same rule (pairs
    scoring strictly above the threshold, the ``max_candidates`` best of them, tiny boxes
    dropped, per-class NMS, the ``detections_per_img`` best), without branches on sizes.

    The (region, class) pairs come from a two-dimensional ``nonzero``, in the order of the
    core's (region, then class), so no index is divided by ``C``: an empty vocabulary (C = 0)
    gives no detections instead of a division by zero in the graph.

    Args:
        boxes: Tensor[N, 4]; probs: Tensor[N, C] (C >= 0).

    Returns:
        (region index Tensor[K], class index Tensor[K], score Tensor[K]), best first.
    """
    box_idx, labels = torch.nonzero(probs > score_thresh).unbind(1)
    scores = probs[box_idx, labels]
    top = scores.topk(_topk_min(scores, max_candidates, 0)).indices
    box_idx, labels, scores = box_idx[top], labels[top], scores[top]
    keep = box_ops.remove_small_boxes(boxes[box_idx], min_size=1e-2)
    box_idx, labels, scores = box_idx[keep], labels[keep], scores[keep]
    keep = box_ops.batched_nms(boxes[box_idx], scores, labels, nms_thresh)[:detections_per_img]
    return box_idx[keep], labels[keep], scores[keep]


class ExportableDetector(nn.Module):
    """``forward(image, text_embeddings)`` of a torchvision-engine open-vocabulary detector.

    Args:
        model: an ``OpenVocabularyFasterRCNN`` (in eval mode; CLIP rescoring is not exported).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.head = get_head(model)
        self.eval()  # the exporter restores the wrapper's mode on every submodule

    def forward(
        self, image: torch.Tensor, text_embeddings: torch.Tensor, score_thresh: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        """Detections of one image.

        Args:
            image: Tensor[3, H, W], RGB in [0, 1], already resized to the test size.
            text_embeddings: Tensor[C, D], one CLIP text embedding per class (normalised here).
            score_thresh: Tensor[] (float32): detections score strictly above it.

        Returns:
            boxes Tensor[K, 4] (x1, y1, x2, y2 in the input's pixels), scores Tensor[K], labels
            int64 Tensor[K] (indices into the C classes), region embeddings Tensor[K, D]; and, for
            a model with a mask head (``MODEL.MASK_ON``), mask_probs Tensor[K, M, M], each
            detection's mask relative to its box.
        """
        model, head = self.model, self.head
        roi_heads = model.roi_heads
        images, _ = model.transform([image])
        features, _ = model.backbone_features(images.tensors)  # a CLIP backbone's map: not exported
        proposals, _ = model.rpn(images, features)
        box_features = roi_heads.box_features(features, proposals, images.image_sizes)
        box_features = box_features.flatten(start_dim=1)
        classifier = head.classifier
        saved = classifier.text_embeddings
        classifier.text_embeddings = F.normalize(text_embeddings.float(), dim=-1)
        try:
            embeddings = classifier.embed(box_features)
            if classifier.scoring == "sigmoid":
                probs = classifier.split_logits(embeddings)[0].sigmoid()
            else:
                probs = classifier._probabilities_fused(embeddings)
        finally:
            classifier.text_embeddings = saved
        deltas = head.bbox_pred(box_features)
        boxes = roi_heads.box_coder.decode(deltas, proposals).reshape(-1, 4)
        boxes = box_ops.clip_boxes_to_image(boxes, images.image_sizes[0])
        index, labels, scores = select_detections_traceable(
            boxes, probs, score_thresh, head.nms_thresh, head.detections_per_img,
            head.max_candidates,
        )  # fmt: skip
        outputs = (boxes[index], scores, labels, embeddings[index])
        if roi_heads.has_mask():
            logits = roi_heads.mask_logits(features, [boxes[index]], images.image_sizes)
            outputs += (mask_probabilities(logits),)
        return outputs

"""Losses of the open-vocabulary detector: ViLD-text, ViLD-image and box regression."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["box_regression_loss", "sigmoid_text_loss", "vild_image_loss", "vild_text_loss"]


def vild_text_loss(logits: torch.Tensor, gt_classes: torch.Tensor) -> torch.Tensor:
    """ViLD-text: softmax cross-entropy over the base classes and background.

    Args:
        logits: Tensor[N, C + 1], background last.
        gt_classes: Tensor[N] in ``[0, C]``, where ``C`` is background.

    Returns:
        The mean loss over the N regions (0 for N = 0).
    """
    if logits.shape[0] == 0:
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), gt_classes)


def sigmoid_text_loss(logits: torch.Tensor, gt_classes: torch.Tensor) -> torch.Tensor:
    """The text loss of sigmoid scoring (Detic's ``USE_SIGMOID_CE``): one binary cross-entropy
    per class, the region's class positive and every other class negative (all of them for
    background); the background logit is not used.

    Args:
        logits: Tensor[N, C + 1], background last.
        gt_classes: Tensor[N] in ``[0, C]``, where ``C`` is background.

    Returns:
        The loss summed over the C classes and averaged over the N regions (0 for N = 0).
    """
    if logits.shape[0] == 0:
        return logits.sum() * 0.0
    num_classes = logits.shape[1] - 1
    target = F.one_hot(gt_classes, num_classes + 1)[:, :num_classes].float()
    loss = F.binary_cross_entropy_with_logits(
        logits[:, :num_classes].float(), target, reduction="sum"
    )
    return loss / logits.shape[0]


def vild_image_loss(
    region_embeddings: torch.Tensor, teacher_embeddings: torch.Tensor
) -> torch.Tensor:
    """ViLD-image: L1 distance between region embeddings and CLIP's crop embeddings.

    Args:
        region_embeddings: Tensor[M, D], L2-normalised.
        teacher_embeddings: Tensor[M, D], L2-normalised (no gradient flows into them).

    Returns:
        ``sum_d |r - t|`` averaged over the M regions (0 for M = 0).
    """
    if region_embeddings.shape != teacher_embeddings.shape:
        raise ValueError(
            f"region {tuple(region_embeddings.shape)} and teacher "
            f"{tuple(teacher_embeddings.shape)} embeddings differ in shape"
        )
    if region_embeddings.shape[0] == 0:
        return region_embeddings.sum() * 0.0
    diff = region_embeddings.float() - teacher_embeddings.detach().float()
    return diff.abs().sum(dim=1).mean()


def box_regression_loss(
    deltas: torch.Tensor,
    target_deltas: torch.Tensor,
    gt_classes: torch.Tensor,
    background_class: int,
    beta: float = 1.0 / 9,
) -> torch.Tensor:
    """Class-agnostic smooth-L1 box loss on foreground regions, normalised by all N regions.

    Args:
        deltas: Tensor[N, 4] predicted box deltas.
        target_deltas: Tensor[N, 4] encoded ground-truth deltas.
        gt_classes: Tensor[N] in ``[0, C]``; regions of ``background_class`` are ignored.
        background_class: the background index ``C``.
        beta: smooth-L1 transition point (torchvision's Faster R-CNN uses 1/9).
    """
    fg = gt_classes != background_class
    if gt_classes.numel() == 0:
        return deltas.sum() * 0.0
    loss = F.smooth_l1_loss(
        deltas[fg].float(), target_deltas[fg].float(), beta=beta, reduction="sum"
    )
    return loss / gt_classes.numel()

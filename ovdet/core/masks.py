"""The class-agnostic mask branch's rules, shared by both engines.

Mask R-CNN's head (four 3x3 convolutions on 14x14 RoIAlign features, a 2x2 deconvolution, a
1x1 predictor) predicts **one** 28x28 mask per region, not one per class: like the
class-agnostic box regression, it transfers to classes that had no mask in training, because
the open-vocabulary head names the region and the mask head only outlines it. Each engine
builds the layers from its framework (torchvision's ``MaskRCNNHeads`` / ``MaskRCNNPredictor``,
detectron2's ``MaskRCNNConvUpsampleHead`` with ``CLS_AGNOSTIC_MASK``); this module holds what
they must agree on: the training targets and loss, the probabilities, the pasting into the
image (on tensors; the rule itself is :func:`ovdet.structures.masks.paste_masks`), and the
names of detectron2's mask-head weights in the torchvision layout.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from ovdet.structures import masks as structures_masks

__all__ = [
    "MASK_THRESHOLD",
    "mask_loss",
    "mask_probabilities",
    "mask_targets",
    "paste_masks",
    "torchvision_mask_key",
]

# A pixel belongs to the object when its pasted probability is at least this (detectron2's
# and torchvision's 0.5).
MASK_THRESHOLD = 0.5


def mask_targets(
    gt_masks: torch.Tensor, boxes: torch.Tensor, matched: torch.Tensor, size: int
) -> torch.Tensor:
    """The binary target of each region: its matched object's mask cropped to the region.

    As detectron2's ``BitMasks.crop_and_resize``: RoIAlign (aligned, adaptive sampling) of the
    full-image mask, then ``>= 0.5``.

    Args:
        gt_masks: Tensor[G, H, W] (bool or 0/1) object masks of one image, in input pixels.
        boxes: Tensor[N, 4] the regions (x1, y1, x2, y2).
        matched: LongTensor[N] index into ``gt_masks`` of each region's object.
        size: the side of the predicted masks (28).

    Returns:
        Tensor[N, size, size] float, 0 or 1.
    """
    if len(boxes) == 0:
        return boxes.new_zeros((0, size, size))
    rois = torch.cat([torch.arange(len(boxes), device=boxes.device)[:, None].to(boxes), boxes], 1)
    masks = gt_masks[matched][:, None].to(boxes.dtype)
    # Each region reads its own object's mask: batch index i is region i's mask.
    crops = roi_align(masks, rois, (size, size), 1.0, 0, aligned=True)[:, 0]
    return (crops >= 0.5).to(boxes.dtype)


def mask_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean per-pixel binary cross-entropy of foreground regions' masks.

    Args:
        logits: Tensor[N, 1, M, M] the mask head's output (one class-agnostic channel).
        targets: Tensor[N, M, M] from :func:`mask_targets`.

    Returns:
        scalar; zero (keeping the graph) when there is no foreground region.
    """
    if logits.shape[1] != 1:
        raise ValueError(f"the mask head is class-agnostic: 1 channel, got {logits.shape[1]}")
    if len(targets) == 0:
        return logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(logits[:, 0], targets.to(logits.dtype))


def mask_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Tensor[K, 1, M, M] mask logits -> Tensor[K, M, M] probabilities (each in its box)."""
    return logits[:, 0].sigmoid()


def paste_masks(
    probs: torch.Tensor,
    boxes: torch.Tensor,
    image_size: tuple[int, int],
    threshold: float = MASK_THRESHOLD,
) -> torch.Tensor:
    """Box-relative mask probabilities -> full-image binary masks: the pasting of
    :func:`ovdet.structures.masks.paste_masks` (also the ONNX runtime's, without torch) on
    tensors.

    Args:
        probs: Tensor[K, M, M] from :func:`mask_probabilities`.
        boxes: Tensor[K, 4] (x1, y1, x2, y2) in the pixels of the target image.
        image_size: (H, W) of the target image.
        threshold: probability at or above which a pixel is in the mask.

    Returns:
        BoolTensor[K, H, W] on the device of ``probs``.
    """
    pasted = structures_masks.paste_masks(
        probs.detach().float().cpu().numpy(), boxes.detach().float().cpu().numpy(), image_size,
        threshold,
    )  # fmt: skip
    return torch.from_numpy(pasted).to(probs.device)


# detectron2's MaskRCNNConvUpsampleHead (relative to the ROI heads' ``mask_head.``) ->
# torchvision's MaskRCNNHeads (``mask_head.``) and MaskRCNNPredictor (``mask_predictor.``).
_D2_CONV = re.compile(r"^mask_fcn(\d+)\.(weight|bias)$")
_D2_RENAMES = (
    ("deconv.", "mask_predictor.conv5_mask."),
    ("predictor.", "mask_predictor.mask_fcn_logits."),
)


def torchvision_mask_key(key: str) -> str:
    """The torchvision engine's name (relative to ``roi_heads.``) of a detectron2 mask-head
    weight (relative to ``roi_heads.mask_head.``): ``mask_fcn1.weight`` ->
    ``mask_head.0.0.weight``, ``deconv.*`` -> ``mask_predictor.conv5_mask.*``, ``predictor.*``
    -> ``mask_predictor.mask_fcn_logits.*``.

    Raises:
        KeyError: for another key (a normalisation layer: ``ROI_MASK_HEAD.NORM`` is not
            supported).
    """
    match = _D2_CONV.match(key)
    if match:
        return f"mask_head.{int(match.group(1)) - 1}.0.{match.group(2)}"
    for old, new in _D2_RENAMES:
        if key.startswith(old):
            return new + key[len(old) :]
    raise KeyError(key)

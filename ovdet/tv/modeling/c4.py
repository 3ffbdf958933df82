"""The R50-C4 architecture of the torchvision engine, from torchvision's parts.

detectron2's C4 Faster R-CNN (``Base-RCNN-C4.yaml``; Detic's OV-COCO models): the ResNet up to
``res4`` (stride 16) is the backbone and the RPN's only input; each proposal is pooled from
``res4`` by RoIAlign (14x14, aligned, sampling ratio 0: detectron2's ``ROIAlignV2``), run
through ``res5`` and average-pooled into a 2048-d box feature for the open-vocabulary head.
Anchors and proposal filtering follow detectron2's ``DefaultAnchorGenerator`` and
``find_top_rpn_proposals``, so that detectron2 weights give detectron2's proposals.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import RegionProposalNetwork
from torchvision.ops import MultiScaleRoIAlign, roi_align
from torchvision.ops import boxes as box_ops

__all__ = [
    "C4_FEATURE",
    "C4_STRIDE",
    "DetectronAnchorGenerator",
    "DetectronRegionProposalNetwork",
    "Res4RoIAlign",
    "Res5BoxHead",
    "ResNetC4",
]

# The feature map of a C4 backbone and its stride.
C4_FEATURE, C4_STRIDE = "res4", 16


class ResNetC4(nn.Module):
    """A torchvision ResNet up to ``layer3`` (detectron2's ``res4``).

    Args:
        body: a torchvision ResNet (``layer4`` and ``fc`` are not used here).
    """

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = IntermediateLayerGetter(body, return_layers={"layer3": C4_FEATURE})
        self.out_channels = body.inplanes // 2  # layer3's: 1024 for ResNet-50/101

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Tensor[B, 3, H, W] -> ``{"res4": Tensor[B, C, ceil(H / 16), ceil(W / 16)]}``."""
        return self.body(x)


class Res5BoxHead(nn.Module):
    """The box head of C4: ``res5`` (the ResNet's ``layer4``), then the spatial mean.

    Args:
        res5: the ResNet's ``layer4`` (its first block halves the 14x14 RoI features to 7x7).
    """

    def __init__(self, res5: nn.Module) -> None:
        super().__init__()
        self.res5 = res5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tensor[N, C, 14, 14] RoI features -> Tensor[N, 2C] box features."""
        return self.res5(x).mean(dim=(2, 3))


class Res4RoIAlign(MultiScaleRoIAlign):
    """RoIAlign of one feature map of known stride, as a torchvision ``MultiScaleRoIAlign`` (the
    type torchvision's ``FasterRCNN`` asks for) with one level and ``aligned=True``.

    Args:
        output_size: side of the pooled features (C4: 14).
        sampling_ratio: sampling points per bin side; 0 adapts it to the box (``ROIAlignV2``).
        feature: the name of the feature map.
        stride: its stride in input pixels.
    """

    def __init__(
        self,
        output_size: int,
        sampling_ratio: int = 0,
        feature: str = C4_FEATURE,
        stride: int = C4_STRIDE,
    ) -> None:
        super().__init__([feature], int(output_size), int(sampling_ratio))
        self.feature = feature
        self.spatial_scale = 1.0 / stride

    def forward(
        self,
        features: dict[str, torch.Tensor],
        boxes: list[torch.Tensor],
        image_shapes: Sequence[tuple[int, int]] | None = None,
    ) -> torch.Tensor:
        """Per image Tensor[N_i, 4] boxes (input pixels) -> Tensor[sum N_i, C, S, S]."""
        x = features[self.feature]
        boxes = [b.to(x.dtype) for b in boxes]
        return roi_align(
            x, boxes, self.output_size, self.spatial_scale, self.sampling_ratio, aligned=True
        )

    def extra_repr(self) -> str:
        return f"feature={self.feature}, scale={self.spatial_scale}, output_size={self.output_size}"


class DetectronAnchorGenerator(AnchorGenerator):
    """detectron2's ``DefaultAnchorGenerator`` on torchvision's ``AnchorGenerator``.

    Unlike torchvision's, the cell anchors are not rounded to whole pixels and are ordered by
    size, then aspect ratio (the order of the RPN's output channels in detectron2 weights), and
    the strides are the feature maps' own, not derived from the padded image size.

    Args:
        sizes: per feature map, the anchor sizes (square roots of their areas).
        aspect_ratios: per feature map, the height / width ratios.
        strides: per feature map, its stride in input pixels.
    """

    def __init__(
        self,
        sizes: Sequence[Sequence[float]],
        aspect_ratios: Sequence[Sequence[float]],
        strides: Sequence[int],
    ) -> None:
        super().__init__(tuple(map(tuple, sizes)), tuple(map(tuple, aspect_ratios)))
        if len(strides) != len(self.sizes):
            raise ValueError(f"{len(self.sizes)} anchor size lists for {len(strides)} strides")
        self.strides = [int(s) for s in strides]

    def generate_anchors(
        self,
        scales: Sequence[float],
        aspect_ratios: Sequence[float],
        dtype: torch.dtype = torch.float32,
        device: torch.device = torch.device("cpu"),
    ) -> torch.Tensor:
        """Tensor[len(scales) * len(aspect_ratios), 4] anchors centred on 0, size-major."""
        anchors = []
        for size in scales:
            area = float(size) ** 2
            for ratio in aspect_ratios:
                w = math.sqrt(area / ratio)
                h = ratio * w
                anchors.append([-w / 2.0, -h / 2.0, w / 2.0, h / 2.0])
        return torch.tensor(anchors, dtype=dtype, device=device)

    def forward(
        self, image_list: ImageList, feature_maps: list[torch.Tensor]
    ) -> list[torch.Tensor]:
        """Per image Tensor[sum_l H_l * W_l * A, 4]: (y, x, anchor) order, as detectron2."""
        grid_sizes = [fm.shape[-2:] for fm in feature_maps]
        dtype, device = feature_maps[0].dtype, feature_maps[0].device
        strides = [[torch.tensor(s, dtype=torch.int64, device=device)] * 2 for s in self.strides]
        self.set_cell_anchors(dtype, device)
        anchors = torch.cat(self.grid_anchors(grid_sizes, strides))
        return [anchors for _ in image_list.image_sizes]


class DetectronRegionProposalNetwork(RegionProposalNetwork):
    """torchvision's RPN choosing proposals as detectron2's ``find_top_rpn_proposals``.

    Per image and feature map, the ``pre_nms_top_n`` anchors with the highest objectness logit
    are decoded and clipped; empty boxes (zero width or height) are dropped; NMS runs per
    feature map on the logits (torchvision's runs on their sigmoid, which ties logits above ~17
    at 1.0); the ``post_nms_top_n`` best remain. Training (anchor matching, losses) is
    torchvision's.
    """

    def filter_proposals(
        self,
        proposals: torch.Tensor,
        objectness: torch.Tensor,
        image_shapes: list[tuple[int, int]],
        num_anchors_per_level: list[int],
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Tensor[B, A, 4] decoded proposals and Tensor[B * A, 1] logits -> per image
        (Tensor[K, 4] boxes, Tensor[K] logits), best first."""
        num_images = proposals.shape[0]
        device = proposals.device
        objectness = objectness.detach().reshape(num_images, -1)
        levels = torch.cat(
            [torch.full((n,), i, dtype=torch.int64, device=device)
             for i, n in enumerate(num_anchors_per_level)]
        )  # fmt: skip
        top = self._get_top_n_idx(objectness, num_anchors_per_level)
        batch = torch.arange(num_images, device=device)[:, None]
        objectness, proposals = objectness[batch, top], proposals[batch, top]
        levels = levels[top]
        final_boxes, final_scores = [], []
        for boxes, scores, lvl, shape in zip(proposals, objectness, levels, image_shapes):
            boxes = box_ops.clip_boxes_to_image(boxes, shape)
            keep = ((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])).nonzero()[:, 0]
            boxes, scores, lvl = boxes[keep], scores[keep], lvl[keep]
            keep = box_ops.batched_nms(boxes, scores, lvl, self.nms_thresh)
            keep = keep[: self.post_nms_top_n()]
            final_boxes.append(boxes[keep])
            final_scores.append(scores[keep])
        return final_boxes, final_scores

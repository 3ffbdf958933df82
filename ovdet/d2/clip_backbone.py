"""The frozen CLIP ResNet backbone of F-VLM in detectron2: ``build_clip_resnet_fpn_backbone``.

Registered in detectron2's ``BACKBONE_REGISTRY`` (``MODEL.BACKBONE.NAME
build_clip_resnet_fpn_backbone``): the frozen image tower of ``MODEL.OVDET.CLIP``
(:class:`~ovdet.core.clip_backbone.FrozenClipResNet`, which owns the input normalisation, the
freezing and the region pooling) as the bottom-up of detectron2's own ``FPN``, built from the
``MODEL.FPN.*`` keys as detectron2's ``build_resnet_fpn_backbone`` builds it. The output also
carries the frozen res5 map under :data:`~ovdet.core.clip_backbone.CLIP_FEATURES_KEY`; the RPN
and the ROI heads read only their ``IN_FEATURES``, and
:class:`~ovdet.d2.roi_heads.OpenVocabularyROIHeads` hands that map to the head (CLIP rescoring
from the backbone, ``MODEL.OVDET.CLIP_RESCORING.SOURCE backbone``).
"""

from __future__ import annotations

from typing import Dict

import torch
from detectron2.config import CfgNode
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, FPN, Backbone
from detectron2.modeling.backbone.fpn import LastLevelMaxPool
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, Res5ROIHeads

from ovdet.core.clip_backbone import (
    CLIP_BACKBONE_NAME,
    CLIP_FEATURES_KEY,
    FrozenClipResNet,
    load_clip_backbone,
)
from ovdet.utils.errors import ConfigError

__all__ = ["ClipResNetFPN", "build_clip_resnet_fpn_backbone"]


class _ClipStages(Backbone):
    """The FPN's bottom-up: the CLIP tower's stages, computed once by :class:`ClipResNetFPN` and
    passed through (so the frozen res5 map is at hand for the head as well)."""

    def __init__(self, clip: FrozenClipResNet) -> None:
        super().__init__()
        self._out_features = list(clip.out_channels)
        self._out_feature_channels = dict(clip.out_channels)
        self._out_feature_strides = dict(clip.strides)

    def forward(self, stages: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        return stages


class ClipResNetFPN(Backbone):
    """A frozen CLIP ResNet image tower with a trained detectron2 ``FPN`` on its stages (F-VLM).

    Args:
        clip: the frozen CLIP tower (``self.clip``; its ``train()`` keeps it in eval mode).
        in_features: the stages the FPN reads (``MODEL.FPN.IN_FEATURES``, from ``res2``..``res5``).
        out_channels, norm, fuse_type: ``MODEL.FPN.OUT_CHANNELS``, ``NORM``, ``FUSE_TYPE``.
    """

    def __init__(
        self,
        clip: FrozenClipResNet,
        in_features: list[str],
        out_channels: int,
        norm: str = "",
        fuse_type: str = "sum",
    ) -> None:
        super().__init__()
        self.clip = clip
        self.fpn = FPN(
            bottom_up=_ClipStages(clip),
            in_features=in_features,
            out_channels=out_channels,
            norm=norm,
            top_block=LastLevelMaxPool(),
            fuse_type=fuse_type,
        )

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Tensor[B, 3, H, W] (detector-normalised, H and W multiples of 32) -> the FPN levels
        ``p2``..``p6`` Tensor[B, C, H_l, W_l] and ``"clip"``: the frozen res5 map
        Tensor[B, C_5, H / 32, W / 32]."""
        stages = self.clip(x)
        features = self.fpn(stages)
        features[CLIP_FEATURES_KEY] = stages["res5"]
        return features

    def output_shape(self) -> Dict[str, ShapeSpec]:
        shapes = self.fpn.output_shape()
        shapes[CLIP_FEATURES_KEY] = ShapeSpec(
            channels=self.clip.out_channels["res5"], stride=self.clip.strides["res5"]
        )
        return shapes

    @property
    def size_divisibility(self) -> int:
        return self.fpn.size_divisibility

    @property
    def padding_constraints(self) -> Dict[str, int]:
        return self.fpn.padding_constraints


@BACKBONE_REGISTRY.register()
def build_clip_resnet_fpn_backbone(cfg: CfgNode, input_shape: ShapeSpec) -> ClipResNetFPN:
    """:class:`ClipResNetFPN` on the CLIP of ``MODEL.OVDET.CLIP`` (a ResNet CLIP), normalised
    from ``MODEL.PIXEL_MEAN/STD`` and ``INPUT.FORMAT``.

    Raises:
        ConfigError: with C4 ROI heads (``Res5ROIHeads``: this backbone builds an FPN), a
            non-RGB input, or a CLIP whose image tower is not a ResNet.
    """
    heads = cfg.MODEL.ROI_HEADS.NAME
    if heads in ROI_HEADS_REGISTRY and issubclass(ROI_HEADS_REGISTRY.get(heads), Res5ROIHeads):
        raise ConfigError(
            f"MODEL.BACKBONE.NAME {CLIP_BACKBONE_NAME} builds an FPN: use it with "
            f"MODEL.ROI_HEADS.NAME OpenVocabularyROIHeads, not {heads}"
        )
    if input_shape.channels != 3:
        raise ConfigError(
            f"{CLIP_BACKBONE_NAME} takes 3-channel images, got MODEL.PIXEL_MEAN of "
            f"{input_shape.channels} channels"
        )
    fpn = cfg.MODEL.FPN
    return ClipResNetFPN(
        load_clip_backbone(cfg), list(fpn.IN_FEATURES), fpn.OUT_CHANNELS, fpn.NORM, fpn.FUSE_TYPE
    )

"""The frozen CLIP backbones of F-VLM in detectron2: ``build_clip_resnet_fpn_backbone`` and
``build_clip_vit_fpn_backbone``.

Registered in detectron2's ``BACKBONE_REGISTRY`` (``MODEL.BACKBONE.NAME``): the frozen image
tower of ``MODEL.OVDET.CLIP`` (:class:`~ovdet.core.clip_backbone.FrozenClipResNet` or
:class:`~ovdet.core.clip_vit_backbone.FrozenClipViT`, which own the input normalisation, the
freezing, the stages and the region embeddings) as the bottom-up of detectron2's own ``FPN``,
built from the ``MODEL.FPN.*`` keys as detectron2's ``build_resnet_fpn_backbone`` builds it. The
output also carries the tower's frozen map under
:data:`~ovdet.core.clip_tower.CLIP_FEATURES_KEY`; the RPN and the ROI heads read only their
``IN_FEATURES``, and
:class:`~ovdet.d2.roi_heads.OpenVocabularyROIHeads` hands that map to the head (CLIP rescoring
from the backbone, ``MODEL.OVDET.CLIP_RESCORING.SOURCE backbone``).
"""

from __future__ import annotations

import math
from typing import Dict

import torch
from detectron2.config import CfgNode
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, FPN, Backbone
from detectron2.modeling.backbone.fpn import LastLevelMaxPool
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, Res5ROIHeads

from ovdet.core.clip_backbone import load_clip_backbone
from ovdet.core.clip_tower import CLIP_FEATURES_KEY, CLIP_STAGES, FrozenClipTower
from ovdet.utils.errors import ConfigError

__all__ = [
    "ClipFPN",
    "ClipResNetFPN",
    "build_clip_resnet_fpn_backbone",
    "build_clip_vit_fpn_backbone",
]


class _ClipStages(Backbone):
    """The FPN's bottom-up: the CLIP tower's stages, computed once by :class:`ClipFPN` and
    passed through (so the tower's frozen map is at hand for the head as well)."""

    def __init__(self, clip: FrozenClipTower) -> None:
        super().__init__()
        self._out_features = list(CLIP_STAGES)
        self._out_feature_channels = dict(clip.out_channels)
        self._out_feature_strides = dict(clip.strides)

    def forward(self, stages: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        return stages


class ClipFPN(Backbone):
    """A frozen CLIP image tower (ResNet or ViT) with a trained detectron2 ``FPN`` on its stages
    (F-VLM).

    Args:
        clip: the frozen CLIP tower (``self.clip``; its ``train()`` keeps it in eval mode).
        in_features: the stages the FPN reads (``MODEL.FPN.IN_FEATURES``, from ``res2``..``res5``).
        out_channels, norm, fuse_type: ``MODEL.FPN.OUT_CHANNELS``, ``NORM``, ``FUSE_TYPE``.
    """

    def __init__(
        self,
        clip: FrozenClipTower,
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
        """Tensor[B, 3, H, W] (detector-normalised, H and W multiples of
        :attr:`size_divisibility`) -> the FPN levels ``p2``..``p6`` Tensor[B, C, H_l, W_l] and
        ``"clip"``: the tower's frozen map (a ResNet's res5 Tensor[B, C_5, H / 32, W / 32]; a
        ViT's patch tokens before its last block Tensor[B, width, H / P, W / P])."""
        stages = self.clip(x)
        features = self.fpn(stages)
        features[CLIP_FEATURES_KEY] = stages[CLIP_FEATURES_KEY]
        return features

    def output_shape(self) -> Dict[str, ShapeSpec]:
        shapes = self.fpn.output_shape()
        shapes[CLIP_FEATURES_KEY] = ShapeSpec(
            channels=self.clip.clip_channels, stride=self.clip.clip_stride
        )
        return shapes

    @property
    def size_divisibility(self) -> int:
        """The FPN's (32), and a multiple of a ViT's patch size."""
        return math.lcm(self.fpn.size_divisibility, self.clip.size_divisibility)

    @property
    def padding_constraints(self) -> Dict[str, int]:
        return self.fpn.padding_constraints


#: The name of :class:`ClipFPN` when it took ResNet towers only.
ClipResNetFPN = ClipFPN


def _build_clip_fpn(cfg: CfgNode, input_shape: ShapeSpec) -> ClipFPN:
    """:class:`ClipFPN` on the CLIP tower of ``MODEL.OVDET.CLIP`` that ``MODEL.BACKBONE.NAME``
    names, normalised from ``MODEL.PIXEL_MEAN/STD`` and ``INPUT.FORMAT``.

    Raises:
        ConfigError: with C4 ROI heads (``Res5ROIHeads``: this backbone builds an FPN), a
            non-RGB input, or a CLIP whose image tower is not the kind the name says.
    """
    name, heads = cfg.MODEL.BACKBONE.NAME, cfg.MODEL.ROI_HEADS.NAME
    if heads in ROI_HEADS_REGISTRY and issubclass(ROI_HEADS_REGISTRY.get(heads), Res5ROIHeads):
        raise ConfigError(
            f"MODEL.BACKBONE.NAME {name} builds an FPN: use it with "
            f"MODEL.ROI_HEADS.NAME OpenVocabularyROIHeads, not {heads}"
        )
    if input_shape.channels != 3:
        raise ConfigError(
            f"{name} takes 3-channel images, got MODEL.PIXEL_MEAN of "
            f"{input_shape.channels} channels"
        )
    fpn = cfg.MODEL.FPN
    return ClipFPN(
        load_clip_backbone(cfg), list(fpn.IN_FEATURES), fpn.OUT_CHANNELS, fpn.NORM, fpn.FUSE_TYPE
    )


@BACKBONE_REGISTRY.register()
def build_clip_resnet_fpn_backbone(cfg: CfgNode, input_shape: ShapeSpec) -> ClipFPN:
    """:class:`ClipFPN` on a ResNet CLIP (:class:`~ovdet.core.clip_backbone.FrozenClipResNet`);
    errors as :func:`_build_clip_fpn`."""
    return _build_clip_fpn(cfg, input_shape)


@BACKBONE_REGISTRY.register()
def build_clip_vit_fpn_backbone(cfg: CfgNode, input_shape: ShapeSpec) -> ClipFPN:
    """:class:`ClipFPN` on a ViT CLIP (:class:`~ovdet.core.clip_vit_backbone.FrozenClipViT`);
    errors as :func:`_build_clip_fpn`."""
    return _build_clip_fpn(cfg, input_shape)

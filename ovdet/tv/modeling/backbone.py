"""ResNets and ResNet + FPN backbones of the torchvision engine (``MODEL.RESNETS``,
``MODEL.BACKBONE``)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

from ovdet.core.clip_backbone import load_clip_backbone
from ovdet.core.clip_tower import (
    CLIP_BACKBONE_NAMES,
    CLIP_FEATURES_KEY,
    CLIP_STAGES,
    FrozenClipTower,
)
from ovdet.tv.modeling.fast_paths import fold_frozen_batchnorm
from ovdet.tv.modeling.sync_batchnorm import GlobalBatchNorm2d
from ovdet.utils.errors import CheckpointError, ConfigError

__all__ = ["ClipFPN", "ClipResNetFPN", "ResNetFPN", "build_backbone", "build_resnet"]

logger = logging.getLogger(__name__)

_DEPTHS = (18, 34, 50, 101)
# "SyncBN": batch statistics of the global batch under torchrun (detectron2's name for it)
_NORMS = {"FrozenBN": FrozenBatchNorm2d, "BN": nn.BatchNorm2d, "SyncBN": GlobalBatchNorm2d}
# ResNet stages in detectron2's order: FREEZE_AT = k freezes the first k of them.
_STAGES = (("conv1", "bn1"), ("layer1",), ("layer2",), ("layer3",), ("layer4",))


def _load_backbone_weights(body: nn.Module, weights: str) -> None:
    if not weights:
        return
    path = Path(weights)
    if path.suffix in (".pth", ".pt") or path.exists():
        if not path.is_file():
            raise CheckpointError(f"backbone weights file {path} does not exist")
        state = torch.load(path, map_location="cpu", weights_only=True)
    else:
        from torchvision.models import get_weight

        try:
            state = get_weight(weights).get_state_dict(progress=True, weights_only=True)
        except (ValueError, KeyError) as e:
            raise ConfigError(f"unknown torchvision weights {weights!r}: {e}") from e
        except OSError as e:
            raise CheckpointError(f"cannot download {weights}: {e}; pass a local .pth") from e
    missing, unexpected = body.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing:
        raise CheckpointError(f"backbone weights {weights} lack {len(missing)} keys: {missing[:3]}")
    logger.info("Loaded backbone weights from %s", weights)


class ResNetFPN(BackboneWithFPN):
    """torchvision's ``BackboneWithFPN`` that runs channels-last (NHWC), in training and at
    inference.

    oneDNN (CPU) and cuDNN convolutions are faster on channels-last tensors, forward and
    backward; the output feature maps are then channels-last too, which every later layer
    accepts. With the vectorised RoIAlign backward (:mod:`ovdet.tv.modeling.roi_pooling`) it takes
    10-16% off a training step of the synthetic benchmark's ResNet-18 FPN on one CPU thread
    (docs/speed.md#channels-last-training). ``channels_last = False`` gives torchvision's
    behaviour (see :func:`~ovdet.tv.modeling.fast_paths.use_reference_paths`).
    """

    channels_last: bool = True

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Tensor[B, 3, H, W] -> FPN levels ``"0"``..``"3"``, ``"pool"``: Tensor[B, C, H_l, W_l]."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return super().forward(x)


def build_resnet(cfg) -> nn.Module:
    """A torchvision ResNet from ``MODEL.RESNETS.DEPTH`` / ``.NORM`` / ``.STRIDE_IN_1X1`` and
    ``MODEL.BACKBONE.FREEZE_AT`` / ``.WEIGHTS``, its ``fc`` unused.

    ``FREEZE_AT`` has detectron2's meaning: 0 trains every stage, 1 freezes the stem, 2 the stem
    and ``res2`` (detectron2's default), ..., 5 the whole ResNet. With ``NORM: FrozenBN`` the
    batch norms are folded into the convolutions before them (same names, same results; see
    :mod:`ovdet.tv.modeling.fast_paths`).
    """
    from torchvision.models import resnet

    depth = cfg.MODEL.RESNETS.DEPTH
    if depth not in _DEPTHS:
        raise ConfigError(f"MODEL.RESNETS.DEPTH must be one of {_DEPTHS}, got {depth!r}")
    norm = cfg.MODEL.RESNETS.NORM
    if norm not in _NORMS:
        raise ConfigError(f"MODEL.RESNETS.NORM must be one of {tuple(_NORMS)}, got {norm!r}")
    freeze_at = cfg.MODEL.BACKBONE.FREEZE_AT
    if not 0 <= freeze_at <= len(_STAGES):
        raise ConfigError(f"MODEL.BACKBONE.FREEZE_AT must be in 0..5, got {freeze_at}")
    body = getattr(resnet, f"resnet{depth}")(weights=None, norm_layer=_NORMS[norm])
    if cfg.MODEL.RESNETS.STRIDE_IN_1X1:
        _move_strides_to_1x1(body)
    _load_backbone_weights(body, cfg.MODEL.BACKBONE.WEIGHTS)
    frozen = tuple(name for stage in _STAGES[:freeze_at] for name in stage)
    for param_name, param in body.named_parameters():
        if param_name.split(".")[0] in frozen:
            param.requires_grad_(False)
    if norm == "FrozenBN":
        fold_frozen_batchnorm(body)
    return body


def _move_strides_to_1x1(body: nn.Module) -> None:
    """Put each bottleneck's stride in its first 1x1 convolution instead of its 3x3 one, as in
    detectron2's ``STRIDE_IN_1X1`` (MSRA) ResNets. Only bottleneck ResNets (50, 101) have it."""
    from torchvision.models.resnet import Bottleneck

    for block in body.modules():
        if isinstance(block, Bottleneck) and block.conv2.stride != (1, 1):
            block.conv1.stride, block.conv2.stride = block.conv2.stride, (1, 1)


class ClipFPN(nn.Module):
    """A frozen CLIP image tower (:class:`~ovdet.core.clip_backbone.FrozenClipResNet` or
    :class:`~ovdet.core.clip_vit_backbone.FrozenClipViT`) with a trained torchvision FPN on its
    res2-res5 (F-VLM).

    Its output is :class:`ResNetFPN`'s (levels ``"0"``..``"3"``, ``"pool"``) plus the tower's
    frozen map under :data:`~ovdet.core.clip_backbone.CLIP_FEATURES_KEY`, which the detector
    takes out before the RPN and hands to the head (CLIP rescoring from the backbone).

    Args:
        clip: the frozen CLIP tower.
        out_channels: the FPN's channels (``MODEL.FPN.OUT_CHANNELS``).
    """

    def __init__(self, clip: FrozenClipTower, out_channels: int) -> None:
        super().__init__()
        self.clip = clip
        self.fpn = FeaturePyramidNetwork(
            [clip.out_channels[s] for s in CLIP_STAGES],
            out_channels,
            extra_blocks=LastLevelMaxPool(),
        )
        self.out_channels = out_channels
        #: input sizes are padded to multiples of it (a ViT's patch size divides it)
        self.size_divisibility = clip.size_divisibility

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Tensor[B, 3, H, W] -> ``"0"``..``"3"``, ``"pool"``: Tensor[B, C, H_l, W_l] and
        ``"clip"``: the tower's map for the head (a ResNet's res5 Tensor[B, C_5, H / 32, W / 32];
        a ViT's patch tokens before its last block Tensor[B, width, H / P, W / P])."""
        stages = self.clip(x)
        features = self.fpn({str(i): stages[s] for i, s in enumerate(CLIP_STAGES)})
        features[CLIP_FEATURES_KEY] = stages[CLIP_FEATURES_KEY]
        return features


#: The name of :class:`ClipFPN` when it took ResNet towers only.
ClipResNetFPN = ClipFPN


def build_backbone(cfg) -> nn.Module:
    """The backbone of ``MODEL.BACKBONE.NAME``: ``build_resnet_fpn_backbone``, a torchvision
    ResNet (:func:`build_resnet`) + FPN with ``MODEL.FPN.OUT_CHANNELS``; or
    ``build_clip_resnet_fpn_backbone`` / ``build_clip_vit_fpn_backbone``, :class:`ClipFPN` on
    the CLIP of ``MODEL.OVDET.CLIP``."""
    name = cfg.MODEL.BACKBONE.NAME
    if name in CLIP_BACKBONE_NAMES:
        return ClipFPN(load_clip_backbone(cfg), cfg.MODEL.FPN.OUT_CHANNELS)
    if name.startswith("resnet") and name[6:].isdigit():  # an earlier release's key
        raise ConfigError(
            f"MODEL.BACKBONE.NAME {name} was renamed: use MODEL.RESNETS.DEPTH {name[6:]} (and "
            "MODEL.BACKBONE.NAME names the backbone builder, as in detectron2)"
        )
    if name != "build_resnet_fpn_backbone":
        raise ConfigError(
            "MODEL.BACKBONE.NAME must be one of "
            f"{('build_resnet_fpn_backbone', *CLIP_BACKBONE_NAMES)}, got {name!r}"
        )
    body = build_resnet(cfg)
    stage2 = body.inplanes // 8  # channels of layer1 (64 for ResNet-18/34, 256 for 50/101)
    return ResNetFPN(
        body,
        return_layers={"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"},
        in_channels_list=[stage2, stage2 * 2, stage2 * 4, stage2 * 8],
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        extra_blocks=LastLevelMaxPool(),
    )

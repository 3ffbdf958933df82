"""Builders of the torchvision engine: meta-architectures registered by name, as in detectron2.

``MODEL.META_ARCHITECTURE`` names an entry of :data:`META_ARCH_REGISTRY`; each entry is a
function ``(cfg, num_classes) -> nn.Module``. ``OpenVocabularyRCNN`` is ovdet's detector;
``FasterRCNN`` is torchvision's closed-set Faster R-CNN with the same backbone, heads and inputs
(the baseline of the benchmarks). Register another with ``@META_ARCH_REGISTRY.register(name)``.
"""

from __future__ import annotations

from typing import Callable

from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.rpn import RPNHead

from ovdet.core.clip_tower import CLIP_BACKBONE_NAMES
from ovdet.core.head import OpenVocabularyHead
from ovdet.tv.modeling.backbone import ClipFPN, build_backbone, build_resnet
from ovdet.tv.modeling.c4 import (
    C4_STRIDE,
    DetectronAnchorGenerator,
    DetectronRegionProposalNetwork,
    Res4RoIAlign,
    Res5BoxHead,
    ResNetC4,
)
from ovdet.tv.modeling.fast_paths import use_pointwise_matmul
from ovdet.tv.modeling.rcnn import NormalizeOnlyTransform, OpenVocabularyFasterRCNN
from ovdet.tv.modeling.roi_pooling import MultiScaleRoIAlign
from ovdet.utils.errors import ConfigError

__all__ = [
    "META_ARCH_REGISTRY",
    "Registry",
    "build_closed_set_rcnn",
    "build_mask_branch",
    "build_model",
    "build_open_vocabulary_rcnn",
    "is_c4",
    "is_open_vocabulary",
]

ModelBuilder = Callable[..., nn.Module]


class Registry:
    """Name -> builder, with a helpful error for unknown names.

    Args:
        what: the config key whose values are the names (for error messages).
    """

    def __init__(self, what: str) -> None:
        self.what = what
        self._builders: dict[str, ModelBuilder] = {}

    def register(self, name: str) -> Callable[[ModelBuilder], ModelBuilder]:
        def deco(fn: ModelBuilder) -> ModelBuilder:
            if name in self._builders:
                raise KeyError(f"{self.what} {name!r} is already registered")
            self._builders[name] = fn
            return fn

        return deco

    def get(self, name: str) -> ModelBuilder:
        if name not in self._builders:
            raise ConfigError(f"{self.what} must be one of {sorted(self._builders)}, got {name!r}")
        return self._builders[name]

    def __contains__(self, name: str) -> bool:
        return name in self._builders


META_ARCH_REGISTRY = Registry("MODEL.META_ARCHITECTURE")

# MODEL.ROI_HEADS.NAME: ResNet + FPN with a two-layer MLP box head, or R50-C4.
ROI_HEADS_NAMES = ("StandardROIHeads", "Res5ROIHeads")


def is_c4(cfg) -> bool:
    """Whether the config builds the C4 architecture (``MODEL.ROI_HEADS.NAME Res5ROIHeads``).

    Raises:
        ConfigError: for another name than :data:`ROI_HEADS_NAMES`.
    """
    name = cfg.MODEL.ROI_HEADS.NAME
    if name not in ROI_HEADS_NAMES:
        raise ConfigError(f"MODEL.ROI_HEADS.NAME must be one of {ROI_HEADS_NAMES}, got {name!r}")
    return name == "Res5ROIHeads"


def _detector_kwargs(cfg) -> dict:
    sizes = tuple(tuple(s) for s in cfg.MODEL.ANCHOR_GENERATOR.SIZES)
    ratios = tuple(tuple(r) for r in cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS)
    if len(ratios) == 1:
        ratios = ratios * len(sizes)
    rpn, roi = cfg.MODEL.RPN, cfg.MODEL.ROI_HEADS
    if len(roi.IOU_THRESHOLDS) != 1:
        raise ConfigError(
            "MODEL.ROI_HEADS.IOU_THRESHOLDS takes one threshold in this engine (foreground at or "
            f"above it), got {list(roi.IOU_THRESHOLDS)}"
        )
    iou = roi.IOU_THRESHOLDS[0]
    return dict(
        rpn_anchor_generator=AnchorGenerator(sizes, ratios),
        rpn_pre_nms_top_n_train=rpn.PRE_NMS_TOPK_TRAIN,
        rpn_pre_nms_top_n_test=rpn.PRE_NMS_TOPK_TEST,
        rpn_post_nms_top_n_train=rpn.POST_NMS_TOPK_TRAIN,
        rpn_post_nms_top_n_test=rpn.POST_NMS_TOPK_TEST,
        rpn_nms_thresh=rpn.NMS_THRESH,
        rpn_batch_size_per_image=rpn.BATCH_SIZE_PER_IMAGE,
        rpn_positive_fraction=rpn.POSITIVE_FRACTION,
        box_roi_pool=MultiScaleRoIAlign(
            ["0", "1", "2", "3"], cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION, sampling_ratio=2
        ),
        box_head=None,
        box_score_thresh=roi.SCORE_THRESH_TEST,
        box_nms_thresh=roi.NMS_THRESH_TEST,
        box_detections_per_img=cfg.TEST.DETECTIONS_PER_IMAGE,
        box_fg_iou_thresh=iou,
        box_bg_iou_thresh=iou,
        box_batch_size_per_image=roi.BATCH_SIZE_PER_IMAGE,
        box_positive_fraction=roi.POSITIVE_FRACTION,
        min_size=1,
        max_size=1,
    )


def _backbone_and_box_head(cfg, kwargs: dict) -> tuple[nn.Module, nn.Module, int]:
    """(backbone, box head, box feature size); for C4 also sets the anchors, the RPN head and
    the RoI pooler of ``kwargs`` (torchvision's ``FasterRCNN`` arguments) to C4's (the
    proposal filtering is set by :func:`_c4_proposals` once the model is built)."""
    if cfg.MODEL.BACKBONE.NAME in CLIP_BACKBONE_NAMES and is_c4(cfg):
        raise ConfigError(
            f"MODEL.BACKBONE.NAME {cfg.MODEL.BACKBONE.NAME} builds an FPN: use it with "
            "MODEL.ROI_HEADS.NAME StandardROIHeads, not Res5ROIHeads"
        )
    if not is_c4(cfg):
        backbone = build_backbone(cfg)
        res, fc_dim = cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION, cfg.MODEL.ROI_BOX_HEAD.FC_DIM
        return backbone, TwoMLPHead(backbone.out_channels * res**2, fc_dim), fc_dim
    body = build_resnet(cfg)
    backbone = ResNetC4(body)
    if len(cfg.MODEL.ANCHOR_GENERATOR.SIZES) != 1:
        raise ConfigError(
            "C4 has one feature map: MODEL.ANCHOR_GENERATOR.SIZES must be one list, e.g. "
            f"[[32, 64, 128, 256, 512]], got {cfg.MODEL.ANCHOR_GENERATOR.SIZES}"
        )
    anchors = DetectronAnchorGenerator(
        cfg.MODEL.ANCHOR_GENERATOR.SIZES, cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS[:1], [C4_STRIDE]
    )
    kwargs["rpn_anchor_generator"] = anchors
    kwargs["rpn_head"] = RPNHead(backbone.out_channels, anchors.num_anchors_per_location()[0])
    kwargs["box_roi_pool"] = Res4RoIAlign(cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION)
    return backbone, Res5BoxHead(body.layer4), body.inplanes


@META_ARCH_REGISTRY.register("OpenVocabularyRCNN")
def build_open_vocabulary_rcnn(
    cfg, num_classes: int | None = None, *, embed_dim: int | None = None
) -> OpenVocabularyFasterRCNN:
    """ovdet's detector; no vocabulary or CLIP teacher yet (``num_classes`` is not used).

    Args:
        embed_dim: CLIP's embedding size; default ``MODEL.OVDET.EMBED_DIM`` or CLIP's own.
    """
    kwargs = _detector_kwargs(cfg)
    backbone, kwargs["box_head"], box_dim = _backbone_and_box_head(cfg, kwargs)
    head = OpenVocabularyHead.from_config(cfg, box_dim, embed_dim)
    divisibility = backbone.size_divisibility if isinstance(backbone, ClipFPN) else 32
    model = OpenVocabularyFasterRCNN(
        backbone,
        head,
        box_loss_weight=cfg.MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_WEIGHT,
        input_transform=_input_transform(cfg, divisibility),
        **build_mask_branch(cfg, backbone.out_channels),
        **kwargs,
    )
    _c4_proposals(cfg, model)
    use_pointwise_matmul(model)  # see ovdet.tv.modeling.fast_paths
    if isinstance(backbone, ClipFPN):
        head.set_clip_backbone(backbone.clip)
    return model


@META_ARCH_REGISTRY.register("FasterRCNN")
def build_closed_set_rcnn(cfg, num_classes: int | None = None) -> FasterRCNN:
    """torchvision's closed-set Faster R-CNN: ``num_classes`` foreground classes (labels 1..C)."""
    if not num_classes:
        raise ConfigError("the closed-set FasterRCNN needs the number of training classes")
    if cfg.MODEL.BACKBONE.NAME in CLIP_BACKBONE_NAMES:
        raise ConfigError(f"the closed-set FasterRCNN has no {cfg.MODEL.BACKBONE.NAME}")
    kwargs = _detector_kwargs(cfg)
    backbone, kwargs["box_head"], box_dim = _backbone_and_box_head(cfg, kwargs)
    model = FasterRCNN(
        backbone, box_predictor=FastRCNNPredictor(box_dim, num_classes + 1), **kwargs
    )
    model.transform = _input_transform(cfg)
    _c4_proposals(cfg, model)
    use_pointwise_matmul(model)  # see ovdet.tv.modeling.fast_paths
    return model


def build_mask_branch(cfg, in_channels: int) -> dict[str, nn.Module]:
    """The class-agnostic mask branch of ``MODEL.MASK_ON`` as ``OpenVocabularyFasterRCNN``'s
    ``mask_roi_pool``, ``mask_head`` and ``mask_predictor`` (torchvision's ``MaskRCNNHeads``
    and ``MaskRCNNPredictor`` with one output channel); ``{}`` when masks are off.

    Args:
        in_channels: channels of the pooled features (the FPN's).

    Raises:
        ConfigError: masks with C4, or per-class masks (``CLS_AGNOSTIC_MASK False``).
    """
    if not cfg.MODEL.MASK_ON:
        return {}
    if is_c4(cfg):
        raise ConfigError("MODEL.MASK_ON needs ResNet + FPN (StandardROIHeads), not C4")
    mask = cfg.MODEL.ROI_MASK_HEAD
    if not mask.CLS_AGNOSTIC_MASK:
        raise ConfigError(
            "MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK must be True: an open vocabulary has no fixed "
            "classes to predict one mask each for"
        )
    if mask.NUM_CONV < 1:
        raise ConfigError(f"MODEL.ROI_MASK_HEAD.NUM_CONV must be >= 1, got {mask.NUM_CONV}")
    return dict(
        mask_roi_pool=MultiScaleRoIAlign(
            ["0", "1", "2", "3"], mask.POOLER_RESOLUTION, sampling_ratio=2
        ),
        mask_head=MaskRCNNHeads(in_channels, [mask.CONV_DIM] * mask.NUM_CONV, 1),
        mask_predictor=MaskRCNNPredictor(mask.CONV_DIM, mask.CONV_DIM, 1),
    )


def _c4_proposals(cfg, model: nn.Module) -> None:
    """For C4, the RPN filters proposals as detectron2's (the same modules and settings; the
    subclass only replaces ``filter_proposals``)."""
    if is_c4(cfg):
        model.rpn.__class__ = DetectronRegionProposalNetwork


def _input_transform(cfg, fpn_size_divisibility: int = 32) -> NormalizeOnlyTransform:
    """Normalisation (``MODEL.PIXEL_MEAN/STD``, ``INPUT.FORMAT``) and batching: FPN pads to
    multiples of ``fpn_size_divisibility`` (32; lcm(32, P) on a CLIP ViT of patch size P), C4
    only to the batch's largest image (detectron2's size divisibilities)."""
    return NormalizeOnlyTransform.from_config(
        cfg, size_divisible=1 if is_c4(cfg) else fpn_size_divisibility
    )


def build_model(cfg, num_classes: int | None = None) -> nn.Module:
    """The detector named by ``MODEL.META_ARCHITECTURE`` (no vocabulary, no teacher yet).

    Args:
        num_classes: the number of training classes (needed by closed-set detectors).
    """
    return META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)(cfg, num_classes)


def is_open_vocabulary(cfg) -> bool:
    """Whether ``MODEL.META_ARCHITECTURE`` builds a detector with an open-vocabulary head."""
    return cfg.MODEL.META_ARCHITECTURE != "FasterRCNN"

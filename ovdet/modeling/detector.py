"""The open-vocabulary Faster R-CNN of the torchvision engine, and its builders."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import TwoMLPHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import FrozenBatchNorm2d, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from ovdet.errors import CheckpointError, ConfigError
from ovdet.modeling.box_predictor import OpenVocabularyBoxPredictor
from ovdet.modeling.clip_teacher import ClipRegionTeacher
from ovdet.modeling.losses import vild_image_loss
from ovdet.modeling.roi_heads import OpenVocabularyRoIHeads
from ovdet.modeling.zero_shot_classifier import ZeroShotClassifier

__all__ = [
    "OpenVocabularyRCNN",
    "PIXEL_MEAN",
    "PIXEL_STD",
    "build_backbone",
    "build_closed_set_detector",
    "build_detector",
]

logger = logging.getLogger(__name__)

# ImageNet statistics of torchvision's ResNets, for RGB inputs in [0, 1].
PIXEL_MEAN = (0.485, 0.456, 0.406)
PIXEL_STD = (0.229, 0.224, 0.225)
_BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101")


class NormalizeOnlyTransform(GeneralizedRCNNTransform):
    """Normalises and batches images; resizing is done by the data pipeline (as in detectron2).

    The mean and std are buffers on the model's device (torchvision's transform copies them
    from Python lists to the device for every image).
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.register_buffer(
            "pixel_mean", torch.tensor(self.image_mean).view(3, 1, 1), persistent=False
        )
        self.register_buffer(
            "pixel_std", torch.tensor(self.image_std).view(3, 1, 1), persistent=False
        )

    def resize(self, image, target=None):
        return image, target

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        """Tensor[3, H, W] in [0, 1] -> normalised."""
        if not image.is_floating_point():
            raise TypeError(f"images must be float tensors in [0, 1], got {image.dtype}")
        return (image - self.pixel_mean.to(image)) / self.pixel_std.to(image)

    def unnormalize(self, tensors: torch.Tensor) -> torch.Tensor:
        """Tensor[B, 3, H, W] normalised -> back in [0, 1] (padding becomes the mean)."""
        return tensors * self.pixel_std.to(tensors) + self.pixel_mean.to(tensors)


class OpenVocabularyRCNN(FasterRCNN):
    """Faster R-CNN + FPN whose box head scores regions against CLIP text embeddings.

    Inputs are lists of Tensor[3, H, W] RGB images in [0, 1], already resized. Training targets
    are dicts with ``boxes`` Tensor[K, 4] (x1, y1, x2, y2) and ``labels`` Tensor[K] in 1..C;
    offline distillation also needs ``distill_boxes`` Tensor[M, 4] and ``distill_embeddings``
    Tensor[M, D].

    Attributes:
        distill_mode: ``"none"``, ``"online"`` or ``"offline"``.
        clip_teacher: the CLIP region teacher (online distillation and the inference ensemble),
            or None. Its weights are never saved in checkpoints.
    """

    roi_heads: OpenVocabularyRoIHeads

    def __init__(
        self,
        backbone: nn.Module,
        roi_heads_kwargs: dict,
        box_predictor: OpenVocabularyBoxPredictor,
        distill_mode: str = "none",
        distill_weight: float = 0.5,
        distill_num_proposals: int = 32,
        **kwargs,
    ) -> None:
        super().__init__(backbone, num_classes=None, box_predictor=box_predictor, **kwargs)
        old = self.roi_heads
        self.roi_heads = OpenVocabularyRoIHeads(
            old.box_roi_pool,
            old.box_head,
            box_predictor,
            fg_iou_thresh=old.proposal_matcher.high_threshold,
            bg_iou_thresh=old.proposal_matcher.low_threshold,
            batch_size_per_image=old.fg_bg_sampler.batch_size_per_image,
            positive_fraction=old.fg_bg_sampler.positive_fraction,
            bbox_reg_weights=old.box_coder.weights,
            score_thresh=old.score_thresh,
            nms_thresh=old.nms_thresh,
            detections_per_img=old.detections_per_img,
            **roi_heads_kwargs,
        )
        self.transform = NormalizeOnlyTransform(1, 1, PIXEL_MEAN, PIXEL_STD)
        if distill_mode not in ("none", "online", "offline"):
            raise ConfigError(
                f"MODEL.OVDET.DISTILL.MODE must be none/online/offline, got {distill_mode!r}"
            )
        self.distill_mode = distill_mode
        self.distill_weight = distill_weight
        self.distill_num_proposals = distill_num_proposals
        self.clip_teacher: ClipRegionTeacher | None = None

    def set_vocabulary(self, text_embeddings: torch.Tensor, is_novel: torch.Tensor | None = None):
        """Swap the vocabulary (Tensor[C, D]); ``is_novel`` (BoolTensor[C]) drives the ensemble."""
        self.roi_heads.set_vocabulary(text_embeddings, is_novel)

    def set_clip_teacher(self, teacher: ClipRegionTeacher | None) -> None:
        self.clip_teacher = teacher
        if teacher is not None:
            teacher.to(next(self.parameters()).device)

    def enable_ensemble(
        self,
        enabled: bool,
        base_weight: float = 0.67,
        novel_weight: float = 0.33,
        clip_temperature: float = 100.0,
        num_proposals: int = 100,
    ) -> None:
        """Turn the ViLD-ensemble on or off at inference (needs :meth:`set_clip_teacher`)."""
        if enabled and self.clip_teacher is None:
            raise RuntimeError("the ensemble needs a CLIP teacher; call set_clip_teacher() first")
        self.roi_heads.ensemble = (
            (self.clip_teacher, base_weight, novel_weight, clip_temperature, num_proposals)
            if enabled
            else None
        )

    def _unnormalize(self, tensors: torch.Tensor) -> torch.Tensor:
        """The batched, normalised images back in [0, 1] (for the CLIP teacher)."""
        return self.transform.unnormalize(tensors)

    def forward(self, images, targets=None):
        """Losses dict (training) or a list of detection dicts (inference), as torchvision."""
        images_t, targets = self.transform(images, targets)
        features = self.backbone(images_t.tensors)
        proposals, proposal_losses = self.rpn(images_t, features, targets)
        sizes = images_t.image_sizes
        if not self.training:
            raw = None
            if self.roi_heads.ensemble is not None:
                raw = self._unnormalize(images_t.tensors)
            detections, _ = self.roi_heads(features, proposals, sizes, images=raw)
            return detections
        _, losses = self.roi_heads(features, proposals, sizes, targets)
        losses.update(proposal_losses)
        if self.distill_mode != "none" and self.distill_weight > 0:
            losses["loss_image"] = self.distill_weight * self._distillation_loss(
                images_t.tensors, features, proposals, sizes, targets
            )
        return losses

    def _distillation_loss(self, tensors, features, proposals, sizes, targets) -> torch.Tensor:
        if self.distill_mode == "online":
            if self.clip_teacher is None:
                raise RuntimeError("online distillation needs a CLIP teacher (set_clip_teacher)")
            boxes = [p[: self.distill_num_proposals].detach() for p in proposals]
            teacher = self.clip_teacher(self._unnormalize(tensors), boxes)
        else:
            try:
                boxes = [t["distill_boxes"] for t in targets]
                teacher = torch.cat([t["distill_embeddings"] for t in targets])
            except KeyError as e:
                raise RuntimeError(
                    "offline distillation needs 'distill_boxes' and 'distill_embeddings' in the "
                    "targets; set MODEL.OVDET.DISTILL.EMBEDDINGS_FILE"
                ) from e
        student = self.roi_heads.region_embeddings(features, boxes, sizes)
        return vild_image_loss(student, teacher.to(student.device))

    def detector_state_dict(self) -> dict:
        """The state dict without the (frozen, separately loaded) CLIP teacher."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("clip_teacher.")}


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
            state = get_weight(weights).get_state_dict(progress=True)
        except (ValueError, KeyError) as e:
            raise ConfigError(f"unknown torchvision weights {weights!r}: {e}") from e
        except OSError as e:
            raise CheckpointError(f"cannot download {weights}: {e}; pass a local .pth") from e
    missing, unexpected = body.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing:
        raise CheckpointError(f"backbone weights {weights} lack {len(missing)} keys: {missing[:3]}")
    logger.info("Loaded backbone weights from %s", weights)


def build_backbone(cfg) -> nn.Module:
    """A ResNet + FPN backbone (torchvision) from ``MODEL.BACKBONE``."""
    name = cfg.MODEL.BACKBONE.NAME
    if name not in _BACKBONES:
        raise ConfigError(f"MODEL.BACKBONE.NAME must be one of {_BACKBONES}, got {name!r}")
    norm = FrozenBatchNorm2d if cfg.MODEL.BACKBONE.FROZEN_BN else nn.BatchNorm2d
    from torchvision.models import resnet

    body = getattr(resnet, name)(weights=None, norm_layer=norm)
    _load_backbone_weights(body, cfg.MODEL.BACKBONE.WEIGHTS)
    trainable = cfg.MODEL.BACKBONE.TRAINABLE_LAYERS
    if not 0 <= trainable <= 5:
        raise ConfigError(f"MODEL.BACKBONE.TRAINABLE_LAYERS must be in 0..5, got {trainable}")
    layers = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable]
    if trainable == 5:
        layers.append("bn1")
    for param_name, param in body.named_parameters():
        if all(not param_name.startswith(layer) for layer in layers):
            param.requires_grad_(False)
    stage2 = body.inplanes // 8  # channels of layer1 (64 for ResNet-18/34, 256 for 50/101)
    return BackboneWithFPN(
        body,
        return_layers={"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"},
        in_channels_list=[stage2, stage2 * 2, stage2 * 4, stage2 * 8],
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        extra_blocks=LastLevelMaxPool(),
    )


def _detector_kwargs(cfg) -> dict:
    sizes = tuple(tuple(s) for s in cfg.MODEL.ANCHOR_GENERATOR.SIZES)
    ratios = tuple(tuple(r) for r in cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS)
    if len(ratios) == 1:
        ratios = ratios * len(sizes)
    rpn, roi = cfg.MODEL.RPN, cfg.MODEL.ROI_HEADS
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
        box_score_thresh=roi.SCORE_THRESH_TEST,
        box_nms_thresh=roi.NMS_THRESH_TEST,
        box_detections_per_img=cfg.TEST.DETECTIONS_PER_IMAGE,
        box_fg_iou_thresh=roi.IOU_THRESHOLD,
        box_bg_iou_thresh=roi.IOU_THRESHOLD,
        box_batch_size_per_image=roi.BATCH_SIZE_PER_IMAGE,
        box_positive_fraction=roi.POSITIVE_FRACTION,
        min_size=1,
        max_size=1,
        image_mean=PIXEL_MEAN,
        image_std=PIXEL_STD,
    )


def _box_head(cfg, backbone) -> TwoMLPHead:
    res = cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION
    return TwoMLPHead(backbone.out_channels * res**2, cfg.MODEL.ROI_BOX_HEAD.FC_DIM)


def build_detector(cfg, embed_dim: int | None = None) -> OpenVocabularyRCNN:
    """Build the open-vocabulary detector from a config (no vocabulary set yet).

    Args:
        cfg: an ovdet config.
        embed_dim: CLIP's embedding dimension; default ``MODEL.OVDET.EMBED_DIM`` or, if 0, read
            from the CLIP model config named by ``MODEL.OVDET.CLIP``.
    """
    from ovdet.clip import ClipSpec

    ov = cfg.MODEL.OVDET
    embed_dim = embed_dim or ov.EMBED_DIM or ClipSpec.parse(ov.CLIP).embed_dim
    backbone = build_backbone(cfg)
    box_head = _box_head(cfg, backbone)
    fc_dim = cfg.MODEL.ROI_BOX_HEAD.FC_DIM
    predictor = OpenVocabularyBoxPredictor(
        fc_dim, ZeroShotClassifier.from_config(cfg, fc_dim, embed_dim)
    )
    return OpenVocabularyRCNN(
        backbone,
        dict(
            text_loss_weight=ov.TEXT_LOSS_WEIGHT,
            box_loss_weight=cfg.MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_WEIGHT,
        ),
        predictor,
        distill_mode=ov.DISTILL.MODE,
        distill_weight=ov.DISTILL.WEIGHT,
        distill_num_proposals=ov.DISTILL.NUM_PROPOSALS,
        box_head=box_head,
        **_detector_kwargs(cfg),
    )


def build_closed_set_detector(cfg, num_classes: int) -> FasterRCNN:
    """torchvision's closed-set Faster R-CNN with the same backbone, heads and inputs.

    The baseline of benchmarks: ``num_classes`` foreground classes (labels 1..C) plus background.
    """
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor

    backbone = build_backbone(cfg)
    model = FasterRCNN(
        backbone,
        box_head=_box_head(cfg, backbone),
        box_predictor=FastRCNNPredictor(cfg.MODEL.ROI_BOX_HEAD.FC_DIM, num_classes + 1),
        **_detector_kwargs(cfg),
    )
    model.transform = NormalizeOnlyTransform(1, 1, PIXEL_MEAN, PIXEL_STD)
    return model

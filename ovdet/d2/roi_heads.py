"""ROI heads of the open-vocabulary detector for detectron2, with ViLD-image distillation."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Dict, Iterator, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import CfgNode, configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, StandardROIHeads
from detectron2.modeling.roi_heads.fast_rcnn import fast_rcnn_inference
from detectron2.structures import Boxes, ImageList, Instances

from ovdet.d2.output_layers import OpenVocabularyFastRCNNOutputLayers
from ovdet.d2.vocabulary import load_clip_for, text_embeddings, training_vocabulary
from ovdet.errors import ConfigError
from ovdet.modeling.clip_teacher import ClipRegionTeacher
from ovdet.modeling.ensemble import ensemble_scores
from ovdet.modeling.losses import vild_image_loss

__all__ = ["EnsembleSettings", "OpenVocabularyROIHeads"]

logger = logging.getLogger(__name__)

_DISTILL_MODES = ("none", "online", "offline")


@dataclass(frozen=True)
class EnsembleSettings:
    """ViLD-ensemble at inference (``MODEL.OVDET.ENSEMBLE``).

    Attributes:
        base_weight: detector weight for classes of the training vocabulary.
        novel_weight: detector weight for the other classes.
        clip_temperature: temperature of CLIP's softmax over the vocabulary.
        num_proposals: regions per image rescored by CLIP (the top ones by detector score).
    """

    base_weight: float = 0.67
    novel_weight: float = 0.33
    clip_temperature: float = 100.0
    num_proposals: int = 100


@ROI_HEADS_REGISTRY.register()
class OpenVocabularyROIHeads(StandardROIHeads):
    """``StandardROIHeads`` with a CLIP text classifier, ViLD-image distillation and the ensemble.

    The box predictor is :class:`~ovdet.d2.output_layers.OpenVocabularyFastRCNNOutputLayers`;
    its vocabulary at build time is the training vocabulary (``MODEL.OVDET.VOCABULARY`` or the
    training datasets' base classes), and ``num_classes`` follows it (``MODEL.ROI_HEADS.
    NUM_CLASSES`` is ignored). :meth:`set_vocabulary` swaps the classes.

    Training adds ``loss_image`` when ``MODEL.OVDET.DISTILL.MODE`` is ``"online"``: the top
    ``NUM_PROPOSALS`` RPN proposals of each image (before sampling) are cropped from the input
    image and embedded by the frozen CLIP image tower; their region embeddings are pulled towards
    those by an L1 loss (ViLD-image). With ``"offline"``, the regions and CLIP embeddings come
    precomputed from ``MODEL.OVDET.DISTILL.EMBEDDINGS_FILE`` (see :mod:`ovdet.d2.distillation`;
    every stored region of the image is used). Inference can rescore the detections with CLIP
    crop scores (``MODEL.OVDET.ENSEMBLE.ENABLED``).

    The CLIP teacher is deliberately not a registered submodule: it is frozen, loaded from
    ``MODEL.OVDET.CLIP`` at build time, and neither saved in checkpoints nor seen by the
    optimizer or DDP.

    Box-only: mask and keypoint heads are not supported.
    """

    box_predictor: OpenVocabularyFastRCNNOutputLayers

    @configurable
    def __init__(
        self,
        *,
        distill_mode: str = "none",
        distill_weight: float = 0.5,
        distill_num_proposals: int = 32,
        clip_teacher: ClipRegionTeacher | None = None,
        ensemble: EnsembleSettings | None = None,
        pixel_mean: Sequence[float] = (103.530, 116.280, 123.675),
        pixel_std: Sequence[float] = (1.0, 1.0, 1.0),
        input_format: str = "BGR",
        **kwargs,
    ) -> None:
        """
        Args:
            distill_mode: ``"none"``, ``"online"`` or ``"offline"`` (regions and embeddings
                given by :meth:`offline_targets`).
            distill_weight: weight of ``loss_image``.
            distill_num_proposals: proposals distilled per image.
            clip_teacher: the CLIP region teacher (needed by distillation and the ensemble).
            ensemble: ViLD-ensemble settings, or ``None`` to score with the detector alone.
            pixel_mean, pixel_std: the model's input normalisation (``MODEL.PIXEL_MEAN/STD``),
                in the channel order of ``input_format``; used to give CLIP RGB images in [0, 1].
            input_format: ``"BGR"`` or ``"RGB"`` (``INPUT.FORMAT``).
            **kwargs: the arguments of ``StandardROIHeads``; ``box_predictor`` must be an
                :class:`~ovdet.d2.output_layers.OpenVocabularyFastRCNNOutputLayers`.
        """
        super().__init__(**kwargs)
        if not isinstance(self.box_predictor, OpenVocabularyFastRCNNOutputLayers):
            raise TypeError("box_predictor must be an OpenVocabularyFastRCNNOutputLayers")
        if self.mask_on or self.keypoint_on:
            raise ConfigError("OpenVocabularyROIHeads supports boxes only (no mask/keypoint head)")
        if distill_mode not in _DISTILL_MODES:
            raise ConfigError(
                f"MODEL.OVDET.DISTILL.MODE must be one of {_DISTILL_MODES}, got {distill_mode!r}"
            )
        online = distill_mode == "online" and distill_weight > 0
        if (online or ensemble is not None) and clip_teacher is None:
            raise ConfigError("online distillation and the ensemble need a CLIP teacher")
        if input_format not in ("BGR", "RGB"):
            raise ConfigError(
                f"INPUT.FORMAT must be BGR or RGB for the CLIP teacher, got {input_format!r}"
            )
        self.distill_mode = distill_mode
        self.distill_weight = float(distill_weight)
        self.distill_num_proposals = int(distill_num_proposals)
        self.ensemble = ensemble
        self.input_format = input_format
        self.register_buffer(
            "pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1), False
        )
        self.register_buffer(
            "pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1), False
        )
        # Not a submodule (see the class docstring): bypass nn.Module's registration.
        object.__setattr__(self, "clip_teacher", clip_teacher)
        self._offline_targets: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        if self.box_predictor.num_classes:
            self.num_classes = self.box_predictor.num_classes

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: Dict[str, ShapeSpec]) -> dict:
        if cfg.MODEL.MASK_ON or cfg.MODEL.KEYPOINT_ON:
            raise ConfigError("OpenVocabularyROIHeads supports boxes only; set MODEL.MASK_ON False")
        ov = cfg.MODEL.OVDET
        if ov.DISTILL.MODE == "offline" and cfg.MODEL.META_ARCHITECTURE != "OpenVocabularyRCNN":
            raise ConfigError(
                "offline distillation needs MODEL.META_ARCHITECTURE OpenVocabularyRCNN (it passes "
                "the precomputed regions to the ROI heads)"
            )
        ret = super().from_config(cfg, input_shape)
        vocabulary = training_vocabulary(cfg)
        ret["box_predictor"].set_vocabulary(text_embeddings(cfg, vocabulary))
        if len(vocabulary) != cfg.MODEL.ROI_HEADS.NUM_CLASSES:
            logger.info(
                "MODEL.ROI_HEADS.NUM_CLASSES (%d) is replaced by the %d classes of the training "
                "vocabulary",
                cfg.MODEL.ROI_HEADS.NUM_CLASSES,
                len(vocabulary),
            )
        ret["num_classes"] = len(vocabulary)
        ret.update(
            distill_mode=ov.DISTILL.MODE,
            distill_weight=ov.DISTILL.WEIGHT,
            distill_num_proposals=ov.DISTILL.NUM_PROPOSALS,
            pixel_mean=tuple(cfg.MODEL.PIXEL_MEAN),
            pixel_std=tuple(cfg.MODEL.PIXEL_STD),
            input_format=cfg.INPUT.FORMAT,
        )
        distills = ov.DISTILL.MODE == "online" and ov.DISTILL.WEIGHT > 0
        if distills or ov.ENSEMBLE.ENABLED:
            ret["clip_teacher"] = ClipRegionTeacher.from_clip(
                load_clip_for(cfg), ov.DISTILL.CROP_SCALES, ov.DISTILL.CROP_SIZE
            )
        if ov.ENSEMBLE.ENABLED:
            e = ov.ENSEMBLE
            ret["ensemble"] = EnsembleSettings(
                e.BASE_WEIGHT, e.NOVEL_WEIGHT, e.CLIP_TEMPERATURE, e.NUM_PROPOSALS
            )
        return ret

    @classmethod
    def _init_box_head(cls, cfg: CfgNode, input_shape: Dict[str, ShapeSpec]) -> dict:
        ret = super()._init_box_head(cfg, input_shape)
        ret["box_predictor"] = OpenVocabularyFastRCNNOutputLayers(cfg, ret["box_head"].output_shape)
        return ret

    # ---------------------------------------------------------------- vocabulary

    def set_vocabulary(
        self, text_embeddings: torch.Tensor, is_novel: torch.Tensor | None = None
    ) -> None:
        """Swap the classes: Tensor[C, D] text embeddings, optional BoolTensor[C] novelty."""
        self.box_predictor.set_vocabulary(text_embeddings, is_novel)
        self.num_classes = self.box_predictor.num_classes

    def get_vocabulary(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The current (Tensor[C, D] text embeddings, BoolTensor[C] novelty)."""
        return self.box_predictor.get_vocabulary()

    # ---------------------------------------------------------------- forward

    def forward(
        self,
        images: ImageList,
        features: Dict[str, torch.Tensor],
        proposals: List[Instances],
        targets: List[Instances] | None = None,
    ) -> Tuple[List[Instances], Dict[str, torch.Tensor]]:
        """See ``StandardROIHeads.forward``; training adds ``loss_image`` when distilling."""
        if self.training:
            if not targets:
                raise ValueError("'targets' are required in training")
            distill_boxes = None
            if self.distill_mode == "online" and self.distill_weight > 0:
                distill_boxes = [p.proposal_boxes[: self.distill_num_proposals] for p in proposals]
            proposals = self.label_and_sample_proposals(proposals, targets)
            losses = self._forward_box(features, proposals)
            if distill_boxes is not None:
                losses["loss_image"] = self.distill_weight * self.distillation_loss(
                    images, features, distill_boxes
                )
            elif self.distill_mode == "offline" and self.distill_weight > 0:
                losses["loss_image"] = self.distill_weight * self._offline_distillation_loss(
                    features
                )
            return proposals, losses
        if self.ensemble is not None:
            return self._forward_box_ensemble(images, features, proposals), {}
        return self._forward_box(features, proposals), {}

    def teacher_images(self, images: ImageList) -> torch.Tensor:
        """The padded input batch as CLIP wants it: Tensor[B, 3, H, W], RGB in [0, 1]."""
        x = images.tensor.float() * self.pixel_std + self.pixel_mean
        if self.input_format == "BGR":
            x = x.flip(1)
        return (x / 255.0).clamp_(0.0, 1.0)

    def _teacher(self, device: torch.device) -> ClipRegionTeacher:
        teacher = self.clip_teacher
        if teacher is None:
            raise RuntimeError("no CLIP teacher was built (MODEL.OVDET.DISTILL / ENSEMBLE)")
        if teacher.mean.device != device:
            teacher.to(device)
        return teacher

    def region_embeddings(
        self, features: Dict[str, torch.Tensor], boxes: List[Boxes]
    ) -> torch.Tensor:
        """Region embeddings of given boxes (one ``Boxes`` per image) -> Tensor[sum N_i, D]."""
        feats = [features[f] for f in self.box_in_features]
        return self.box_predictor.embed(self.box_head(self.box_pooler(feats, boxes)))

    def distillation_loss(
        self, images: ImageList, features: Dict[str, torch.Tensor], boxes: List[Boxes]
    ) -> torch.Tensor:
        """ViLD-image L1 loss between region embeddings and CLIP embeddings of the same crops.

        Args:
            images: the normalised input batch.
            features: the backbone features.
            boxes: per image, the boxes to distil, in input-image pixels.
        """
        teacher = self._teacher(images.tensor.device)
        targets = teacher(self.teacher_images(images), [b.tensor for b in boxes])
        return vild_image_loss(self.region_embeddings(features, boxes), targets)

    @contextmanager
    def offline_targets(self, targets: list[tuple[torch.Tensor, torch.Tensor]]) -> Iterator[None]:
        """Precomputed distillation regions for the next forward pass (offline mode).

        Args:
            targets: per image, (boxes Tensor[M_i, 4] in input-image pixels, CLIP embeddings
                Tensor[M_i, D]).
        """
        self._offline_targets = targets
        try:
            yield
        finally:
            self._offline_targets = None

    def _offline_distillation_loss(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        if self._offline_targets is None:
            raise RuntimeError(
                "offline distillation needs the precomputed regions: use MODEL.META_ARCHITECTURE "
                "OpenVocabularyRCNN and OfflineDistillationMapper (OpenVocabularyTrainer does)"
            )
        boxes = [Boxes(b) for b, _ in self._offline_targets]
        teacher = torch.cat([e for _, e in self._offline_targets])
        return vild_image_loss(self.region_embeddings(features, boxes), teacher)

    def _forward_box_ensemble(
        self, images: ImageList, features: Dict[str, torch.Tensor], proposals: List[Instances]
    ) -> List[Instances]:
        """Inference with ViLD-ensemble scores on the top regions of each image."""
        settings = self.ensemble
        feats = [features[f] for f in self.box_in_features]
        box_features = self.box_head(self.box_pooler(feats, [p.proposal_boxes for p in proposals]))
        predictions = self.box_predictor(box_features)
        boxes = self.box_predictor.predict_boxes(predictions, proposals)
        probs = self.box_predictor.predict_probs(predictions, proposals)
        teacher = self._teacher(images.tensor.device)
        rgb = self.teacher_images(images)
        text = self.box_predictor.classifier.text_embeddings
        is_novel = self.box_predictor.is_novel_class
        out_boxes, out_scores = [], []
        for i, (b, p, prop) in enumerate(zip(boxes, probs, proposals)):
            k = min(settings.num_proposals, b.shape[0])
            keep = p[:, :-1].max(dim=1).values.topk(k).indices
            b, p = b[keep], p[keep]
            crops = Boxes(b.clone())
            crops.clip(prop.image_size)
            clip_emb = teacher(rgb[i : i + 1], [crops.tensor])
            clip_probs = F.softmax(settings.clip_temperature * clip_emb @ text.t(), dim=-1)
            fg = ensemble_scores(
                p[:, :-1], clip_probs, is_novel, settings.base_weight, settings.novel_weight
            )
            out_boxes.append(b)
            out_scores.append(torch.cat([fg, p[:, -1:]], dim=1))
        instances, _ = fast_rcnn_inference(
            out_boxes,
            out_scores,
            [p.image_size for p in proposals],
            self.box_predictor.test_score_thresh,
            self.box_predictor.test_nms_thresh,
            self.box_predictor.test_topk_per_image,
        )
        return instances

"""ROI heads of the detectron2 plugin: a thin adapter over the open-vocabulary head."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Dict, Iterator, List, Sequence, Tuple

import torch
from detectron2.config import CfgNode, configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, StandardROIHeads
from detectron2.structures import Boxes, ImageList, Instances

from ovdet.core.clip_backbone import CLIP_FEATURES_KEY
from ovdet.core.score_fusion import ClipRescoringSettings
from ovdet.core.teacher import ClipRegionTeacher
from ovdet.d2.model_vocabulary import load_clip_for, text_embeddings, training_vocabulary
from ovdet.d2.output_layers import OpenVocabularyFastRCNNOutputLayers
from ovdet.d2.vocabulary_heads import VocabularyROIHeadsMixin
from ovdet.utils.errors import ConfigError

__all__ = ["OpenVocabularyROIHeads"]

logger = logging.getLogger(__name__)


@ROI_HEADS_REGISTRY.register()
class OpenVocabularyROIHeads(VocabularyROIHeadsMixin, StandardROIHeads):
    """``StandardROIHeads`` whose box branch is an :class:`OpenVocabularyHead`.

    This adapter pools region features, samples and labels training regions, decodes boxes and
    converts images to the CLIP teacher's RGB [0, 1] view; the head (``self.head``, held by the
    box predictor :class:`~ovdet.d2.output_layers.OpenVocabularyFastRCNNOutputLayers`) owns the
    vocabulary, the losses (ViLD-text, ViLD-image with the regions it picks), the joining of
    scores (ViLD-ensemble with an image head, or CLIP rescoring) and post-processing, exactly
    as in the torchvision engine.

    The vocabulary at build time is the training vocabulary (``MODEL.OVDET.VOCABULARY`` or the
    training datasets' base classes) and ``num_classes`` follows it (``MODEL.ROI_HEADS.
    NUM_CLASSES`` is ignored); :meth:`set_vocabulary` swaps the classes. With
    ``MODEL.OVDET.DISTILL.MODE "offline"`` the precomputed regions come through
    :meth:`offline_targets` (see :mod:`ovdet.d2.meta_arch`). The CLIP teacher is frozen,
    loaded from ``MODEL.OVDET.CLIP`` when distillation or CLIP rescoring of crops needs it, and
    neither saved in checkpoints nor seen by the optimizer or DDP. With the CLIP backbone
    (:mod:`ovdet.d2.clip_backbone`, F-VLM) each image's frozen map (the features'
    ``"clip"``: a ResNet's res5, a ViT's patch tokens) goes to the head for CLIP rescoring from
    the backbone.

    With ``MODEL.MASK_ON`` detectron2's own mask head (``MaskRCNNConvUpsampleHead``) runs on
    the detections and trains on the sampled foreground regions, class-agnostic
    (``MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK True``: one mask per region, so it outlines
    classes that had no mask in training). Keypoint heads are not supported.
    """

    box_predictor: OpenVocabularyFastRCNNOutputLayers

    @configurable
    def __init__(
        self,
        *,
        clip_teacher: ClipRegionTeacher | None = None,
        clip_rescoring: ClipRescoringSettings | None = None,
        pixel_mean: Sequence[float] = (103.530, 116.280, 123.675),
        pixel_std: Sequence[float] = (1.0, 1.0, 1.0),
        input_format: str = "BGR",
        **kwargs,
    ) -> None:
        """
        Args:
            clip_teacher: the CLIP region teacher (online distillation, CLIP rescoring of crops).
            clip_rescoring: CLIP rescoring settings of box crops (ViLD-text+CLIP), or ``None``
                to score with the detector alone. Rescoring from the CLIP backbone (F-VLM) is
                enabled by :class:`~ovdet.d2.meta_arch.OpenVocabularyRCNN`, which hands the
                backbone's tower to the head.
            pixel_mean, pixel_std: the model's input normalisation (``MODEL.PIXEL_MEAN/STD``),
                in the channel order of ``input_format``; used to give CLIP RGB images in [0, 1].
            input_format: ``"BGR"`` or ``"RGB"`` (``INPUT.FORMAT``).
            **kwargs: the arguments of ``StandardROIHeads``; ``box_predictor`` must be an
                :class:`~ovdet.d2.output_layers.OpenVocabularyFastRCNNOutputLayers`.
        """
        super().__init__(**kwargs)
        if not isinstance(self.box_predictor, OpenVocabularyFastRCNNOutputLayers):
            raise TypeError("box_predictor must be an OpenVocabularyFastRCNNOutputLayers")
        if self.keypoint_on:
            raise ConfigError("no keypoint head in OpenVocabularyROIHeads: MODEL.KEYPOINT_ON False")
        if self.train_on_pred_boxes:
            raise ConfigError(
                "MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES is not supported by OpenVocabularyROIHeads"
            )
        if input_format not in ("BGR", "RGB"):
            raise ConfigError(
                f"INPUT.FORMAT must be BGR or RGB for the CLIP teacher, got {input_format!r}"
            )
        head = self.head
        if clip_teacher is not None:
            head.set_clip_teacher(clip_teacher)
        if head.distills_online and clip_teacher is None:
            raise ConfigError("online distillation needs a CLIP teacher")
        head.enable_clip_rescoring(clip_rescoring)
        self.input_format = input_format
        self.register_buffer(
            "pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1), False
        )
        self.register_buffer(
            "pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1), False
        )
        self._offline_targets: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        if head.num_classes:
            self.num_classes = head.num_classes

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: Dict[str, ShapeSpec]) -> dict:
        if cfg.MODEL.KEYPOINT_ON:
            raise ConfigError("no keypoint head in OpenVocabularyROIHeads: MODEL.KEYPOINT_ON False")
        if cfg.MODEL.MASK_ON and not cfg.MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK:
            raise ConfigError(
                "MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK must be True: an open vocabulary has no "
                "fixed classes to predict one mask each for"
            )
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
            pixel_mean=tuple(cfg.MODEL.PIXEL_MEAN),
            pixel_std=tuple(cfg.MODEL.PIXEL_STD),
            input_format=cfg.INPUT.FORMAT,
        )
        distills = ov.DISTILL.MODE == "online" and ov.DISTILL.WEIGHT > 0
        rescoring = ClipRescoringSettings.from_config(cfg) if ov.CLIP_RESCORING.ENABLED else None
        if rescoring is not None and not rescoring.crops:
            # The backbone's tower reaches the head where both are built: the meta-architecture.
            if cfg.MODEL.META_ARCHITECTURE != "OpenVocabularyRCNN":
                raise ConfigError(
                    "MODEL.OVDET.CLIP_RESCORING.SOURCE backbone needs MODEL.META_ARCHITECTURE "
                    "OpenVocabularyRCNN (it hands the CLIP backbone to the head)"
                )
            rescoring = None  # enabled by OpenVocabularyRCNN
        if distills or rescoring is not None:
            ret["clip_teacher"] = ClipRegionTeacher.from_clip(
                load_clip_for(cfg), ov.DISTILL.CROP_SCALES, ov.DISTILL.CROP_SIZE
            )
        ret["clip_rescoring"] = rescoring
        return ret

    @classmethod
    def _init_box_head(cls, cfg: CfgNode, input_shape: Dict[str, ShapeSpec]) -> dict:
        ret = super()._init_box_head(cfg, input_shape)
        ret["box_predictor"] = OpenVocabularyFastRCNNOutputLayers(cfg, ret["box_head"].output_shape)
        return ret

    @property
    def clip_teacher(self) -> ClipRegionTeacher | None:
        return self.head.clip_teacher

    # ---------------------------------------------------------------- forward

    def forward(
        self,
        images: ImageList,
        features: Dict[str, torch.Tensor],
        proposals: List[Instances],
        targets: List[Instances] | None = None,
    ) -> Tuple[List[Instances], Dict[str, torch.Tensor]]:
        """See ``StandardROIHeads.forward``; training adds ``loss_image`` when distilling and
        ``loss_mask`` with a mask head; detections then carry ``pred_masks`` Tensor[K, 1, M, M],
        box-relative probabilities (detectron2's postprocessing pastes them)."""
        head = self.head
        rgb = self.teacher_images(images) if head.needs_images(self.training) else None
        if not self.training:
            box_features = self.box_features(features, [p.proposal_boxes for p in proposals])
            clip_features = features.get(CLIP_FEATURES_KEY)  # from the CLIP backbone (F-VLM)
            detections = self.box_predictor.detect(box_features, proposals, rgb, clip_features)
            return self.forward_with_given_boxes(features, detections), {}
        if not targets:
            raise ValueError("'targets' are required in training")
        all_proposals = [p.proposal_boxes.tensor for p in proposals]
        proposals = self.label_and_sample_proposals(proposals, targets)
        box_features = self.box_features(features, [p.proposal_boxes for p in proposals])
        losses = self.box_predictor.losses(self.box_predictor(box_features), proposals)
        losses.update(self._forward_mask(features, proposals))  # {} without a mask head
        offline = None
        if head.distills_offline:
            if self._offline_targets is None:
                raise RuntimeError(
                    "offline distillation needs the precomputed regions: use MODEL."
                    "META_ARCHITECTURE OpenVocabularyRCNN and OfflineDistillationMapper "
                    "(OpenVocabularyTrainer does)"
                )
            offline = self._offline_targets
        losses.update(
            head.distillation_loss(
                lambda boxes: self.box_features(features, [Boxes(b) for b in boxes]),
                proposals=all_proposals,
                images=rgb,
                offline=offline,
            )
        )
        return proposals, losses

    def weak_losses(
        self,
        features: Dict[str, torch.Tensor],
        proposals: List[Instances],
        image_labels: List[torch.Tensor],
        caption_embeddings: torch.Tensor | None = None,
    ) -> Dict[str, torch.Tensor]:
        """Losses of image-labelled images (no boxes): the head's ``loss_image_label`` and
        ``loss_caption`` on the RPN proposals and the whole-image box.

        Args:
            features: the backbone's feature maps.
            proposals: per image the RPN's proposals (``proposal_boxes``), best first.
            image_labels: per image LongTensor[L_i], indices into the current vocabulary.
            caption_embeddings: Tensor[B, D], CLIP text embeddings of one caption per image.
        """
        return self.head.weak_losses(
            lambda boxes: self.box_features(features, [Boxes(b) for b in boxes]),
            [p.proposal_boxes.tensor for p in proposals],
            [p.image_size for p in proposals],
            image_labels,
            caption_embeddings,
        )

    def box_features(self, features: Dict[str, torch.Tensor], boxes: List[Boxes]) -> torch.Tensor:
        """Box-head features of given boxes (one ``Boxes`` per image) -> Tensor[sum N_i, F]."""
        return self.box_head(self.box_pooler([features[f] for f in self.box_in_features], boxes))

    def teacher_images(self, images: ImageList) -> torch.Tensor:
        """The padded input batch as CLIP wants it: Tensor[B, 3, H, W], RGB in [0, 1]."""
        x = images.tensor.float() * self.pixel_std + self.pixel_mean
        if self.input_format == "BGR":
            x = x.flip(1)
        return (x / 255.0).clamp_(0.0, 1.0)

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

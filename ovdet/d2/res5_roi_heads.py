"""C4 ROI heads of the detectron2 plugin: detectron2's ``Res5ROIHeads`` over ovdet's head.

The architecture of Detic's OV-COCO models (``CustomRes5ROIHeads``): proposals pooled from
``res4`` (``ROIAlignV2``, 14x14), ``res5``, the spatial mean, then the open-vocabulary head.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import torch
from detectron2.config import CfgNode, configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, Res5ROIHeads
from detectron2.structures import Boxes, ImageList, Instances

from ovdet.d2.model_vocabulary import text_embeddings, training_vocabulary
from ovdet.d2.output_layers import OpenVocabularyFastRCNNOutputLayers
from ovdet.d2.vocabulary_heads import VocabularyROIHeadsMixin
from ovdet.utils.errors import ConfigError

__all__ = ["OpenVocabularyRes5ROIHeads"]


@ROI_HEADS_REGISTRY.register()
class OpenVocabularyRes5ROIHeads(VocabularyROIHeadsMixin, Res5ROIHeads):
    """``Res5ROIHeads`` whose box predictor is
    :class:`~ovdet.d2.output_layers.OpenVocabularyFastRCNNOutputLayers` (ovdet's head on the
    2048-d average-pooled ``res5`` features).

    The vocabulary at build time is the training vocabulary (``MODEL.OVDET.VOCABULARY`` or the
    training datasets' base classes); :meth:`set_vocabulary` swaps it. Trains with the head's
    text loss (softmax or sigmoid, ``MODEL.OVDET.SCORING``) and detectron2's box loss, and on
    image-labelled batches with the head's weak-supervision losses (:meth:`weak_losses`).
    ViLD-image distillation and CLIP rescoring are not available with C4 (use
    ``OpenVocabularyROIHeads``); masks neither.
    """

    box_predictor: OpenVocabularyFastRCNNOutputLayers

    @configurable
    def __init__(self, **kwargs) -> None:
        """
        Args:
            **kwargs: the arguments of ``Res5ROIHeads``; ``box_predictor`` must be an
                :class:`~ovdet.d2.output_layers.OpenVocabularyFastRCNNOutputLayers`.
        """
        super().__init__(**kwargs)
        if not isinstance(self.box_predictor, OpenVocabularyFastRCNNOutputLayers):
            raise TypeError("box_predictor must be an OpenVocabularyFastRCNNOutputLayers")
        if self.mask_on:
            raise ConfigError("OpenVocabularyRes5ROIHeads supports boxes only; MODEL.MASK_ON False")
        if self.head.num_classes:
            self.num_classes = self.head.num_classes

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: Dict[str, ShapeSpec]) -> dict:
        ov = cfg.MODEL.OVDET
        if cfg.MODEL.MASK_ON:
            raise ConfigError("OpenVocabularyRes5ROIHeads supports boxes only; MODEL.MASK_ON False")
        if ov.DISTILL.MODE != "none" or ov.CLIP_RESCORING.ENABLED:
            raise ConfigError(
                "ViLD-image distillation and CLIP rescoring are not available with "
                "OpenVocabularyRes5ROIHeads (C4); use OpenVocabularyROIHeads (FPN)"
            )
        ret = super().from_config(cfg, input_shape)
        shape = ShapeSpec(channels=ret["box_predictor"].bbox_pred.in_features, height=1, width=1)
        predictor = OpenVocabularyFastRCNNOutputLayers(cfg, shape)
        vocabulary = training_vocabulary(cfg)
        predictor.set_vocabulary(text_embeddings(cfg, vocabulary))
        ret.update(box_predictor=predictor, num_classes=len(vocabulary))
        return ret

    def box_features(self, features: Dict[str, torch.Tensor], boxes: List[Boxes]) -> torch.Tensor:
        """``res5`` features of given boxes (one ``Boxes`` per image), averaged over space:
        Tensor[sum N_i, 2048]."""
        pooled = self._shared_roi_transform([features[f] for f in self.in_features], boxes)
        return pooled.mean(dim=(2, 3))

    def forward(
        self,
        images: ImageList,
        features: Dict[str, torch.Tensor],
        proposals: List[Instances],
        targets: List[Instances] | None = None,
    ) -> Tuple[List[Instances], Dict[str, torch.Tensor]]:
        """See ``Res5ROIHeads.forward``: detections (with ``pred_embeddings``) or losses."""
        del images
        if not self.training:
            box_features = self.box_features(features, [p.proposal_boxes for p in proposals])
            return self.box_predictor.detect(box_features, proposals), {}
        if not targets:
            raise ValueError("'targets' are required in training")
        proposals = self.label_and_sample_proposals(proposals, targets)
        box_features = self.box_features(features, [p.proposal_boxes for p in proposals])
        return proposals, self.box_predictor.losses(self.box_predictor(box_features), proposals)

    def weak_losses(
        self,
        features: Dict[str, torch.Tensor],
        proposals: List[Instances],
        image_labels: List[torch.Tensor],
        caption_embeddings: torch.Tensor | None = None,
    ) -> Dict[str, torch.Tensor]:
        """Losses of image-labelled images, as
        :meth:`~ovdet.d2.roi_heads.OpenVocabularyROIHeads.weak_losses`."""
        return self.head.weak_losses(
            lambda boxes: self.box_features(features, [Boxes(b) for b in boxes]),
            [p.proposal_boxes.tensor for p in proposals],
            [p.image_size for p in proposals],
            image_labels,
            caption_embeddings,
        )

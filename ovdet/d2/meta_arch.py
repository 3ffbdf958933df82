"""The detectron2 plugin's meta-architecture: :class:`OpenVocabularyRCNN`.

detectron2's ``GeneralizedRCNN`` with two routes of its own in training: the precomputed regions
of offline ViLD-image distillation (mapped by
:class:`~ovdet.d2.dataset_mapper.OfflineDistillationMapper`) go to the ROI heads with the batch,
and image-labelled batches (weak supervision) train only the head's image-label and caption
losses.
"""

from __future__ import annotations

from typing import Dict, List

import torch
from detectron2.config import CfgNode, configurable
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN
from detectron2.structures import Boxes

from ovdet.core.score_fusion import ClipRescoringSettings
from ovdet.d2.clip_backbone import ClipFPN
from ovdet.utils.errors import ConfigError, DataError

__all__ = ["OpenVocabularyRCNN"]


@META_ARCH_REGISTRY.register()
class OpenVocabularyRCNN(GeneralizedRCNN):
    """``GeneralizedRCNN`` that also routes offline distillation regions and image-labelled
    batches to the open-vocabulary ROI heads.

    Identical to ``GeneralizedRCNN`` except in training with ``MODEL.OVDET.DISTILL.MODE
    "offline"``, where each input's ``distill_boxes`` and ``distill_embeddings`` (from
    :class:`~ovdet.d2.dataset_mapper.OfflineDistillationMapper`) reach
    :meth:`~ovdet.d2.roi_heads.OpenVocabularyROIHeads.offline_targets`, and for image-labelled
    batches (weak supervision: inputs with ``image_labels``, see :mod:`ovdet.d2.weak`), which
    train only the head's image-label and caption losses
    (:meth:`~ovdet.d2.roi_heads.OpenVocabularyROIHeads.weak_losses`): the RPN learns nothing
    from images without boxes, as in Detic.

    With a CLIP backbone (``MODEL.BACKBONE.NAME build_clip_resnet_fpn_backbone`` or
    ``build_clip_vit_fpn_backbone``, F-VLM) it
    hands the backbone's frozen tower to the head, and turns on CLIP rescoring from it when
    ``MODEL.OVDET.CLIP_RESCORING.ENABLED`` with ``SOURCE backbone``.
    """

    @configurable
    def __init__(self, *, clip_rescoring: ClipRescoringSettings | None = None, **kwargs) -> None:
        """
        Args:
            clip_rescoring: settings of CLIP rescoring from the CLIP backbone (``source
                "backbone"``), or ``None``; rescoring of crops is the ROI heads' own.
            **kwargs: the arguments of ``GeneralizedRCNN``.
        """
        super().__init__(**kwargs)
        head = getattr(self.roi_heads, "head", None)
        if head is not None and isinstance(self.backbone, ClipFPN):
            head.set_clip_backbone(self.backbone.clip)
        if clip_rescoring is not None:
            if head is None:
                raise ConfigError(
                    "MODEL.OVDET.CLIP_RESCORING needs MODEL.ROI_HEADS.NAME OpenVocabularyROIHeads"
                )
            head.enable_clip_rescoring(clip_rescoring)

    @classmethod
    def from_config(cls, cfg: CfgNode) -> dict:
        ret = super().from_config(cfg)
        rescoring = cfg.MODEL.OVDET.CLIP_RESCORING
        if rescoring.ENABLED and rescoring.SOURCE == "backbone":
            ret["clip_rescoring"] = ClipRescoringSettings.from_config(cfg)
        return ret

    def forward(self, batched_inputs: List[Dict[str, torch.Tensor]]):
        heads = self.roi_heads
        if self.training and "image_labels" in batched_inputs[0]:
            return self._image_labelled_forward(batched_inputs)
        head = getattr(heads, "head", None)
        if not self.training or head is None or not head.distills_offline:
            return super().forward(batched_inputs)
        if "distill_boxes" not in batched_inputs[0]:
            raise DataError(
                "offline distillation needs 'distill_boxes' and 'distill_embeddings' in the "
                "inputs; train with OfflineDistillationMapper (OpenVocabularyTrainer uses it)"
            )
        targets = [
            (x["distill_boxes"].to(self.device), x["distill_embeddings"].to(self.device))
            for x in batched_inputs
        ]
        with heads.offline_targets(targets):
            return super().forward(batched_inputs)

    @torch.no_grad()
    def box_embeddings(
        self, batched_inputs: List[Dict[str, torch.Tensor]], boxes: List[torch.Tensor]
    ) -> torch.Tensor:
        """Region embeddings of given boxes (image exemplars, :mod:`ovdet.core.exemplars`).

        Args:
            batched_inputs: detectron2 inputs (``image`` Tensor[3, H, W], resized).
            boxes: per input Tensor[N_i, 4] (x1, y1, x2, y2) in its ``image``'s pixels.

        Returns:
            Tensor[sum N_i, D], L2-normalised: what the head scores against the vocabulary.
        """
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        heads = self.roi_heads
        box_features = heads.box_features(features, [Boxes(b.to(self.device)) for b in boxes])
        return heads.head.embed(box_features)

    def _image_labelled_forward(self, batched_inputs: List[Dict[str, torch.Tensor]]) -> dict:
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
        proposals, proposal_losses = self.proposal_generator(images, features, gt_instances)
        captions = None
        if all("caption_embedding" in x for x in batched_inputs):
            captions = torch.stack([x["caption_embedding"] for x in batched_inputs]).to(self.device)
        losses = self.roi_heads.weak_losses(
            features,
            proposals,
            [x["image_labels"].to(self.device) for x in batched_inputs],
            captions,
        )
        # Zero terms keep every parameter in the graph (DDP without find_unused_parameters):
        # the RPN, the box regressor, the background and the mask head learn nothing from
        # images without boxes.
        heads = self.roi_heads
        mask_head = getattr(heads, "mask_head", None) if getattr(heads, "mask_on", False) else None
        idle = [*heads.box_predictor.head.parameters()]
        idle += [*mask_head.parameters()] if mask_head is not None else []  # MODEL.MASK_ON
        unused = sum(v for v in proposal_losses.values()) + sum(p.sum() for p in idle)
        losses["loss_image_label"] = losses["loss_image_label"] + 0.0 * unused
        return losses

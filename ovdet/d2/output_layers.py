"""Fast R-CNN output layers with a CLIP text classifier and class-agnostic boxes."""

from __future__ import annotations

import logging
from typing import Dict, List, Tuple, Union

import torch
from detectron2.config import CfgNode, configurable
from detectron2.layers import ShapeSpec, cat
from detectron2.modeling.roi_heads.fast_rcnn import FastRCNNOutputLayers
from detectron2.structures import Instances

from ovdet.clip import ClipSpec
from ovdet.errors import ConfigError
from ovdet.modeling.losses import vild_text_loss
from ovdet.modeling.zero_shot_classifier import ZeroShotClassifier

__all__ = ["OpenVocabularyFastRCNNOutputLayers"]

logger = logging.getLogger(__name__)


class OpenVocabularyFastRCNNOutputLayers(FastRCNNOutputLayers):
    """detectron2's ``FastRCNNOutputLayers`` scoring regions against CLIP text embeddings.

    Classification is a :class:`~ovdet.modeling.zero_shot_classifier.ZeroShotClassifier` (region
    features projected into CLIP's space, cosine similarity to the text matrix times a
    temperature, background logit last, as detectron2 expects); box regression is class-agnostic,
    so one box per region serves every class, seen or not. The number of classes follows the
    text matrix: :meth:`set_vocabulary` swaps the classes at any time, learned weights untouched,
    and detectron2's inference then labels detections ``0..C-1`` of the new vocabulary.

    Losses: ``loss_text`` (ViLD-text softmax cross-entropy over the classes and background) and
    detectron2's own ``loss_box_reg`` (``MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE``).
    """

    @configurable
    def __init__(
        self,
        input_shape: Union[ShapeSpec, int],
        *,
        box2box_transform,
        embed_dim: int,
        temperature: float = 50.0,
        background: str = "learned",
        background_logit: float = 0.0,
        text_embeddings: torch.Tensor | None = None,
        loss_weight: Union[float, Dict[str, float]] = 1.0,
        **kwargs,
    ) -> None:
        """
        Args:
            input_shape: shape of the box head's output features.
            box2box_transform: detectron2's ``Box2BoxTransform``.
            embed_dim: CLIP's embedding dimension ``D``.
            temperature, background, background_logit: see ``ZeroShotClassifier``.
            text_embeddings: Tensor[C, D], the initial vocabulary (or set it later).
            loss_weight: one weight for all losses, or a dict with ``loss_text`` and
                ``loss_box_reg``.
            **kwargs: the other arguments of ``FastRCNNOutputLayers`` (test thresholds, box loss
                type...). Sigmoid and federated losses are not supported.
        """
        for key in ("use_sigmoid_ce", "use_fed_loss"):
            if kwargs.pop(key, False):
                raise ConfigError(
                    f"{key} is not supported by the open-vocabulary output layers (ViLD-text is a "
                    "softmax cross-entropy)"
                )
        if not kwargs.pop("cls_agnostic_bbox_reg", True):
            raise ConfigError("open-vocabulary box regression is class-agnostic")
        kwargs.pop("num_classes", None)
        if isinstance(loss_weight, (int, float)):
            loss_weight = {"loss_text": float(loss_weight), "loss_box_reg": float(loss_weight)}
        num_classes = 0 if text_embeddings is None else text_embeddings.shape[0]
        super().__init__(
            input_shape,
            box2box_transform=box2box_transform,
            num_classes=num_classes,
            cls_agnostic_bbox_reg=True,
            loss_weight=loss_weight,
            **kwargs,
        )
        del self.cls_score  # replaced by the text classifier
        input_size = self.bbox_pred.in_features
        self.classifier = ZeroShotClassifier(
            input_size, embed_dim, temperature, background, background_logit
        )
        self.register_buffer("is_novel_class", torch.zeros(0, dtype=torch.bool), persistent=False)
        if text_embeddings is not None:
            self.set_vocabulary(text_embeddings)

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: ShapeSpec) -> dict:
        ret = super().from_config(cfg, input_shape)
        box = cfg.MODEL.ROI_BOX_HEAD
        if box.USE_SIGMOID_CE or box.USE_FED_LOSS:
            raise ConfigError(
                "MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE / USE_FED_LOSS are not supported with "
                "OpenVocabularyFastRCNNOutputLayers (ViLD-text is a softmax cross-entropy)"
            )
        if not box.CLS_AGNOSTIC_BBOX_REG:
            logger.info("Box regression is class-agnostic whatever CLS_AGNOSTIC_BBOX_REG says")
        for key in ("num_classes", "get_fed_loss_cls_weights", "fed_loss_num_classes"):
            ret.pop(key, None)
        ret["use_sigmoid_ce"] = ret["use_fed_loss"] = False
        ret["cls_agnostic_bbox_reg"] = True
        ov = cfg.MODEL.OVDET
        ret["embed_dim"] = ov.EMBED_DIM or ClipSpec.parse(ov.CLIP).embed_dim
        ret["temperature"] = ov.TEMPERATURE
        ret["background"] = ov.BACKGROUND
        ret["background_logit"] = ov.BACKGROUND_LOGIT
        ret["loss_weight"] = {
            "loss_text": ov.TEXT_LOSS_WEIGHT,
            "loss_box_reg": box.BBOX_REG_LOSS_WEIGHT,
        }
        return ret

    def set_vocabulary(
        self, text_embeddings: torch.Tensor, is_novel: torch.Tensor | None = None
    ) -> None:
        """Swap the classes.

        Args:
            text_embeddings: Tensor[C, D], one CLIP text embedding per class.
            is_novel: BoolTensor[C], classes outside the training vocabulary (used by the
                ViLD-ensemble); ``None`` means none.
        """
        self.classifier.set_text_embeddings(text_embeddings)
        num_classes = self.classifier.num_classes
        if is_novel is None:
            is_novel = torch.zeros(num_classes, dtype=torch.bool)
        if is_novel.shape != (num_classes,):
            raise ValueError(f"is_novel must be [{num_classes}], got {tuple(is_novel.shape)}")
        self.is_novel_class = is_novel.to(device=self.bbox_pred.weight.device, dtype=torch.bool)
        self.num_classes = num_classes

    def get_vocabulary(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The current (Tensor[C, D] text embeddings, BoolTensor[C] novelty)."""
        return self.classifier.text_embeddings.clone(), self.is_novel_class.clone()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Region features Tensor[N, ...] -> (logits Tensor[N, C + 1], deltas Tensor[N, 4])."""
        if x.dim() > 2:
            x = torch.flatten(x, start_dim=1)
        return self.classifier(x), self.bbox_pred(x)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Region embeddings in CLIP's space. Tensor[N, ...] -> Tensor[N, D], L2-normalised."""
        if x.dim() > 2:
            x = torch.flatten(x, start_dim=1)
        return self.classifier.embed(x)

    def losses(
        self, predictions: Tuple[torch.Tensor, torch.Tensor], proposals: List[Instances]
    ) -> Dict[str, torch.Tensor]:
        """``loss_text`` (ViLD-text) and detectron2's ``loss_box_reg``.

        Args:
            predictions: the output of :meth:`forward`.
            proposals: the sampled proposals, with ``proposal_boxes``, ``gt_boxes`` and
                ``gt_classes`` (``C`` for background).
        """
        losses = super().losses(predictions, proposals)
        del losses["loss_cls"]  # detectron2's cross-entropy: replaced by ViLD-text below
        scores = predictions[0]
        gt_classes = (
            cat([p.gt_classes for p in proposals], dim=0)
            if len(proposals)
            else torch.empty(0, dtype=torch.long, device=scores.device)
        )
        losses["loss_text"] = self.loss_weight.get("loss_text", 1.0) * vild_text_loss(
            scores, gt_classes
        )
        return losses

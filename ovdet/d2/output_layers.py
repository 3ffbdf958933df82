"""detectron2's Fast R-CNN output layers as a thin adapter over the open-vocabulary head."""

from __future__ import annotations

import logging
from typing import Dict, List, Tuple, Union

import torch
from detectron2.config import CfgNode, configurable
from detectron2.layers import ShapeSpec, cat
from detectron2.modeling.roi_heads.fast_rcnn import FastRCNNOutputLayers
from detectron2.structures import Boxes, Instances

from ovdet.core.detic_keys import detic_head_key
from ovdet.core.head import OpenVocabularyHead
from ovdet.utils.errors import ConfigError

__all__ = ["OpenVocabularyFastRCNNOutputLayers"]

logger = logging.getLogger(__name__)

# Checkpoints of ovdet < 0.2 stored the classifier and box regressor on the output layers.
_OLD_PREFIXES = ("classifier.", "bbox_pred.")


class OpenVocabularyFastRCNNOutputLayers(FastRCNNOutputLayers):
    """``FastRCNNOutputLayers`` whose classes and losses come from an :class:`OpenVocabularyHead`.

    The head (``self.head``) scores regions against the current vocabulary, regresses one
    class-agnostic box per region, computes ``loss_text`` (ViLD-text) and does the detection
    post-processing; this adapter adds detectron2's own ``loss_box_reg``
    (``MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE``) and box decoding (``predict_boxes``).
    detectron2's ``test_score_thresh`` / ``test_nms_thresh`` / ``test_topk_per_image`` are not
    used: the head's ``score_thresh``, ``nms_thresh`` and ``detections_per_img`` are (built from
    the same config keys).
    """

    @configurable
    def __init__(
        self,
        input_shape: Union[ShapeSpec, int],
        *,
        box2box_transform,
        head: OpenVocabularyHead,
        loss_weight: Union[float, Dict[str, float]] = 1.0,
        **kwargs,
    ) -> None:
        """
        Args:
            input_shape: shape of the box head's output features.
            box2box_transform: detectron2's ``Box2BoxTransform``.
            head: the open-vocabulary head (its ``input_dim`` is the box head's output size).
            loss_weight: weight of ``loss_box_reg`` (``loss_text`` is weighted by the head).
            **kwargs: the other arguments of ``FastRCNNOutputLayers`` (box loss type, beta).
                detectron2's sigmoid and federated losses and class-specific boxes are not
                supported (sigmoid scoring is the head's ``MODEL.OVDET.SCORING``).
        """
        for key in ("use_sigmoid_ce", "use_fed_loss"):
            if kwargs.pop(key, False):
                raise ConfigError(
                    f"{key} is not supported by the open-vocabulary output layers; sigmoid "
                    "scoring is MODEL.OVDET.SCORING sigmoid"
                )
        if not kwargs.pop("cls_agnostic_bbox_reg", True):
            raise ConfigError("open-vocabulary box regression is class-agnostic")
        kwargs.pop("num_classes", None)
        if isinstance(loss_weight, (int, float)):
            loss_weight = {"loss_box_reg": float(loss_weight)}
        super().__init__(
            input_shape,
            box2box_transform=box2box_transform,
            num_classes=max(head.num_classes, 1),
            cls_agnostic_bbox_reg=True,
            loss_weight=loss_weight,
            **kwargs,
        )
        del self.cls_score, self.bbox_pred  # the head's classifier and box regressor replace them
        self.head = head
        self.num_classes = head.num_classes
        self._register_load_state_dict_pre_hook(_upgrade_old_keys)

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: ShapeSpec) -> dict:
        ret = super().from_config(cfg, input_shape)
        box = cfg.MODEL.ROI_BOX_HEAD
        if box.USE_SIGMOID_CE or box.USE_FED_LOSS:
            raise ConfigError(
                "MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE / USE_FED_LOSS are not supported with "
                "OpenVocabularyFastRCNNOutputLayers; sigmoid scoring is MODEL.OVDET.SCORING sigmoid"
            )
        if not box.CLS_AGNOSTIC_BBOX_REG:
            logger.info("Box regression is class-agnostic whatever CLS_AGNOSTIC_BBOX_REG says")
        for key in ("num_classes", "get_fed_loss_cls_weights", "fed_loss_num_classes"):
            ret.pop(key, None)
        ret["use_sigmoid_ce"] = ret["use_fed_loss"] = False
        ret["cls_agnostic_bbox_reg"] = True
        input_size = input_shape.channels * (input_shape.width or 1) * (input_shape.height or 1)
        ret["head"] = OpenVocabularyHead.from_config(cfg, input_size)
        ret["loss_weight"] = {"loss_box_reg": box.BBOX_REG_LOSS_WEIGHT}
        return ret

    def set_vocabulary(
        self, text_embeddings: torch.Tensor, is_novel: torch.Tensor | None = None
    ) -> None:
        """Swap the classes (see :meth:`OpenVocabularyHead.set_vocabulary`)."""
        self.head.set_vocabulary(text_embeddings, is_novel)
        self.num_classes = self.head.num_classes

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Region features Tensor[N, ...] -> (logits Tensor[N, C + 1], deltas Tensor[N, 4])."""
        logits, deltas, _ = self.head(x)
        return logits, deltas

    def losses(
        self, predictions: Tuple[torch.Tensor, torch.Tensor], proposals: List[Instances]
    ) -> Dict[str, torch.Tensor]:
        """``loss_text`` (the head's ViLD-text) and detectron2's ``loss_box_reg``.

        Args:
            predictions: the output of :meth:`forward`.
            proposals: the sampled proposals, with ``proposal_boxes``, ``gt_boxes`` and
                ``gt_classes`` (``C`` for background).
        """
        logits, deltas = predictions
        if proposals:
            gt_classes = cat([p.gt_classes for p in proposals], dim=0)
            proposal_boxes = cat([p.proposal_boxes.tensor for p in proposals], dim=0)
            gt_boxes = cat(
                [(p.gt_boxes if p.has("gt_boxes") else p.proposal_boxes).tensor for p in proposals]
            )
        else:
            gt_classes = torch.empty(0, dtype=torch.long, device=logits.device)
            proposal_boxes = gt_boxes = torch.empty((0, 4), device=deltas.device)
        losses = self.head.text_loss(logits, gt_classes)
        losses["loss_box_reg"] = self.loss_weight.get("loss_box_reg", 1.0) * self.box_reg_loss(
            proposal_boxes, gt_boxes, deltas, gt_classes
        )
        return losses

    @torch.no_grad()
    def detect(
        self,
        box_features: torch.Tensor,
        proposals: List[Instances],
        images: torch.Tensor | None = None,
        clip_features: torch.Tensor | None = None,
    ) -> List[Instances]:
        """Detections: the head scores, detectron2 decodes and clips, the head selects.

        Args:
            box_features: Tensor[sum N_i, F] from the box head.
            proposals: per image, ``proposal_boxes`` and ``image_size``.
            images: Tensor[B, 3, H, W], RGB in [0, 1] (CLIP rescoring's view of the batch).
            clip_features: Tensor[B, C, H / s, W / s], the CLIP backbone's map (a ResNet's res5,
                s = 32; a ViT's patch tokens, s = P) for CLIP rescoring from the backbone (F-VLM).

        Returns:
            Per image ``Instances`` with ``pred_boxes``, ``scores``, ``pred_classes`` and
            ``pred_embeddings`` (Tensor[K, D] region embeddings).
        """
        probs, deltas, embeddings = self.head.predict(box_features)
        return self._select(probs, deltas, embeddings, proposals, images, clip_features)[0]

    @torch.no_grad()
    def inference(
        self, predictions: Tuple[torch.Tensor, torch.Tensor], proposals: List[Instances]
    ) -> Tuple[List[Instances], List[torch.Tensor]]:
        """detectron2's interface: (logits, deltas) of :meth:`forward` -> (instances, kept
        region indices), post-processed by the head (no CLIP rescoring, no embeddings)."""
        logits, deltas = predictions
        probs = self.head.probabilities_from_logits(logits)
        return self._select(probs, deltas, None, proposals, None)

    def _select(self, probs, deltas, embeddings, proposals, images, clip_features=None):
        """Per image: decode and clip (detectron2), then :meth:`OpenVocabularyHead.detect`."""
        boxes = self.predict_boxes((None, deltas), proposals)
        counts = [len(p) for p in proposals]
        if embeddings is None:
            embeddings = probs.new_zeros((probs.shape[0], 0))
        results, kept = [], []
        for i, (b, p, e, prop) in enumerate(
            zip(boxes, probs.split(counts), embeddings.split(counts), proposals)
        ):
            clipped = Boxes(b)
            clipped.clip(prop.image_size)
            det = self.head.detect(
                clipped.tensor,
                p,
                e,
                None if images is None else images[i : i + 1],
                None if clip_features is None else clip_features[i : i + 1],
            )
            result = Instances(prop.image_size)
            result.pred_boxes = Boxes(det["boxes"])
            result.scores = det["scores"]
            result.pred_classes = det["labels"]
            if det["embeddings"].shape[1]:
                result.pred_embeddings = det["embeddings"]
            results.append(result)
            kept.append(det["region_index"])
        return results, kept


def _upgrade_old_keys(state_dict, prefix, *args) -> None:
    """Rename ``classifier.*`` / ``bbox_pred.*`` of older checkpoints to ``head.*``, and Detic's
    zero-shot predictor (``cls_score.*``, ``freq_weight``) to the head's names
    (:func:`~ovdet.core.detic_keys.detic_head_key`), so Detic's checkpoints load as they are."""
    for key in list(state_dict):
        rest = key[len(prefix) :]
        if not key.startswith(prefix):
            continue
        if rest.startswith(_OLD_PREFIXES):
            state_dict[f"{prefix}head.{rest}"] = state_dict.pop(key)
        elif rest.startswith("cls_score.") or rest == "freq_weight":
            value = state_dict.pop(key)
            new = detic_head_key(rest)
            if new is not None:
                state_dict[f"{prefix}head.{new}"] = value

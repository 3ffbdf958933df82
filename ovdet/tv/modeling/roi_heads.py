"""RoI heads of the torchvision engine: a thin adapter over the open-vocabulary head."""

from __future__ import annotations

import torch
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.ops import boxes as box_ops

from ovdet.core.head import OpenVocabularyHead
from ovdet.core.losses import box_regression_loss
from ovdet.core.masks import mask_loss, mask_probabilities, mask_targets, torchvision_mask_key

__all__ = ["TorchvisionOpenVocabularyRoIHeads", "is_image_labelled"]


def is_image_labelled(targets: list[dict] | None) -> bool:
    """Whether a training batch is image-labelled (weak supervision: ``image_labels``, no
    boxes to learn from). Batches are of one kind: box or image-labelled."""
    return bool(targets) and "image_labels" in targets[0]


def _caption_embeddings(targets: list[dict]) -> torch.Tensor | None:
    """Tensor[B, D] of the targets' ``caption_embedding`` when every image has one."""
    if all("caption_embedding" in t for t in targets):
        return torch.stack([t["caption_embedding"] for t in targets])
    return None


def _rename_detectron2_mask_keys(state_dict, prefix, *args) -> None:
    """Load hook: detectron2's mask-head weights (``mask_head.mask_fcn1.weight``...) under
    their torchvision names (:func:`~ovdet.core.masks.torchvision_mask_key`)."""
    d2_prefix = prefix + "mask_head."
    for key in list(state_dict):
        rest = key[len(d2_prefix) :]
        if key.startswith(d2_prefix) and not rest[:1].isdigit():
            state_dict[prefix + torchvision_mask_key(rest)] = state_dict.pop(key)


class TorchvisionOpenVocabularyRoIHeads(RoIHeads):
    """torchvision's ``RoIHeads`` whose box predictor is an :class:`OpenVocabularyHead`.

    This adapter only pools region features (``box_roi_pool`` + ``box_head``), samples and
    labels training regions, decodes and clips boxes with torchvision's box coder, and computes
    torchvision's class-agnostic box loss; the head does the rest (classes, open-vocabulary
    losses, distilled regions, joining of scores, post-processing). The head is
    ``self.box_predictor`` (so checkpoint keys are ``roi_heads.box_predictor.*``), also reachable
    as ``self.head``.

    With ``mask_roi_pool``, ``mask_head`` and ``mask_predictor`` (torchvision's arguments;
    ``MODEL.MASK_ON``) it also predicts one class-agnostic mask per detection and trains it on
    the foreground regions of images whose targets carry ``masks``
    (:mod:`ovdet.core.masks`). Its weights also load from detectron2's layout
    (``mask_head.mask_fcn1.weight``, ``mask_head.deconv.*``, ``mask_head.predictor.*``).

    Labels in ``targets`` follow torchvision: ``1..C`` for classes, ``0`` for background.
    """

    box_predictor: OpenVocabularyHead

    def __init__(self, *args, box_loss_weight: float = 1.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.box_predictor, OpenVocabularyHead):
            raise TypeError("box_predictor must be an OpenVocabularyHead")
        self.box_loss_weight = float(box_loss_weight)
        self._register_load_state_dict_pre_hook(_rename_detectron2_mask_keys)

    @property
    def head(self) -> OpenVocabularyHead:
        return self.box_predictor

    # torchvision's post-processing settings are the head's: one value each, whichever way set.
    score_thresh = property(
        lambda self: self.head.score_thresh, lambda self, v: setattr(self.head, "score_thresh", v)
    )
    nms_thresh = property(
        lambda self: self.head.nms_thresh, lambda self, v: setattr(self.head, "nms_thresh", v)
    )
    detections_per_img = property(
        lambda self: self.head.detections_per_img,
        lambda self, v: setattr(self.head, "detections_per_img", v),
    )

    def mask_logits(self, features, boxes, image_shapes) -> torch.Tensor:
        """Class-agnostic mask logits of given boxes: list of Tensor[N_i, 4] ->
        Tensor[sum N_i, 1, M, M]."""
        pooled = self.mask_roi_pool(features, list(boxes), image_shapes)
        return self.mask_predictor(self.mask_head(pooled))

    def _mask_loss(self, features, proposals, image_shapes, targets, matched_idxs, labels):
        """``loss_mask`` of the sampled foreground regions (per image lists)."""
        fg = [torch.nonzero(lab > 0).squeeze(1) for lab in labels]
        boxes = [p[i] for p, i in zip(proposals, fg)]
        logits = self.mask_logits(features, boxes, image_shapes)
        if not all("masks" in t for t in targets):
            raise ValueError("MODEL.MASK_ON needs 'masks' in every training target")
        gt = [
            mask_targets(t["masks"], b, m[i], logits.shape[-1])
            for t, b, m, i in zip(targets, boxes, matched_idxs, fg)
        ]
        return mask_loss(logits, torch.cat(gt))

    def box_features(self, features, boxes, image_shapes) -> torch.Tensor:
        """Box-head features of given boxes: list of Tensor[N_i, 4] -> Tensor[sum N_i, F]."""
        return self.box_head(self.box_roi_pool(features, list(boxes), image_shapes))

    def forward(
        self,
        features,
        proposals,
        image_shapes,
        targets=None,
        images=None,
        offline=None,
        clip_features=None,
    ):
        """Losses (training) or detections (inference).

        Args:
            features: FPN feature maps.
            proposals: list of Tensor[N_i, 4] RPN proposals, best first.
            image_shapes: list of (H, W) of the (resized) images.
            targets: training targets with ``boxes`` and ``labels``; or, for image-labelled
                images (weak supervision), ``image_labels`` (0-based indices into the
                vocabulary) and optionally ``caption_embedding`` Tensor[D].
            images: Tensor[B, 3, H, W], RGB in [0, 1]: the CLIP teacher's view of the batch
                (online distillation, CLIP rescoring).
            offline: offline distillation: per image (boxes Tensor[M_i, 4], embeddings
                Tensor[M_i, D]).
            clip_features: Tensor[B, C, H / s, W / s], the CLIP backbone's map (a ResNet's res5,
                s = 32; a ViT's patch tokens, s = P) for CLIP rescoring from the backbone (F-VLM).

        Returns:
            (detections, losses). Each detection dict holds ``boxes`` Tensor[K, 4], ``scores``
            Tensor[K], ``labels`` Tensor[K] (0-based index into the vocabulary),
            ``region_index`` Tensor[K] and ``embeddings`` Tensor[K, D]; with a mask head also
            ``mask_probs`` Tensor[K, M, M], each detection's mask relative to its box
            (:func:`~ovdet.core.masks.paste_masks` puts it into an image).
        """
        head = self.head
        if self.training and is_image_labelled(targets):
            return [], head.weak_losses(
                lambda boxes: self.box_features(features, boxes, image_shapes),
                proposals,
                image_shapes,
                [t["image_labels"] for t in targets],
                _caption_embeddings(targets),
            )
        if self.training:
            distill_proposals = proposals
            proposals, matched_idxs, labels, regression_targets = self.select_training_samples(
                proposals, targets
            )
            mask_losses = {}
            if self.has_mask():
                mask_losses["loss_mask"] = self._mask_loss(
                    features, proposals, image_shapes, targets, matched_idxs, labels
                )
            logits, deltas, _ = head(self.box_features(features, proposals, image_shapes))
            labels = torch.cat(labels)
            background = logits.shape[1] - 1
            gt_classes = torch.where(labels == 0, background, labels - 1)
            losses = head.text_loss(logits, gt_classes)
            losses["loss_box_reg"] = self.box_loss_weight * box_regression_loss(
                deltas, torch.cat(regression_targets), gt_classes, background
            )
            losses.update(
                head.distillation_loss(
                    lambda boxes: self.box_features(features, boxes, image_shapes),
                    proposals=distill_proposals,
                    images=images,
                    offline=offline,
                )
            )
            losses.update(mask_losses)
            return [], losses

        # One matrix product scores every region against the whole vocabulary, and one box per
        # region is decoded (class-agnostic): the product, the softmax and the threshold are the
        # only work that grows with the vocabulary.
        probs, deltas, embeddings = head.predict(
            self.box_features(features, proposals, image_shapes)
        )
        boxes = self.box_coder.decode(deltas, proposals).reshape(-1, 4)
        detections, start = [], 0
        for i, (p, shape) in enumerate(zip(proposals, image_shapes)):
            sl = slice(start, start + len(p))
            start += len(p)
            detections.append(
                head.detect(
                    box_ops.clip_boxes_to_image(boxes[sl], shape),
                    probs[sl],
                    embeddings[sl],
                    None if images is None else images[i : i + 1],
                    None if clip_features is None else clip_features[i : i + 1],
                )
            )
        if self.has_mask():
            logits = self.mask_logits(features, [d["boxes"] for d in detections], image_shapes)
            probs = mask_probabilities(logits)
            for d, p in zip(detections, probs.split([len(d["boxes"]) for d in detections])):
                d["mask_probs"] = p
        return detections, {}

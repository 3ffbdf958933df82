"""The open-vocabulary Faster R-CNN of the torchvision engine."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from ovdet.core.clip_backbone import CLIP_FEATURES_KEY
from ovdet.core.head import OpenVocabularyHead
from ovdet.tv.modeling.roi_heads import TorchvisionOpenVocabularyRoIHeads, is_image_labelled
from ovdet.tv.modeling.sampling import PerImageSeededSampler, sample_seeds
from ovdet.utils.errors import ConfigError

__all__ = ["NormalizeOnlyTransform", "OpenVocabularyFasterRCNN", "PIXEL_MEAN", "PIXEL_STD"]

# ImageNet statistics of torchvision's ResNets, for RGB inputs in [0, 1].
PIXEL_MEAN = (0.485, 0.456, 0.406)
PIXEL_STD = (0.229, 0.224, 0.225)


class NormalizeOnlyTransform(GeneralizedRCNNTransform):
    """Normalises and batches images; resizing is done by the data pipeline (as in detectron2).

    Images come in as RGB in [0, 1]; they are multiplied by ``pixel_scale``, put in
    ``input_format``'s channel order and normalised by ``image_mean`` / ``image_std`` (given in
    those units and that order). With ``pixel_scale=255`` and ``"BGR"`` this is detectron2's
    input (``MODEL.PIXEL_MEAN/STD``, ``INPUT.FORMAT``). The mean and std are buffers on the
    model's device (torchvision's transform copies them from Python lists for every image).

    Args:
        *args, **kwargs: those of torchvision's ``GeneralizedRCNNTransform`` (``min_size``,
            ``max_size``, ``image_mean``, ``image_std``, ``size_divisible``...).
        input_format: ``"RGB"`` or ``"BGR"``, the channel order the model sees.
        pixel_scale: pixel values of the model's input are ``[0, pixel_scale]``.
    """

    def __init__(self, *args, input_format: str = "RGB", pixel_scale: float = 1.0, **kwargs):
        super().__init__(*args, **kwargs)
        if input_format not in ("RGB", "BGR"):
            raise ConfigError(f"INPUT.FORMAT must be RGB or BGR, got {input_format!r}")
        self.flip_channels = input_format == "BGR"
        self.pixel_scale = float(pixel_scale)
        self.register_buffer(
            "pixel_mean", torch.tensor(self.image_mean).view(3, 1, 1), persistent=False
        )
        self.register_buffer(
            "pixel_std", torch.tensor(self.image_std).view(3, 1, 1), persistent=False
        )

    @classmethod
    def from_config(cls, cfg, size_divisible: int = 32) -> NormalizeOnlyTransform:
        """From ``MODEL.PIXEL_MEAN`` / ``MODEL.PIXEL_STD`` (0-255, in ``INPUT.FORMAT``'s order)
        and ``INPUT.FORMAT``, as detectron2."""
        return cls(
            1,
            1,
            list(cfg.MODEL.PIXEL_MEAN),
            list(cfg.MODEL.PIXEL_STD),
            size_divisible=size_divisible,
            input_format=cfg.INPUT.FORMAT,
            pixel_scale=255.0,
        )

    def resize(self, image, target=None):
        return image, target

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        """Tensor[3, H, W] RGB in [0, 1] -> normalised, in the model's channel order."""
        if not image.is_floating_point():
            raise TypeError(f"images must be float tensors in [0, 1], got {image.dtype}")
        if self.pixel_scale != 1.0:
            image = image * self.pixel_scale
        if self.flip_channels:
            image = image.flip(0)
        return (image - self.pixel_mean.to(image)) / self.pixel_std.to(image)

    def unnormalize(self, tensors: torch.Tensor) -> torch.Tensor:
        """Tensor[B, 3, H, W] normalised -> back to RGB in [0, 1] (padding becomes the mean)."""
        x = tensors * self.pixel_std.to(tensors) + self.pixel_mean.to(tensors)
        if self.flip_channels:
            x = x.flip(1)
        return x / self.pixel_scale if self.pixel_scale != 1.0 else x


class OpenVocabularyFasterRCNN(FasterRCNN):
    """torchvision's Faster R-CNN + FPN whose box predictor is an :class:`OpenVocabularyHead`.

    Inputs are lists of Tensor[3, H, W] RGB images in [0, 1], already resized. Training targets
    are dicts with ``boxes`` Tensor[K, 4] (x1, y1, x2, y2) and ``labels`` Tensor[K] in 1..C;
    offline distillation also needs ``distill_boxes`` Tensor[M, 4] and ``distill_embeddings``
    Tensor[M, D]. Image-labelled batches (weak supervision) carry ``image_labels`` (0-based
    vocabulary indices), empty ``boxes`` and optionally ``caption_embedding`` Tensor[D]: they
    train the head's image-label and caption losses only (no RPN or box loss, as Detic).
    The vocabulary, the CLIP teacher, the joining of scores and the score threshold live
    in the head (:func:`~ovdet.core.head.get_head`).

    Args:
        backbone: ResNet + FPN, a frozen CLIP ResNet + FPN (F-VLM; its output's ``"clip"`` map
            goes to the head), or ResNet to res4 (C4, :mod:`ovdet.tv.modeling.c4`).
        head: the open-vocabulary head (the box predictor).
        box_loss_weight: weight of the class-agnostic box regression loss.
        input_transform: normalisation and batching of the images; default torchvision's
            ImageNet statistics on RGB in [0, 1], padded to multiples of 32.
        mask_roi_pool, mask_head, mask_predictor: the class-agnostic mask branch
            (``MODEL.MASK_ON``; torchvision's ``MaskRCNN`` arguments), or ``None`` for boxes
            only. Training targets then carry ``masks`` Tensor[K, H, W]; detections carry
            ``mask_probs`` Tensor[K, 28, 28].
        **kwargs: the other arguments of torchvision's ``FasterRCNN``.
    """

    roi_heads: TorchvisionOpenVocabularyRoIHeads

    def __init__(
        self,
        backbone: nn.Module,
        head: OpenVocabularyHead,
        box_loss_weight: float = 1.0,
        input_transform: NormalizeOnlyTransform | None = None,
        mask_roi_pool: nn.Module | None = None,
        mask_head: nn.Module | None = None,
        mask_predictor: nn.Module | None = None,
        **kwargs,
    ) -> None:
        super().__init__(backbone, num_classes=None, box_predictor=head, **kwargs)
        old = self.roi_heads
        self.roi_heads = TorchvisionOpenVocabularyRoIHeads(
            old.box_roi_pool,
            old.box_head,
            head,
            fg_iou_thresh=old.proposal_matcher.high_threshold,
            bg_iou_thresh=old.proposal_matcher.low_threshold,
            batch_size_per_image=old.fg_bg_sampler.batch_size_per_image,
            positive_fraction=old.fg_bg_sampler.positive_fraction,
            bbox_reg_weights=old.box_coder.weights,
            score_thresh=old.score_thresh,
            nms_thresh=old.nms_thresh,
            detections_per_img=old.detections_per_img,
            box_loss_weight=box_loss_weight,
            mask_roi_pool=mask_roi_pool,
            mask_head=mask_head,
            mask_predictor=mask_predictor,
        )
        self.transform = input_transform or NormalizeOnlyTransform(1, 1, PIXEL_MEAN, PIXEL_STD)
        # Each image samples its anchors and regions with its own seed: training does not
        # depend on how a global batch is split over processes (ovdet.tv.modeling.sampling).
        for salt, module in enumerate((self.rpn, self.roi_heads)):
            old_sampler = module.fg_bg_sampler
            module.fg_bg_sampler = PerImageSeededSampler(
                old_sampler.batch_size_per_image, old_sampler.positive_fraction, salt
            )

    @property
    def head(self) -> OpenVocabularyHead:
        return self.roi_heads.head

    @torch.no_grad()
    def box_embeddings(self, images: list[torch.Tensor], boxes: list[torch.Tensor]) -> torch.Tensor:
        """Region embeddings of given boxes (image exemplars, :mod:`ovdet.core.exemplars`).

        Args:
            images: Tensor[3, H, W] RGB in [0, 1], already resized (as :meth:`forward`).
            boxes: per image Tensor[N_i, 4] (x1, y1, x2, y2) in its pixels.

        Returns:
            Tensor[sum N_i, D], L2-normalised: what the head scores against the vocabulary.
        """
        images_t, _ = self.transform(images)
        features, _ = self.backbone_features(images_t.tensors)
        box_features = self.roi_heads.box_features(features, boxes, images_t.image_sizes)
        return self.head.embed(box_features)

    def backbone_features(self, images: torch.Tensor) -> tuple[dict, torch.Tensor | None]:
        """(detector feature maps, the CLIP backbone's map or ``None``): a CLIP backbone's
        frozen map goes to the head, not to the RPN."""
        features = self.backbone(images)
        return features, features.pop(CLIP_FEATURES_KEY, None)

    def forward(self, images, targets=None):
        """Losses dict (training) or a list of detection dicts (inference), as torchvision."""
        seeds = sample_seeds(targets) if self.training else None
        with self.rpn.fg_bg_sampler.seeded(seeds), self.roi_heads.fg_bg_sampler.seeded(seeds):
            return self._forward(images, targets)

    def _forward(self, images, targets):
        images_t, targets = self.transform(images, targets)
        features, clip_features = self.backbone_features(images_t.tensors)
        proposals, proposal_losses = self.rpn(images_t, features, targets)
        weak = self.training and is_image_labelled(targets)
        needs_images = self.head.needs_images(self.training) and not weak
        rgb = self.transform.unnormalize(images_t.tensors) if needs_images else None
        offline = None
        if self.training and self.head.distills_offline and not weak:
            offline = _offline_targets(targets)
        detections, losses = self.roi_heads(
            features, proposals, images_t.image_sizes, targets, images=rgb, offline=offline,
            clip_features=clip_features,
        )  # fmt: skip
        if not self.training:
            return detections
        if not weak:  # image-labelled images have no boxes: the RPN learns nothing from them
            losses.update(proposal_losses)
        return losses


def _offline_targets(targets: list[dict]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    try:
        return [(t["distill_boxes"], t["distill_embeddings"]) for t in targets]
    except KeyError as e:
        raise RuntimeError(
            "offline distillation needs 'distill_boxes' and 'distill_embeddings' in the targets; "
            "set MODEL.OVDET.DISTILL.EMBEDDINGS_FILE"
        ) from e

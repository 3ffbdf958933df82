"""Weak supervision losses (Detic, OVR-CNN): image labels and captions, no boxes.

An image-labelled image says *which* classes it shows, not where. Detic trains the classifier
with such images by choosing, per label, one region of the image and applying binary
cross-entropy over the whole vocabulary with the image's labels as positives:

* ``max_size`` (Detic's default): the largest of the image's top proposals takes the labels;
* ``max_score``: for each label, the proposal that scores highest for it;
* ``image``: the whole-image box.

The caption loss scores the whole-image box's embedding against the CLIP text embeddings of all
captions of the batch; its own caption is the positive (Detic's binary form of a contrastive
loss, with a weight on the negatives).

The federated loss (Detic, for LVIS-scale vocabularies) restricts the binary cross-entropy of an
image to its labelled classes plus classes sampled with probability ~ frequency^0.5, 50 in all.

By convention the regions of one image are its proposals, best first, followed by the
whole-image box as the **last** region (Detic's ``ADD_IMAGE_BOX``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from ovdet.utils.errors import ConfigError

__all__ = [
    "BOX_BATCH_CLASSES",
    "IMAGE_LABEL_REGIONS",
    "PRIOR_LOGIT_BIAS",
    "TrainingVocabulary",
    "WeakSupervisionSettings",
    "caption_loss",
    "choose_label_regions",
    "federated_classes",
    "image_label_loss",
]

IMAGE_LABEL_REGIONS = ("max_size", "max_score", "image")

# The classes box batches score when image-labelled data is mixed in: "all", the box classes and
# those only image labels name (never positive in a box batch, so negatives of its every region,
# as Detic's OV-COCO box data keeps all classes); "box", the box classes alone.
BOX_BATCH_CLASSES = ("all", "box")

# Sigmoid prior of Detic's classifier bias (prior probability 0.01): logits of temperature-scaled
# cosine similarities are shifted by it in the binary losses, so that an unrelated class (cosine
# about 0) starts at a probability of 0.01, not 0.5.
PRIOR_LOGIT_BIAS = -math.log((1 - 0.01) / 0.01)


def choose_label_regions(
    boxes: torch.Tensor, class_logits: torch.Tensor, labels: torch.Tensor, method: str
) -> torch.Tensor:
    """The region that takes each image label.

    Args:
        boxes: Tensor[N, 4] (x1, y1, x2, y2): the proposals, then the whole-image box last.
        class_logits: Tensor[N, C] (or [N, C + 1] with the background last), the regions'
            logits.
        labels: LongTensor[L], the image's labels (indices into the C classes).
        method: ``"max_size"`` (the largest proposal), ``"max_score"`` (per label, the
            proposal scoring highest for it) or ``"image"`` (the whole-image box).

    Returns:
        LongTensor[L], indices into the N regions. With no proposal (N = 1), the image box.
    """
    if method not in IMAGE_LABEL_REGIONS:
        raise ValueError(f"region choice must be one of {IMAGE_LABEL_REGIONS}, got {method!r}")
    n = boxes.shape[0]
    if n == 0:
        raise ValueError("an image needs at least its whole-image box")
    last = torch.full_like(labels, n - 1)
    if method == "image" or n == 1:
        return last
    proposals = boxes[:-1]
    if method == "max_size":
        areas = (proposals[:, 2] - proposals[:, 0]).clamp(min=0) * (
            proposals[:, 3] - proposals[:, 1]
        ).clamp(min=0)
        return torch.full_like(labels, int(areas.argmax()))
    return class_logits[:-1, labels].argmax(dim=0)


def federated_classes(
    positives: torch.Tensor,
    class_weights: torch.Tensor,
    num_classes: int = 50,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Detic's federated class set of one image: its classes, plus classes sampled without
    replacement with probability proportional to ``class_weights`` until ``num_classes``.

    Args:
        positives: LongTensor[P], the classes present (always kept, even beyond the count).
        class_weights: Tensor[C], sampling weights (Detic: image count ^ 0.5); classes of
            weight 0 are never sampled.
        num_classes: size of the set.
        generator: random generator (default: the global one).

    Returns:
        LongTensor[K], distinct class indices, the positives first.
    """
    present = torch.unique(positives)
    weights = class_weights.detach().float().clone()
    weights[present] = 0
    wanted = min(num_classes - len(present), int((weights > 0).sum()))
    if wanted <= 0:
        return present
    extra = torch.multinomial(weights, wanted, replacement=False, generator=generator)
    return torch.cat([present, extra.to(present.device)])


def image_label_loss(
    logits: Sequence[torch.Tensor],
    boxes: Sequence[torch.Tensor],
    labels: Sequence[torch.Tensor],
    method: str = "max_size",
    logit_bias: float = PRIOR_LOGIT_BIAS,
    class_subsets: Sequence[torch.Tensor | None] | None = None,
) -> torch.Tensor:
    """Image-label loss: per label, BCE of the chosen region over the vocabulary.

    For each image and each of its labels, the region of :func:`choose_label_regions` is scored
    with ``sigmoid(logit + logit_bias)`` against a target that is 1 for that label and 0 for
    the other classes and for the background (the chosen region is an object); the image's
    other labels are left out of that label's terms, neither positive nor negative (another of
    its objects may be elsewhere, or the same region may show both). The BCE is summed over the
    classes and the background (or over the image's federated class subset and the
    background), averaged over the image's labels, then over the images that have labels
    (Detic's ``image_label_losses`` with ``USE_SIGMOID_CE``, whose target also covers the
    background column; Detic makes the other labels negatives). On the synthetic benchmark,
    with one to three objects a scene, the region of each label under ``max_score`` was also
    trained positive for the scene's other labels before, and lost novel AP50
    (docs/benchmark_studies.md#image-label-loss).

    Args:
        logits: per image Tensor[N_i, C + 1], the regions' logits, background last.
        boxes: per image Tensor[N_i, 4], the proposals then the whole-image box.
        labels: per image LongTensor[L_i], the image's labels (may be empty).
        method: the region choice (see :func:`choose_label_regions`).
        logit_bias: added to every logit (default: Detic's prior of 0.01).
        class_subsets: per image LongTensor[K_i] of classes (in ``[0, C)``) the BCE runs over
            besides the background (federated loss), or ``None`` for the whole vocabulary.

    Returns:
        A scalar (0, with gradient, when no image has a label).
    """
    total = sum(x.sum() for x in logits) * 0.0
    images = 0
    for i, (image_logits, image_boxes, image_labels) in enumerate(zip(logits, boxes, labels)):
        if image_labels.numel() == 0:
            continue
        image_labels = image_labels.to(image_logits.device)
        regions = choose_label_regions(image_boxes, image_logits.detach(), image_labels, method)
        rows = torch.arange(len(image_labels), device=image_logits.device)
        # Row l: its label positive; the image's other labels ignored (another object's, or the
        # same region's other class), every other class and the background negative.
        target = image_logits.new_zeros((len(image_labels), image_logits.shape[1]))
        target[rows, image_labels] = 1.0
        weight = torch.ones_like(target)
        weight[:, image_labels] = 0.0
        weight[rows, image_labels] = 1.0
        scores = image_logits[regions].float() + logit_bias  # [L, C + 1]
        subset = None if class_subsets is None else class_subsets[i]
        if subset is not None:
            background = subset.new_full((1,), image_logits.shape[1] - 1)
            subset = torch.cat([subset.to(scores.device), background])
            scores, target, weight = scores[:, subset], target[:, subset], weight[:, subset]
        bce = F.binary_cross_entropy_with_logits(
            scores, target.float(), weight=weight.float(), reduction="none"
        )
        total = total + bce.sum(dim=1).mean()
        images += 1
    return total / max(images, 1)


def caption_loss(
    image_embeddings: torch.Tensor,
    caption_embeddings: torch.Tensor,
    temperature: float,
    negative_weight: float = 0.125,
    logit_bias: float = PRIOR_LOGIT_BIAS,
) -> torch.Tensor:
    """Caption loss: the whole-image region embedding of each image against the CLIP text
    embeddings of every caption of the batch, its own caption the positive.

    ``logits = temperature * cos(image_i, caption_j) + logit_bias``; binary cross-entropy with
    target ``i == j``, the negatives weighted by ``negative_weight`` (Detic's ``NEG_CAP_WEIGHT``),
    summed over the captions and averaged over the images (Detic's ``_caption_loss``).

    Args:
        image_embeddings: Tensor[B, D], L2-normalised whole-image region embeddings.
        caption_embeddings: Tensor[B, D], CLIP text embeddings of the images' captions (row i
            is image i's caption; normalised here, no gradient flows into them).
        temperature: the classifier's temperature.
        negative_weight: weight of the other captions' terms.
        logit_bias: added to every logit.

    Returns:
        A scalar (0 for B = 0).
    """
    if image_embeddings.shape != caption_embeddings.shape:
        raise ValueError(
            f"image {tuple(image_embeddings.shape)} and caption "
            f"{tuple(caption_embeddings.shape)} embeddings differ in shape"
        )
    b = image_embeddings.shape[0]
    if b == 0:
        return image_embeddings.sum() * 0.0
    captions = F.normalize(caption_embeddings.detach().float(), dim=-1)
    logits = temperature * image_embeddings.float() @ captions.t() + logit_bias  # [B, B]
    target = torch.eye(b, device=logits.device)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    weights = target + negative_weight * (1 - target)
    return (bce * weights).sum() / b


@dataclass(frozen=True)
class WeakSupervisionSettings:
    """The weak-supervision losses of the head (``MODEL.OVDET.WEAK``), Detic's defaults.

    Attributes:
        image_label_loss: region choice of the image-label loss (``IMAGE_LABEL_LOSS``).
        image_loss_weight: weight of ``loss_image_label`` (``IMAGE_LOSS_WEIGHT``).
        num_proposals: top proposals per image the region is chosen from (``WS_NUM_PROPS``).
        caption_loss: add ``loss_caption`` on batches with captions (``WITH_CAPTION``).
        caption_weight: weight of ``loss_caption``.
        negative_caption_weight: weight of the other captions (``NEG_CAP_WEIGHT``).
        fed_loss: restrict the image-label BCE to a federated class subset (``USE_FED_LOSS``).
        fed_loss_num_classes: size of that subset (``FED_LOSS_NUM_CAT``).
        fed_loss_freq_weight: sampling weight = image count ^ this (``FED_LOSS_FREQ_WEIGHT``).
        box_batch_classes: the classes box batches score, ``"all"`` or ``"box"``
            (``BOX_BATCH_CLASSES``, see :data:`BOX_BATCH_CLASSES`).
    """

    image_label_loss: str = "max_size"
    image_loss_weight: float = 0.1
    num_proposals: int = 128
    caption_loss: bool = False
    caption_weight: float = 1.0
    negative_caption_weight: float = 0.125
    fed_loss: bool = False
    fed_loss_num_classes: int = 50
    fed_loss_freq_weight: float = 0.5
    box_batch_classes: str = "all"

    def __post_init__(self) -> None:
        if self.image_label_loss not in IMAGE_LABEL_REGIONS:
            raise ConfigError(
                f"MODEL.OVDET.WEAK.IMAGE_LABEL_LOSS must be one of {IMAGE_LABEL_REGIONS}, got "
                f"{self.image_label_loss!r}"
            )
        if self.box_batch_classes not in BOX_BATCH_CLASSES:
            raise ConfigError(
                f"MODEL.OVDET.WEAK.BOX_BATCH_CLASSES must be one of {BOX_BATCH_CLASSES}, got "
                f"{self.box_batch_classes!r}"
            )
        if self.num_proposals < 1 or self.fed_loss_num_classes < 1:
            raise ConfigError(
                "MODEL.OVDET.WEAK.NUM_PROPOSALS and FED_LOSS_NUM_CLASSES must be positive"
            )

    @classmethod
    def from_config(cls, cfg) -> WeakSupervisionSettings:
        w = cfg.MODEL.OVDET.WEAK
        return cls(
            image_label_loss=w.IMAGE_LABEL_LOSS,
            image_loss_weight=w.IMAGE_LOSS_WEIGHT,
            num_proposals=w.NUM_PROPOSALS,
            caption_loss=w.CAPTION_LOSS,
            caption_weight=w.CAPTION_WEIGHT,
            negative_caption_weight=w.NEG_CAPTION_WEIGHT,
            fed_loss=w.FED_LOSS,
            fed_loss_num_classes=w.FED_LOSS_NUM_CLASSES,
            fed_loss_freq_weight=w.FED_LOSS_FREQ_WEIGHT,
            box_batch_classes=w.BOX_BATCH_CLASSES,
        )


@dataclass(frozen=True)
class TrainingVocabulary:
    """The classifier of one kind of training batch.

    Attributes:
        text: Tensor[C, D], the classes' CLIP text embeddings.
        is_novel: BoolTensor[C], the classes no box names (``None``: none).
        class_counts: Tensor[C], the classes' image counts for the federated loss (``None``:
            not needed).
    """

    text: torch.Tensor
    is_novel: torch.Tensor | None = None
    class_counts: torch.Tensor | None = None

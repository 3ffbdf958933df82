"""Weak supervision in the open-vocabulary head: the classes and losses of image-labelled batches.

:class:`WeakSupervisionMixin` is one part of :class:`~ovdet.core.head.OpenVocabularyHead`; it
reads the head's :class:`~ovdet.core.weak_supervision.WeakSupervisionSettings` (``weak``), its
classifier and its region embeddings. The losses themselves are in
:mod:`ovdet.core.weak_supervision`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import torch

from ovdet.core.classifier import ZeroShotClassifier
from ovdet.core.head_distillation import BoxFeaturizer
from ovdet.core.weak_supervision import (
    TrainingVocabulary,
    WeakSupervisionSettings,
    caption_loss,
    federated_classes,
    image_label_loss,
)

__all__ = ["WeakSupervisionMixin"]


class WeakSupervisionMixin:
    """Image labels and captions (Detic): the per-batch classifier, the federated class weights,
    the regions that take an image's labels and ``loss_image_label`` / ``loss_caption``."""

    classifier: ZeroShotClassifier
    weak: WeakSupervisionSettings
    # Federated loss: Tensor[C] sampling weights of the current vocabulary (or None).
    class_sampling_weights: torch.Tensor | None

    if TYPE_CHECKING:  # the head's

        @property
        def num_classes(self) -> int: ...

        def embed(self, features: torch.Tensor) -> torch.Tensor: ...

    def training_vocabulary(
        self, kind: int, box: TrainingVocabulary, weak: TrainingVocabulary
    ) -> TrainingVocabulary:
        """The classifier of a training batch of ``kind`` (0 box, 1 image-labelled), which the
        engine sets (``set_vocabulary``, ``set_class_frequencies``) before the batch.

        Image-labelled batches score ``weak`` (the box classes first, then those only image
        labels name) with its class counts. Box batches score ``weak`` too, its image-label
        classes never positive, with ``self.weak.box_batch_classes == "all"``, else ``box``;
        they need no class counts.
        """
        if kind == 1:
            return weak
        chosen = weak if self.weak.box_batch_classes == "all" else box
        return TrainingVocabulary(chosen.text, chosen.is_novel)

    def set_class_frequencies(self, image_counts: torch.Tensor | None) -> None:
        """Per-class image counts Tensor[C] of the current vocabulary, for the federated loss
        (sampling weight = count ^ ``fed_loss_freq_weight``); ``None`` clears them."""
        if image_counts is None:
            self.class_sampling_weights = None
            return
        if tuple(image_counts.shape) != (self.num_classes,):
            raise ValueError(
                f"class counts must be [{self.num_classes}], got {tuple(image_counts.shape)}"
            )
        self.class_sampling_weights = image_counts.float().clamp(min=0) ** (
            self.weak.fed_loss_freq_weight
        )

    def weak_regions(
        self, proposals: Sequence[torch.Tensor], image_sizes: Sequence[tuple[int, int]]
    ) -> list[torch.Tensor]:
        """The regions of image-labelled images: the top ``weak.num_proposals`` proposals (RPN
        order) and the whole-image box last. list of Tensor[N_i, 4] -> list of
        Tensor[min(N_i, K) + 1, 4], detached."""
        regions = []
        for p, (h, w) in zip(proposals, image_sizes):
            image_box = p.new_tensor([[0.0, 0.0, float(w), float(h)]])
            regions.append(torch.cat([p[: self.weak.num_proposals].detach(), image_box]))
        return regions

    def weak_losses(
        self,
        box_features: BoxFeaturizer,
        proposals: Sequence[torch.Tensor],
        image_sizes: Sequence[tuple[int, int]],
        image_labels: Sequence[torch.Tensor],
        caption_embeddings: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Losses of a batch of image-labelled images (no boxes): ``loss_image_label`` and,
        with ``weak.caption_loss`` and captions, ``loss_caption``.

        Args:
            box_features: the engine's box-head features of given boxes.
            proposals: per image the RPN proposals Tensor[N_i, 4], best first.
            image_sizes: per image (H, W), the proposals' pixel frame.
            image_labels: per image LongTensor[L_i], indices into the current vocabulary.
            caption_embeddings: Tensor[B, D], CLIP text embeddings of one caption per image.
        """
        weak = self.weak
        regions = self.weak_regions(proposals, image_sizes)
        embeddings = self.embed(box_features(regions))
        logits = self.classifier.logits_from_embeddings(embeddings)  # background last
        per_image = logits.split([len(r) for r in regions])
        subsets = None
        if weak.fed_loss:
            if self.class_sampling_weights is None:
                raise RuntimeError("the federated loss needs set_class_frequencies()")
            weights = self.class_sampling_weights.to(logits.device)
            subsets = [
                federated_classes(labels.to(weights.device), weights, weak.fed_loss_num_classes)
                for labels in image_labels
            ]
        loss = image_label_loss(
            per_image, regions, image_labels, weak.image_label_loss, class_subsets=subsets
        )
        losses = {"loss_image_label": weak.image_loss_weight * loss}
        if weak.caption_loss and caption_embeddings is not None:
            ends = torch.tensor([len(r) for r in regions]).cumsum(0) - 1
            image_box_embeddings = embeddings[ends.to(embeddings.device)]
            losses["loss_caption"] = weak.caption_weight * caption_loss(
                image_box_embeddings,
                caption_embeddings.to(embeddings.device),
                self.classifier.temperature,
                weak.negative_caption_weight,
            )
        return losses

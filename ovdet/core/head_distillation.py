"""ViLD-image distillation in the open-vocabulary head: which regions, which embeddings, the loss.

:class:`DistillationMixin` is one part of :class:`~ovdet.core.head.OpenVocabularyHead`; it
reads the head's settings (``distill_mode``, ``distill_weight``, ``distill_num_proposals``),
its CLIP teacher and the embeddings it distils (the classifier's, or those of ViLD's separate
image head).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Sequence

import torch

from ovdet.core.losses import vild_image_loss
from ovdet.core.teacher import ClipRegionTeacher

__all__ = ["DISTILL_MODES", "BoxFeaturizer", "DistillationMixin"]

DISTILL_MODES = ("none", "online", "offline")

# Box-head features of given boxes of every image: list of Tensor[N_i, 4] -> Tensor[sum N_i, F]
# (the engine's RoI pooling + box head); the head embeds them with the projection it needs.
BoxFeaturizer = Callable[[Sequence[torch.Tensor]], torch.Tensor]


class DistillationMixin:
    """ViLD-image (``loss_image``): region embeddings pulled towards CLIP's of the same regions.

    Online, the CLIP teacher embeds the top proposals of each image; offline, the regions and
    their CLIP embeddings were precomputed. The student is the classifier's projection, or the
    image head's with ``image_head`` (ViLD's separate heads).
    """

    distill_mode: str
    distill_weight: float
    distill_num_proposals: int

    if TYPE_CHECKING:  # the head's

        def _teacher(self, device: torch.device) -> ClipRegionTeacher: ...

        def distilled_embeddings(self, features: torch.Tensor) -> torch.Tensor: ...

    @property
    def distills(self) -> bool:
        """Whether training adds ``loss_image``."""
        return self.distill_mode != "none" and self.distill_weight > 0

    @property
    def distills_online(self) -> bool:
        """Whether training runs the CLIP teacher on proposals (``loss_image``, online)."""
        return self.distills and self.distill_mode == "online"

    @property
    def distills_offline(self) -> bool:
        """Whether training needs the precomputed regions (``loss_image``, offline)."""
        return self.distills and self.distill_mode == "offline"

    def distillation_boxes(self, proposals: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The regions distilled online: the top ``distill_num_proposals`` proposals of each
        image, by RPN objectness (proposals come sorted). list of Tensor[N_i, 4] -> list of
        Tensor[min(N_i, K), 4], detached."""
        return [p[: self.distill_num_proposals].detach() for p in proposals]

    def distillation_loss(
        self,
        box_features: BoxFeaturizer,
        proposals: Sequence[torch.Tensor] | None = None,
        images: torch.Tensor | None = None,
        offline: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> dict[str, torch.Tensor]:
        """``loss_image`` (ViLD-image), or nothing when not distilling.

        Args:
            box_features: the engine's box-head features of given boxes.
            proposals: online mode: per image the RPN proposals Tensor[N_i, 4], best first.
            images: online mode: Tensor[B, 3, H, W], RGB in [0, 1], the boxes' pixel frame.
            offline: offline mode: per image (boxes Tensor[M_i, 4], CLIP embeddings
                Tensor[M_i, D]), precomputed.
        """
        if not self.distills:
            return {}
        if self.distill_mode == "online":
            if proposals is None or images is None:
                raise RuntimeError("online distillation needs the proposals and the images")
            boxes = self.distillation_boxes(proposals)
            targets = self._teacher(images.device)(images, boxes)
        else:
            if offline is None:
                raise RuntimeError(
                    "offline distillation needs the precomputed regions and embeddings; set "
                    "MODEL.OVDET.DISTILL.EMBEDDINGS_FILE"
                )
            boxes = [b for b, _ in offline]
            targets = torch.cat([e for _, e in offline])
        student = self.distilled_embeddings(box_features(boxes))
        return {
            "loss_image": self.distill_weight * vild_image_loss(student, targets.to(student.device))
        }

"""The open-vocabulary head's CLIP: its region teacher, its frozen CLIP backbone, and CLIP
rescoring of its detections.

:class:`ClipRescoringMixin` is one part of :class:`~ovdet.core.head.OpenVocabularyHead`. The
teacher embeds box crops (online ViLD-image distillation in training, CLIP rescoring of crops at
inference); the frozen CLIP backbone (F-VLM) pools regions for rescoring without crops. Either
way the detector's probabilities of its top regions are joined with CLIP's
(:func:`~ovdet.core.score_fusion.join_scores`), per class against the vocabulary's rows or, where
they differ, CLIP rescoring's own (exemplar classes, :mod:`ovdet.core.exemplars`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from ovdet.core.clip_tower import FrozenClipTower
from ovdet.core.score_fusion import ClipRescoringSettings, check_score_fusion, join_scores
from ovdet.core.teacher import ClipRegionTeacher
from ovdet.utils.errors import ConfigError

__all__ = ["ClipRescoringMixin"]


class ClipRescoringMixin:
    """The CLIP region teacher, the frozen CLIP backbone and CLIP rescoring of the head.

    The head's ``__init__`` sets ``clip_rescoring`` (``None``: off), ``clip_teacher`` and
    ``clip_backbone`` (not registered submodules: frozen, loaded and saved apart).
    """

    clip_rescoring: ClipRescoringSettings | None
    clip_teacher: ClipRegionTeacher | None
    clip_backbone: FrozenClipTower | None
    _rescoring_embeddings: torch.Tensor | None

    if TYPE_CHECKING:  # the head's
        classifier: torch.nn.Module
        is_novel_class: torch.Tensor
        text_embeddings: torch.Tensor
        has_image_head: bool

    def set_clip_teacher(self, teacher: ClipRegionTeacher | None) -> None:
        """The CLIP region teacher of online distillation and CLIP rescoring (or ``None``)."""
        if teacher is not None:
            teacher.to(self.classifier.projection.weight.device)
        object.__setattr__(self, "clip_teacher", teacher)

    def _teacher(self, device: torch.device) -> ClipRegionTeacher:
        teacher = self.clip_teacher
        if teacher is None:
            raise RuntimeError(
                "online distillation and CLIP rescoring need a CLIP teacher; call "
                "set_clip_teacher()"
            )
        if teacher.mean.device != device:
            teacher.to(device)
        return teacher

    def set_clip_backbone(self, backbone: FrozenClipTower | None) -> None:
        """The detector's frozen CLIP backbone, whose pooled regions CLIP rescoring scores with
        ``source="backbone"`` (F-VLM; the engines set it when they build one)."""
        object.__setattr__(self, "clip_backbone", backbone)

    def enable_clip_rescoring(self, settings: ClipRescoringSettings | None) -> None:
        """Turn CLIP rescoring on (with these settings) or off (``None``).

        Raises:
            ConfigError: on a head with an image head, whose scores are already joined
                (:func:`~ovdet.core.score_fusion.check_score_fusion`); ``source="backbone"``
                on a detector without a CLIP backbone.
            RuntimeError: ``source="crops"`` without a CLIP teacher (:meth:`set_clip_teacher`).
        """
        if settings is not None:
            check_score_fusion(self.has_image_head, True)
            if not settings.crops and self.clip_backbone is None:
                raise ConfigError(
                    "MODEL.OVDET.CLIP_RESCORING.SOURCE backbone needs the CLIP backbone "
                    "(MODEL.BACKBONE.NAME build_clip_resnet_fpn_backbone or "
                    "build_clip_vit_fpn_backbone)"
                )
            if settings.crops and self.clip_teacher is None:
                raise RuntimeError("CLIP rescoring needs a CLIP teacher; call set_clip_teacher()")
        self.clip_rescoring = settings

    @property
    def rescores_crops(self) -> bool:
        """Whether inference runs CLIP rescoring on box crops (it needs the images)."""
        return self.clip_rescoring is not None and self.clip_rescoring.crops

    def _apply(self, fn, *args, **kwargs):
        out = super()._apply(fn, *args, **kwargs)
        if self.clip_teacher is not None:  # follows the head across devices
            self.clip_teacher._apply(fn, *args, **kwargs)
        return out

    def set_rescoring_embeddings(self, embeddings: torch.Tensor | None) -> None:
        """The rows CLIP rescoring scores CLIP's crop embeddings against, where they differ
        from the vocabulary's: an exemplar class is scored there by its CLIP crop embeddings as
        they are, not by the detector's region embeddings nor the crop rows centred in its
        regions' cone (:func:`~ovdet.core.exemplars.rescoring_class_embeddings`); ``None``: the
        vocabulary's. Reset by :meth:`set_vocabulary`.

        Args:
            embeddings: Tensor[C, D], one row per class of the current vocabulary, or ``None``.
        """
        if embeddings is not None:
            expected = tuple(self.text_embeddings.shape)
            if tuple(embeddings.shape) != expected:
                raise ValueError(f"rescoring embeddings must be {list(expected)}, got "
                                 f"{list(embeddings.shape)}")  # fmt: skip
            embeddings = F.normalize(embeddings.float(), dim=-1).to(self.text_embeddings.device)
        self._rescoring_embeddings = embeddings

    @property
    def rescoring_embeddings(self) -> torch.Tensor:
        """Tensor[C, D]: what CLIP rescoring scores crops against (see
        :meth:`set_rescoring_embeddings`)."""
        if self._rescoring_embeddings is None:
            return self.text_embeddings
        return self._rescoring_embeddings

    def rescore(
        self,
        boxes: torch.Tensor,
        probs: torch.Tensor,
        image: torch.Tensor | None = None,
        clip_features: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """CLIP rescoring of one image's regions, where it is on and its input given (``image``
        for crops, ``clip_features`` for the CLIP backbone): the ``num_proposals`` regions with
        the highest class score, their probabilities joined with CLIP's; the others dropped.

        Args:
            boxes: Tensor[N, 4], one box per region, in ``image``'s pixel frame.
            probs: Tensor[N, C], the detector's class probabilities.
            image: Tensor[1, 3, H, W], RGB in [0, 1].
            clip_features: Tensor[1, C', H / s, W / s], the CLIP backbone's map of the image.

        Returns:
            ``(boxes Tensor[M, 4], probs Tensor[M, C], region_index LongTensor[M])``, the
            regions kept and their indices into the N; all N unchanged where nothing rescores.
        """
        region_index = torch.arange(boxes.shape[0], device=boxes.device)
        e = self.clip_rescoring
        source = None if e is None else (image if e.crops else clip_features)
        if source is None or boxes.shape[0] == 0:
            return boxes, probs, region_index
        keep = probs.max(dim=1).values.topk(min(e.num_proposals, boxes.shape[0])).indices
        boxes, probs, region_index = boxes[keep], probs[keep], region_index[keep]
        if e.crops:
            clip_regions = self._teacher(image.device)(image, [boxes], e.crop_scales)
        else:
            clip_regions = self.clip_backbone.region_embeddings(clip_features, [boxes])
        probs = join_scores(
            probs, clip_regions, self.rescoring_embeddings, self.is_novel_class,
            e.base_weight, e.novel_weight, e.clip_temperature,
        )  # fmt: skip
        return boxes, probs, region_index

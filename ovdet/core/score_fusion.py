"""Joining the detector's class scores with a second opinion, as the ViLD paper does.

Two joinings, each with its own settings, never both on one model:

* **ViLD-ensemble** (``MODEL.OVDET.DISTILL.IMAGE_HEAD``, weights ``MODEL.OVDET.VILD_ENSEMBLE``):
  the classifier (ViLD-text head) and ViLD's separately trained image head, which scores
  regions by their distilled embeddings; no CLIP at inference.
* **CLIP rescoring** (ViLD-text+CLIP in the paper, ``MODEL.OVDET.CLIP_RESCORING``): the
  detector's scores and CLIP's scores of its boxes: of the box crops, computed by the CLIP
  region teacher (``SOURCE crops``), or of the regions pooled from a frozen CLIP backbone by
  CLIP's own pooling head (``SOURCE backbone``, F-VLM; :mod:`ovdet.core.clip_backbone`).

Both are a weighted geometric mean per class (:func:`geometric_mean_scores`): the detector's
weight is ``base_weight`` on classes of the training vocabulary and ``novel_weight`` on the
others. Both at once would take the mean twice with weights no paper defines, so
:func:`check_score_fusion` refuses the combination.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ovdet.utils.errors import ConfigError

__all__ = [
    "RESCORING_SOURCES",
    "ClipRescoringSettings",
    "VildEnsembleSettings",
    "check_score_fusion",
    "geometric_mean_scores",
    "join_scores",
]


@dataclass(frozen=True)
class VildEnsembleSettings:
    """ViLD-ensemble of the text and image heads (``MODEL.OVDET.VILD_ENSEMBLE``).

    Attributes:
        base_weight: classifier weight for classes of the training vocabulary (ViLD: 2/3).
        novel_weight: classifier weight for the other classes (ViLD: 1/3).
        temperature: temperature of the image head's softmax over the vocabulary.
    """

    base_weight: float = 0.67
    novel_weight: float = 0.33
    temperature: float = 100.0

    @classmethod
    def from_config(cls, cfg) -> VildEnsembleSettings:
        e = cfg.MODEL.OVDET.VILD_ENSEMBLE
        return cls(e.BASE_WEIGHT, e.NOVEL_WEIGHT, e.TEMPERATURE)


#: Where CLIP rescoring's region embeddings come from: CLIP image embeddings of box crops, or
#: regions pooled from the frozen CLIP backbone's feature map (F-VLM, no crops).
RESCORING_SOURCES = ("crops", "backbone")


@dataclass(frozen=True)
class ClipRescoringSettings:
    """CLIP rescoring of box crops at inference, ViLD-text+CLIP (``MODEL.OVDET.CLIP_RESCORING``).

    Attributes:
        base_weight: detector weight for classes of the training vocabulary.
        novel_weight: detector weight for the other classes.
        clip_temperature: temperature of CLIP's softmax over the vocabulary.
        num_proposals: regions per image rescored by CLIP (the top ones by detector score).
        crop_scales: box scales cropped per rescored region; empty means the teacher's own
            (``MODEL.OVDET.DISTILL.CROP_SCALES``). Each scale is one CLIP forward pass per
            region, so ``(1.0,)`` halves the cost of ViLD's ``(1.0, 1.5)``.
        source: :data:`RESCORING_SOURCES`: ``"crops"`` (the CLIP region teacher) or
            ``"backbone"`` (the frozen CLIP backbone's pooled regions; F-VLM).
    """

    base_weight: float = 0.67
    novel_weight: float = 0.33
    clip_temperature: float = 100.0
    num_proposals: int = 100
    crop_scales: tuple[float, ...] = ()
    source: str = "crops"

    @property
    def crops(self) -> bool:
        """Whether CLIP embeds box crops (``source="crops"``: a CLIP teacher and the images are
        needed), rather than pooling regions from the CLIP backbone."""
        return self.source == "crops"

    def __post_init__(self) -> None:
        if self.source not in RESCORING_SOURCES:
            raise ConfigError(
                f"MODEL.OVDET.CLIP_RESCORING.SOURCE must be one of {RESCORING_SOURCES}, "
                f"got {self.source!r}"
            )

    @classmethod
    def from_config(cls, cfg) -> ClipRescoringSettings:
        e = cfg.MODEL.OVDET.CLIP_RESCORING
        return cls(
            e.BASE_WEIGHT,
            e.NOVEL_WEIGHT,
            e.CLIP_TEMPERATURE,
            e.NUM_PROPOSALS,
            tuple(float(s) for s in e.CROP_SCALES),
            e.SOURCE,
        )


def check_score_fusion(image_head: bool, clip_rescoring: bool) -> None:
    """Refuse CLIP rescoring of a model with an image head (the scores would be joined twice).

    Raises:
        ConfigError: one line, when both are on.
    """
    if image_head and clip_rescoring:
        raise ConfigError(
            "MODEL.OVDET.CLIP_RESCORING.ENABLED (CLIP rescoring) cannot be used with MODEL.OVDET."
            "DISTILL.IMAGE_HEAD, whose scores are already joined with the image head's "
            "(ViLD-ensemble, MODEL.OVDET.VILD_ENSEMBLE); turn one of them off"
        )


def geometric_mean_scores(
    detector_probs: torch.Tensor,
    clip_probs: torch.Tensor,
    is_novel: torch.Tensor,
    base_weight: float = 2 / 3,
    novel_weight: float = 1 / 3,
) -> torch.Tensor:
    """Weighted geometric mean of two class-probability matrices.

    ``p = det ** w * other ** (1 - w)`` with ``w = base_weight`` for classes of the training
    vocabulary and ``w = novel_weight`` for the others (ViLD: 2/3 and 1/3: trust the detector on
    base classes, the CLIP-like scores on novel ones).

    Args:
        detector_probs: Tensor[N, C], detector probabilities (background column removed).
        clip_probs: Tensor[N, C], the other softmax probabilities over the vocabulary (CLIP's
            crop scores, or the image head's).
        is_novel: BoolTensor[C].
        base_weight, novel_weight: detector weights in [0, 1].

    Returns:
        Tensor[N, C].
    """
    for name, w in (("base_weight", base_weight), ("novel_weight", novel_weight)):
        if not 0.0 <= w <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {w}")
    weight = torch.where(
        is_novel.to(detector_probs.device),
        torch.tensor(novel_weight, device=detector_probs.device),
        torch.tensor(base_weight, device=detector_probs.device),
    )
    eps = torch.finfo(torch.float32).tiny
    log_p = (
        weight * detector_probs.float().clamp_min(eps).log()
        + (1 - weight) * clip_probs.float().clamp_min(eps).log()
    )
    return log_p.exp()


def join_scores(
    detector_probs: torch.Tensor,
    embeddings: torch.Tensor,
    text_embeddings: torch.Tensor,
    is_novel: torch.Tensor,
    base_weight: float,
    novel_weight: float,
    temperature: float,
) -> torch.Tensor:
    """The detector's probabilities joined with the scores of other region embeddings.

    The embeddings (the image head's, or CLIP's of the box crops) are scored against the
    vocabulary by a softmax at ``temperature``, then joined with :func:`geometric_mean_scores`.

    Args:
        detector_probs: Tensor[N, C], background column removed.
        embeddings: Tensor[N, D], L2-normalised, one per region.
        text_embeddings: Tensor[C, D], the vocabulary.
        is_novel: BoolTensor[C].
        base_weight, novel_weight: detector weights in [0, 1].
        temperature: multiplies the cosine similarities before the softmax.

    Returns:
        Tensor[N, C].
    """
    logits = (temperature * embeddings.float()) @ text_embeddings.t()
    return geometric_mean_scores(
        detector_probs, F.softmax(logits, -1), is_novel, base_weight, novel_weight
    )

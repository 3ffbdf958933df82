"""ViLD-ensemble: combine detector and CLIP crop scores by a weighted geometric mean."""

from __future__ import annotations

import torch

__all__ = ["geometric_mean_scores"]


def geometric_mean_scores(
    detector_probs: torch.Tensor,
    clip_probs: torch.Tensor,
    is_novel: torch.Tensor,
    base_weight: float = 2 / 3,
    novel_weight: float = 1 / 3,
) -> torch.Tensor:
    """Weighted geometric mean of two class-probability matrices.

    ``p = det ** w * clip ** (1 - w)`` with ``w = base_weight`` for classes of the training
    vocabulary and ``w = novel_weight`` for the others (ViLD: 2/3 and 1/3: trust the detector on
    base classes, CLIP on novel ones).

    Args:
        detector_probs: Tensor[N, C], detector probabilities (background column removed).
        clip_probs: Tensor[N, C], CLIP softmax probabilities over the vocabulary.
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

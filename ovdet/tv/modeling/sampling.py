"""Training-region sampling whose randomness belongs to the image, not to the batch.

torchvision's ``BalancedPositiveNegativeSampler`` draws from the global RNG, image after image,
so which anchors and proposals an image trains on depends on the images before it in the batch
and on the process it runs in: 1 process x 4 images and 2 processes x 2 images train on
different samples. Here each image draws from its own generator, seeded by the sample's seed
(``target["sample_seed"]``, set by :class:`~ovdet.data.dataset.DetectionDataset`), so the
samples, and with equal per-image sample counts the losses, do not depend on how a global batch
is split over processes.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler

__all__ = ["PerImageSeededSampler", "sample_seeds"]

_SEED_MASK = (1 << 63) - 1


class PerImageSeededSampler(BalancedPositiveNegativeSampler):
    """torchvision's balanced positive/negative sampler, one generator per image.

    Inside :meth:`seeded` the ``i``-th image draws from a generator seeded by
    ``(seeds[i], salt)``; outside it (or without seeds) it is torchvision's sampler.

    Args:
        batch_size_per_image: regions sampled per image.
        positive_fraction: at most this fraction of them positive.
        salt: tells samplers apart (the RPN's and the RoI heads' draws differ for one image).
    """

    def __init__(self, batch_size_per_image: int, positive_fraction: float, salt: int) -> None:
        super().__init__(batch_size_per_image, positive_fraction)
        self.salt = int(salt)
        self.seeds: list[int] | None = None

    @contextmanager
    def seeded(self, seeds: Sequence[int] | None) -> Iterator[None]:
        """Use one seed per image of the batch inside a ``with`` block (``None``: global RNG)."""
        saved, self.seeds = self.seeds, None if seeds is None else [int(s) for s in seeds]
        try:
            yield
        finally:
            self.seeds = saved

    def __call__(self, matched_idxs: list[torch.Tensor]) -> tuple[list, list]:
        """Per image Tensor[N_i] (-1 ignore, 0 negative, >0 positive) -> (positive masks,
        negative masks), each a list of uint8 Tensor[N_i]."""
        if self.seeds is None:
            return super().__call__(matched_idxs)
        if len(self.seeds) != len(matched_idxs):
            raise ValueError(f"{len(self.seeds)} seeds for {len(matched_idxs)} images")
        pos_masks, neg_masks = [], []
        for matched, seed in zip(matched_idxs, self.seeds):
            generator = torch.Generator().manual_seed((seed * 1_000_033 + self.salt) & _SEED_MASK)
            positive = torch.where(matched >= 1)[0]
            negative = torch.where(matched == 0)[0]
            num_pos = min(positive.numel(), int(self.batch_size_per_image * self.positive_fraction))
            num_neg = min(negative.numel(), self.batch_size_per_image - num_pos)
            pos = positive[_randperm(positive.numel(), generator, matched.device)[:num_pos]]
            neg = negative[_randperm(negative.numel(), generator, matched.device)[:num_neg]]
            pos_mask = torch.zeros_like(matched, dtype=torch.uint8)
            neg_mask = torch.zeros_like(matched, dtype=torch.uint8)
            pos_mask[pos] = 1
            neg_mask[neg] = 1
            pos_masks.append(pos_mask)
            neg_masks.append(neg_mask)
        return pos_masks, neg_masks


def _randperm(n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.randperm(n, generator=generator).to(device)


def sample_seeds(targets: Sequence[dict] | None) -> list[int] | None:
    """The targets' ``sample_seed`` values, or ``None`` unless every target has one."""
    if not targets or any("sample_seed" not in t for t in targets):
        return None
    return [int(t["sample_seed"]) for t in targets]

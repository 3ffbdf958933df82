"""The CLIP region teacher: CLIP image embeddings of box crops, batched with RoIAlign."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align

if TYPE_CHECKING:
    from ovdet.clip import ClipBackend

__all__ = ["ClipRegionTeacher", "scale_boxes"]


def scale_boxes(boxes: torch.Tensor, scale: float) -> torch.Tensor:
    """Scale boxes about their centres. Tensor[N, 4] (x1, y1, x2, y2) -> Tensor[N, 4]."""
    if scale == 1.0:
        return boxes
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]) * (scale / 2)
    return torch.cat([centres - half, centres + half], dim=1)


class ClipRegionTeacher(nn.Module):
    """Embeds image regions with a frozen CLIP image tower (ViLD's teacher).

    Each box is cropped at every scale in ``crop_scales`` (ViLD: the box and 1.5x the box),
    resized to ``crop_size`` by RoIAlign over the whole batch at once, normalised with CLIP's
    mean/std and encoded; the per-scale embeddings are L2-normalised, summed and re-normalised.

    Args:
        visual: CLIP's image tower, normalised Tensor[B, 3, S, S] -> Tensor[B, D] (a backend's
            ``image_encoder``); it is frozen here and moves with the teacher.
        image_size: CLIP's input side (default crop size).
        mean, std: CLIP's per-channel normalisation for inputs in [0, 1].
        crop_scales: box scales to crop at.
        crop_size: crop side; 0 means ``image_size``.
        chunk_size: crops encoded per forward pass (bounds memory).
        embed_dim: ``D``; ``None`` reads it from ``visual`` (open_clip towers).
    """

    def __init__(
        self,
        visual: nn.Module,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        crop_scales: Sequence[float] = (1.0, 1.5),
        crop_size: int = 0,
        chunk_size: int = 256,
        embed_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.visual = visual.eval().requires_grad_(False)
        self.embed_dim = embed_dim
        self.crop_size = int(crop_size or image_size)
        self.crop_scales = tuple(float(s) for s in crop_scales)
        if not self.crop_scales:
            raise ValueError("crop_scales must not be empty")
        self.chunk_size = chunk_size
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def from_clip(
        cls, clip: ClipBackend, crop_scales: Sequence[float] = (1.0, 1.5), crop_size: int = 0
    ) -> ClipRegionTeacher:
        """From a loaded CLIP (any :class:`~ovdet.clip.ClipBackend`): its ``image_encoder``."""
        return cls(
            clip.image_encoder,
            clip.image_size,
            clip.mean,
            clip.std,
            crop_scales,
            crop_size,
            embed_dim=clip.embed_dim,
        )

    def train(self, mode: bool = True) -> ClipRegionTeacher:
        super().train(mode)
        self.visual.eval()  # always frozen, whatever the detector's mode
        return self

    @torch.no_grad()
    def crops(self, images: torch.Tensor, boxes: Sequence[torch.Tensor], scale: float):
        """RoIAlign crops. images: Tensor[B, 3, H, W] in [0, 1] -> Tensor[sum N_i, 3, S, S]."""
        return self._crops(images, boxes, (scale,))

    def _crops(
        self, images: torch.Tensor, boxes: Sequence[torch.Tensor], scales: Sequence[float]
    ) -> torch.Tensor:
        """Crops of every box at every scale in one RoIAlign call, scale-major:
        Tensor[len(scales) * sum N_i, 3, S, S]."""
        index = torch.cat(
            [torch.full((len(b), 1), i, dtype=images.dtype, device=images.device)
             for i, b in enumerate(boxes)]
        )  # fmt: skip
        flat = torch.cat([b.to(images.dtype) for b in boxes])
        rois = torch.cat([torch.cat([index, scale_boxes(flat, s)], dim=1) for s in scales])
        size = (self.crop_size, self.crop_size)
        return roi_align(images, rois, size, spatial_scale=1.0, sampling_ratio=2, aligned=True)

    @torch.no_grad()
    def forward(
        self,
        images: torch.Tensor,
        boxes: Sequence[torch.Tensor],
        crop_scales: Sequence[float] = (),
    ) -> torch.Tensor:
        """CLIP embeddings of boxes.

        Every box of every image at every scale is cropped by one RoIAlign call and encoded in
        batches of ``chunk_size`` crops (no loop over boxes, images or scales).

        Args:
            images: Tensor[B, 3, H, W], RGB in [0, 1].
            boxes: B tensors of shape [N_i, 4] (x1, y1, x2, y2) in pixels of ``images``.
            crop_scales: box scales to crop at instead of the teacher's ``crop_scales``
                (empty: the teacher's).

        Returns:
            Tensor[sum N_i, D], L2-normalised, in the order of ``boxes``.
        """
        num_boxes = sum(len(b) for b in boxes)
        if num_boxes == 0:
            return images.new_zeros((0, self._embed_dim()), dtype=torch.float32)
        scales = tuple(float(s) for s in crop_scales) or self.crop_scales
        crops = self._crops(images, boxes, scales)
        parts = []
        for start in range(0, crops.shape[0], self.chunk_size):
            chunk = (crops[start : start + self.chunk_size] - self.mean) / self.std
            parts.append(F.normalize(self.visual(chunk).float(), dim=-1))
        per_scale = torch.cat(parts).view(len(scales), num_boxes, -1)
        return F.normalize(per_scale.sum(dim=0), dim=-1)

    def _embed_dim(self) -> int:
        if self.embed_dim is not None:
            return int(self.embed_dim)
        proj = getattr(self.visual, "proj", None)
        if isinstance(proj, torch.Tensor):
            return proj.shape[1]
        return int(getattr(self.visual, "output_dim", 0))

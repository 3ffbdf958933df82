"""What every frozen CLIP image tower used as a detector backbone shares (F-VLM): the builder
names, the key of the map it hands to the head, the conversion of the detector's input to CLIP's
normalisation, and the freezing.

The towers themselves are :class:`~ovdet.core.clip_backbone.FrozenClipResNet` (open_clip's
``ModifiedResNet``) and :class:`~ovdet.core.clip_vit_backbone.FrozenClipViT` (open_clip's
``VisionTransformer``); nothing of a detection framework is imported here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ovdet.utils.errors import ConfigError

if TYPE_CHECKING:
    from ovdet.clip import ClipBackend

__all__ = [
    "CLIP_BACKBONE_NAME",
    "CLIP_BACKBONE_NAMES",
    "CLIP_FEATURES_KEY",
    "CLIP_STAGES",
    "CLIP_VIT_BACKBONE_NAME",
    "FrozenClipTower",
    "TOWER_KINDS",
    "TowerKind",
]

#: ``MODEL.BACKBONE.NAME`` of the CLIP ResNet backbone (detectron2's key: the builder's name).
CLIP_BACKBONE_NAME = "build_clip_resnet_fpn_backbone"
#: ``MODEL.BACKBONE.NAME`` of the CLIP ViT backbone.
CLIP_VIT_BACKBONE_NAME = "build_clip_vit_fpn_backbone"
#: Every CLIP backbone's builder name.
CLIP_BACKBONE_NAMES = (CLIP_BACKBONE_NAME, CLIP_VIT_BACKBONE_NAME)
#: The tower's output that carries its frozen map to the head (not a detector level).
CLIP_FEATURES_KEY = "clip"
#: The stages a tower gives the FPN, at strides 4, 8, 16, 32.
CLIP_STAGES = ("res2", "res3", "res4", "res5")


@dataclass(frozen=True)
class TowerKind:
    """A kind of open_clip image tower that a CLIP backbone runs.

    Attributes:
        builder: the backbone's ``MODEL.BACKBONE.NAME``.
        name: ``"ResNet"`` or ``"ViT"``.
        described: the open_clip class and an example model, for error messages.
        parts: the attributes a tower of this kind must have.
        marker: an attribute that tells a tower of this kind, complete or not (the hint to
            the right builder).
    """

    builder: str
    name: str
    described: str
    parts: tuple[str, ...]
    marker: str


#: The kinds of tower the CLIP backbones run, by builder.
TOWER_KINDS = {
    k.builder: k
    for k in (
        TowerKind(CLIP_BACKBONE_NAME, "ResNet", "open_clip's ModifiedResNet, e.g. RN50",
                  ("stem", "layer4", "attnpool"), "attnpool"),
        TowerKind(CLIP_VIT_BACKBONE_NAME, "ViT", "open_clip's VisionTransformer, e.g. ViT-B-16",
                  ("conv1", "class_embedding", "positional_embedding", "ln_pre", "transformer",
                   "ln_post", "proj"), "class_embedding"),
    )
}  # fmt: skip


class FrozenClipTower(nn.Module):
    """A CLIP image tower (``self.visual``), frozen, seen as a detector backbone.

    Its input is the detector's: pixels normalised by the detector's ``pixel_mean`` /
    ``pixel_std`` (0-255, in ``input_format``'s channel order, as ``MODEL.PIXEL_MEAN/STD`` and
    ``INPUT.FORMAT``), which :meth:`clip_input` turns into CLIP's own normalisation; so the
    detector's settings need not change, in either engine.

    A subclass names its builder (``builder``, a key of :data:`TOWER_KINDS`: the tower's parts
    are checked, :meth:`check_tower`, with what it may add) and sets, in :meth:`describe_tower`,
    besides its ``forward`` and :meth:`embed_regions`:

    * ``out_channels``, ``strides``: dicts over :data:`CLIP_STAGES` (strides 4, 8, 16, 32);
    * ``clip_channels``, ``clip_stride``: the map under :data:`CLIP_FEATURES_KEY`;
    * ``embed_dim``: CLIP's embedding size; ``size_divisibility``: what input sizes must be
      multiples of.

    Args:
        visual: open_clip's image tower.
        clip_mean, clip_std: CLIP's normalisation of RGB in [0, 1].
        pixel_mean, pixel_std: the detector's normalisation (0-255, ``input_format`` order).
        input_format: ``"RGB"`` or ``"BGR"``.
    """

    builder: str
    out_channels: dict[str, int]
    strides: dict[str, int]
    clip_channels: int
    clip_stride: int
    embed_dim: int
    size_divisibility: int

    def __init__(
        self,
        visual: nn.Module,
        clip_mean: Sequence[float],
        clip_std: Sequence[float],
        pixel_mean: Sequence[float] = (0.0, 0.0, 0.0),
        pixel_std: Sequence[float] = (255.0, 255.0, 255.0),
        input_format: str = "RGB",
    ) -> None:
        super().__init__()
        self.check_tower(visual)
        if input_format not in ("RGB", "BGR"):
            raise ConfigError(f"INPUT.FORMAT must be RGB or BGR, got {input_format!r}")
        self.visual = visual.eval().requires_grad_(False)
        size = visual.image_size
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        # detector input x -> CLIP input: x * scale + shift, per channel of the detector's order
        mean, std = torch.tensor(pixel_mean, dtype=torch.float32), torch.tensor(pixel_std)
        cmean, cstd = torch.tensor(clip_mean), torch.tensor(clip_std)
        if input_format == "BGR":
            cmean, cstd = cmean.flip(0), cstd.flip(0)
        scale, shift = std / 255 / cstd, (mean / 255 - cmean) / cstd
        self.flip_channels = input_format == "BGR"
        self.register_buffer("scale", scale.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", shift.view(1, 3, 1, 1), persistent=False)
        self.describe_tower(visual)

    @classmethod
    def check_tower(cls, visual: nn.Module) -> None:
        """Raise a one-line ConfigError if ``visual`` is not a tower of this kind (naming the
        builder of the kind it is, where it is one)."""
        kind = TOWER_KINDS[cls.builder]
        if all(hasattr(visual, n) for n in kind.parts):
            return
        others = (k for k in TOWER_KINDS.values() if k is not kind)
        other = next((k for k in others if hasattr(visual, k.marker)), None)
        hint = f"; for a {other.name} CLIP use MODEL.BACKBONE.NAME {other.builder}" if other else ""
        raise ConfigError(
            f"{kind.builder} needs a {kind.name} CLIP ({kind.described}), got an image tower of "
            f"type {type(visual).__name__}{hint}"
        )

    def describe_tower(self, visual: nn.Module) -> None:
        """Set the attributes a subclass must set (see the class docstring) from ``visual``."""
        raise NotImplementedError

    @classmethod
    def from_clip(cls, clip: ClipBackend, cfg) -> FrozenClipTower:
        """From a loaded open_clip CLIP and the detector's
        ``MODEL.PIXEL_MEAN/STD``, ``INPUT.FORMAT``."""
        return cls(
            clip.image_encoder,
            clip.mean,
            clip.std,
            cfg.MODEL.PIXEL_MEAN,
            cfg.MODEL.PIXEL_STD,
            cfg.INPUT.FORMAT,
        )

    def train(self, mode: bool = True) -> FrozenClipTower:
        super().train(mode)
        self.visual.eval()  # frozen: batch norms keep CLIP's statistics, no dropout
        return self

    def clip_input(self, x: torch.Tensor) -> torch.Tensor:
        """Detector-normalised Tensor[B, 3, H, W] -> CLIP-normalised, RGB."""
        x = x * self.scale.to(x) + self.shift.to(x)
        return x.flip(1) if self.flip_channels else x

    @torch.no_grad()
    def region_embeddings(
        self, clip_map: torch.Tensor, boxes: Sequence[torch.Tensor]
    ) -> torch.Tensor:
        """CLIP embeddings of regions from the tower's frozen map, without crops.

        Args:
            clip_map: Tensor[B, clip_channels, H / clip_stride, W / clip_stride], ``forward``'s
                :data:`CLIP_FEATURES_KEY`.
            boxes: B tensors [N_i, 4] (x1, y1, x2, y2) in input pixels.

        Returns:
            Tensor[sum N_i, D], L2-normalised, float32.
        """
        rois = [b.to(clip_map.dtype) for b in boxes]
        if sum(len(b) for b in rois) == 0:
            return clip_map.new_zeros(0, self.embed_dim, dtype=torch.float32)
        return F.normalize(self.embed_regions(clip_map, rois).float(), dim=-1)

    def embed_regions(self, clip_map: torch.Tensor, rois: list[torch.Tensor]) -> torch.Tensor:
        """The tower's own region embedding (:meth:`region_embeddings`, at least one box):
        Tensor[sum N_i, D], not normalised."""
        raise NotImplementedError

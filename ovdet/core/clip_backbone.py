"""A frozen CLIP ResNet image tower as the detector's backbone, and its own pooling head as the
region embedder (F-VLM: "Open-Vocabulary Object Detection upon Frozen Vision and Language
Models", ICLR 2023).

The tower's stages give the detector its feature maps (res2-res5, strides 4-32; an FPN or the
detector heads are trained on them, the tower is not). At inference each region is RoI-pooled
from the frozen res5 map to the size of CLIP's attention pool (``image_size / 32``) and passed
through that pool: a CLIP image embedding of the region, without cropping the image. For a box
covering an ``image_size`` square image it is CLIP's own image embedding of that image. The
head joins its scores with the detector's as CLIP rescoring does
(``MODEL.OVDET.CLIP_RESCORING.SOURCE backbone``; :mod:`ovdet.core.score_fusion`).

Both engines wrap :class:`FrozenClipResNet` with their own FPN (``MODEL.BACKBONE.NAME
build_clip_resnet_fpn_backbone``); nothing of a detection framework is imported here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align

from ovdet.utils.errors import ConfigError

if TYPE_CHECKING:
    from ovdet.clip import ClipBackend

__all__ = ["CLIP_BACKBONE_NAME", "CLIP_FEATURES_KEY", "FrozenClipResNet", "load_clip_backbone"]

#: ``MODEL.BACKBONE.NAME`` of the CLIP backbone (detectron2's key: the backbone builder's name).
CLIP_BACKBONE_NAME = "build_clip_resnet_fpn_backbone"
#: The backbone output that carries the frozen res5 map to the head (not a detector level).
CLIP_FEATURES_KEY = "clip"

_STAGES = ("res2", "res3", "res4", "res5")


class FrozenClipResNet(nn.Module):
    """An open_clip ``ModifiedResNet`` image tower, frozen, seen as a detector backbone.

    Its input is the detector's: pixels normalised by the detector's ``pixel_mean`` /
    ``pixel_std`` (0-255, in ``input_format``'s channel order, as ``MODEL.PIXEL_MEAN/STD`` and
    ``INPUT.FORMAT``), which it turns into CLIP's own normalisation first; so the detector's
    settings need not change, in either engine.

    Args:
        visual: open_clip's ``ModifiedResNet`` (``stem``, ``layer1``-``layer4``, ``attnpool``).
        clip_mean, clip_std: CLIP's normalisation of RGB in [0, 1].
        pixel_mean, pixel_std: the detector's normalisation (0-255, ``input_format`` order).
        input_format: ``"RGB"`` or ``"BGR"``.
    """

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
        if not all(hasattr(visual, n) for n in ("stem", "layer4", "attnpool")):
            raise ConfigError(
                f"the CLIP backbone needs a ResNet CLIP (open_clip's ModifiedResNet, e.g. RN50), "
                f"got an image tower of type {type(visual).__name__}"
            )
        if input_format not in ("RGB", "BGR"):
            raise ConfigError(f"INPUT.FORMAT must be RGB or BGR, got {input_format!r}")
        self.visual = visual.eval().requires_grad_(False)
        size = visual.image_size
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.pool_size = self.image_size // 32
        self.embed_dim = int(visual.attnpool.c_proj.out_features)
        width = visual.layer1[0].conv1.in_channels  # the stem's output channels
        self.out_channels = {s: width * 4 * 2**i for i, s in enumerate(_STAGES)}
        self.strides = {s: 4 * 2**i for i, s in enumerate(_STAGES)}
        # detector input x -> CLIP input: x * scale + shift, per channel of the detector's order
        mean, std = torch.tensor(pixel_mean, dtype=torch.float32), torch.tensor(pixel_std)
        cmean, cstd = torch.tensor(clip_mean), torch.tensor(clip_std)
        if input_format == "BGR":
            cmean, cstd = cmean.flip(0), cstd.flip(0)
        scale, shift = std / 255 / cstd, (mean / 255 - cmean) / cstd
        self.flip_channels = input_format == "BGR"
        self.register_buffer("scale", scale.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", shift.view(1, 3, 1, 1), persistent=False)

    @classmethod
    def from_clip(cls, clip: ClipBackend, cfg) -> FrozenClipResNet:
        """From a loaded open_clip CLIP and the detector's ``MODEL.PIXEL_MEAN/STD``,
        ``INPUT.FORMAT``."""
        return cls(
            clip.image_encoder,
            clip.mean,
            clip.std,
            cfg.MODEL.PIXEL_MEAN,
            cfg.MODEL.PIXEL_STD,
            cfg.INPUT.FORMAT,
        )

    def train(self, mode: bool = True) -> FrozenClipResNet:
        super().train(mode)
        self.visual.eval()  # frozen: batch norms keep CLIP's statistics
        return self

    def clip_input(self, x: torch.Tensor) -> torch.Tensor:
        """Detector-normalised Tensor[B, 3, H, W] -> CLIP-normalised, RGB."""
        x = x * self.scale.to(x) + self.shift.to(x)
        return x.flip(1) if self.flip_channels else x

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Tensor[B, 3, H, W] (detector-normalised) -> ``res2``..``res5``: Tensor[B, C_s,
        H / stride_s, W / stride_s] (channels :attr:`out_channels`, strides 4, 8, 16, 32)."""
        v = self.visual
        x = v.stem(self.clip_input(x).to(v.layer1[0].conv1.weight.dtype))
        out = {}
        for name, layer in zip(_STAGES, (v.layer1, v.layer2, v.layer3, v.layer4)):
            x = layer(x)
            out[name] = x
        return out

    @torch.no_grad()
    def region_embeddings(self, res5: torch.Tensor, boxes: Sequence[torch.Tensor]) -> torch.Tensor:
        """CLIP embeddings of regions from the frozen res5 map, through CLIP's attention pool.

        Args:
            res5: Tensor[B, C, H / 32, W / 32], :meth:`forward`'s ``res5``.
            boxes: B tensors [N_i, 4] (x1, y1, x2, y2) in input pixels.

        Returns:
            Tensor[sum N_i, D], L2-normalised, float32.
        """
        rois = [b.to(res5.dtype) for b in boxes]
        if sum(len(b) for b in rois) == 0:
            return res5.new_zeros(0, self.embed_dim, dtype=torch.float32)
        # sampling_ratio 0 (adaptive): a region of one res5 cell per output cell samples it once,
        # at its centre, so a whole-image box reads the map exactly as CLIP does.
        pooled = roi_align(
            res5, rois, self.pool_size, spatial_scale=1 / 32, sampling_ratio=0, aligned=True
        )
        return F.normalize(self._attention_pool(pooled).float(), dim=-1)

    def _attention_pool(self, x: torch.Tensor) -> torch.Tensor:
        """CLIP's attention pool (open_clip's ``AttentionPool2d``) of Tensor[N, C, S, S] ->
        Tensor[N, D], with only the output it keeps computed: the mean token's query.

        open_clip's pool attends from every token and keeps the first (the mean token's); its
        keys and values are needed, the other queries and output projections are not (they
        are about 40% of its work at RN50's 7 x 7). The result is the same (one softmax row
        of the same attention)."""
        pool = self.visual.attnpool
        x = x.flatten(2).permute(2, 0, 1)  # (S * S) x N x C
        x = torch.cat([x.mean(dim=0, keepdim=True), x], dim=0)
        x = x + pool.positional_embedding[:, None, :].to(x.dtype)
        out, _ = F.multi_head_attention_forward(
            query=x[:1], key=x, value=x, embed_dim_to_check=x.shape[-1],
            num_heads=pool.num_heads, q_proj_weight=pool.q_proj.weight,
            k_proj_weight=pool.k_proj.weight, v_proj_weight=pool.v_proj.weight,
            in_proj_weight=None,
            in_proj_bias=torch.cat([pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias]),
            bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0.0,
            out_proj_weight=pool.c_proj.weight, out_proj_bias=pool.c_proj.bias,
            use_separate_proj_weight=True, training=False, need_weights=False,
        )  # fmt: skip
        return out[0]


def load_clip_backbone(cfg) -> FrozenClipResNet:
    """The frozen CLIP tower of ``MODEL.OVDET.CLIP`` (the same CLIP as the text embeddings), for
    either engine's ``build_clip_resnet_fpn_backbone``.

    Raises:
        ConfigError: a CLIP whose image tower is not a ResNet (ViT CLIPs are not supported).
    """
    from ovdet.clip import load_clip

    return FrozenClipResNet.from_clip(load_clip(cfg.MODEL.OVDET.CLIP), cfg)

"""A frozen CLIP ViT image tower as the detector's backbone (F-VLM with a ViT CLIP), with dense
CLIP embeddings of its patch tokens as the region embedder.

**Stages.** The tower runs at the detector's image size: open_clip's patch embedding, class
token and ``ln_pre``, with the positional embedding of the patch grid bilinearly resized to the
input's grid (left as it is at CLIP's own size), then its blocks. A ViT has one scale (stride
P, the patch size), so the FPN's four stages are taken at four depths and resized without
parameters, after ViTDet's simple feature pyramid (Li et al., ECCV 2022, which builds every
level from the last map with trained (de)convolutions): with L blocks, the patch tokens after
``L // 4``, ``L // 2``, ``3 L // 4`` and ``L - 1`` blocks are reshaped to maps Tensor[B, width,
H / P, W / P] and bilinearly resized to strides 4, 8, 16 and 32 (``res2``..``res5``; a factor-2
reduction is then a 2 x 2 average). The FPN on them is trained, the tower is not.

**Region embeddings without crops.** A ViT CLIP has no pooling head over a map (its image
embedding is the class token's), so regions are embedded from dense CLIP embeddings of the
patch tokens, as MaskCLIP (Zhou et al., ECCV 2022) and CLIPSelf (Wu et al., ICLR 2024) take
them: the last block is run with each token attending only to itself, which leaves its value
path (``ln_1``, the value and output projections, the residual and the MLP), then ``ln_post``
and ``proj``; a region's embedding is the RoIAlign average of that dense map over the box,
L2-normalised. The map the head receives (:data:`CLIP_FEATURES_KEY`) is the patch tokens before
the last block, so training does not pay for the dense path. Unlike a ResNet CLIP's, a
whole-image box is *not* CLIP's own image embedding of the image.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align

from ovdet.core.clip_tower import (
    CLIP_FEATURES_KEY,
    CLIP_STAGES,
    CLIP_VIT_BACKBONE_NAME,
    FrozenClipTower,
)
from ovdet.utils.errors import ConfigError

__all__ = ["FrozenClipViT"]


class FrozenClipViT(FrozenClipTower):
    """An open_clip ``VisionTransformer`` image tower, frozen, seen as a detector backbone.

    Its input is the detector's (:class:`~ovdet.core.clip_tower.FrozenClipTower`); H and W must
    be multiples of the patch size P (``size_divisibility`` is lcm(32, P), which both engines
    pad to).

    Its arguments are :class:`~ovdet.core.clip_tower.FrozenClipTower`'s, ``visual`` open_clip's
    ``VisionTransformer`` (standard blocks, class-token or average pooling; not an attentional
    pooler).
    """

    builder = CLIP_VIT_BACKBONE_NAME

    @classmethod
    def check_tower(cls, visual: nn.Module) -> None:
        """One-line errors for an image tower this class cannot run: the base class's, then
        an attentional pooler or non-standard attention blocks."""
        super().check_tower(visual)
        if getattr(visual, "attn_pool", None) is not None:
            raise ConfigError(
                f"{CLIP_VIT_BACKBONE_NAME} needs a ViT CLIP that pools its tokens itself (class "
                "token or mean), not with an attentional pooler (CoCa)"
            )
        for block in visual.transformer.resblocks:
            attn = getattr(block, "attn", None)
            if not isinstance(attn, nn.MultiheadAttention) or attn.in_proj_weight is None:
                raise ConfigError(
                    f"{CLIP_VIT_BACKBONE_NAME} needs a ViT CLIP with standard attention blocks "
                    f"(one nn.MultiheadAttention each), got {type(block).__name__}"
                )

    def describe_tower(self, visual: nn.Module) -> None:
        self.patch_size = int(visual.conv1.stride[0])
        self.grid_size = tuple(int(g) for g in visual.grid_size)
        width = int(visual.conv1.out_channels)
        self.embed_dim = int(visual.proj.shape[1]) if visual.proj is not None else width
        blocks = len(visual.transformer.resblocks)
        #: blocks run before each stage's tokens are taken: L // 4, L // 2, 3 L // 4, L - 1
        self.stage_depths = dict(zip(CLIP_STAGES, (blocks // 4, blocks // 2, 3 * blocks // 4,
                                                  blocks - 1)))  # fmt: skip
        self.out_channels = {s: width for s in CLIP_STAGES}
        self.strides = {s: 4 * 2**i for i, s in enumerate(CLIP_STAGES)}
        self.clip_channels, self.clip_stride = width, self.patch_size
        self.size_divisibility = math.lcm(32, self.patch_size)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Tensor[B, 3, H, W] (detector-normalised; H, W multiples of P) -> ``res2``..``res5``:
        Tensor[B, width, ceil(H / s), ceil(W / s)] at strides s = 4, 8, 16, 32, and
        :data:`CLIP_FEATURES_KEY`: the patch tokens before the last block, Tensor[B, width,
        H / P, W / P], for :meth:`region_embeddings`."""
        tokens = self.patch_tokens(x)
        height, width = x.shape[-2:]
        out = {}
        for stage, stride in self.strides.items():
            size = (-(-height // stride), -(-width // stride))
            out[stage] = F.interpolate(
                tokens[self.stage_depths[stage]], size=size, mode="bilinear", align_corners=False
            )
        out[CLIP_FEATURES_KEY] = tokens[len(self.visual.transformer.resblocks) - 1]
        return out

    @torch.no_grad()
    def patch_tokens(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        """The patch tokens after the blocks each stage needs.

        Args:
            x: Tensor[B, 3, H, W], detector-normalised, H and W multiples of P.

        Returns:
            {number of blocks run: Tensor[B, width, H / P, W / P]} for each of
            :attr:`stage_depths` (0: after ``ln_pre``); the class token is left out.
        """
        v = self.visual
        height, width = x.shape[-2:]
        if not torch.jit.is_tracing() and (height % self.patch_size or width % self.patch_size):
            raise ValueError(
                f"the CLIP ViT backbone needs image sides that are multiples of its patch size "
                f"{self.patch_size}, got {height} x {width}"
            )
        x = v.conv1(self.clip_input(x).to(v.conv1.weight.dtype))  # B x width x h x w
        grid = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)
        cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self._positional_embedding(grid).to(x.dtype)
        x = v.ln_pre(v.patch_dropout(x))
        wanted = set(self.stage_depths.values())
        out = {}
        for depth in range(max(wanted) + 1):
            if depth in wanted:
                out[depth] = x[:, 1:].transpose(1, 2).unflatten(2, grid)
            if depth < max(wanted):
                x = _run_block(v.transformer.resblocks[depth], x)
        return out

    def _positional_embedding(self, grid: tuple[int, int]) -> torch.Tensor:
        """CLIP's positional embedding for a patch grid (h, w): Tensor[1 + h * w, width], the
        class token's as it is and the patches' bilinearly resized from CLIP's own grid (at that
        grid, unchanged)."""
        pos = self.visual.positional_embedding
        patches = pos[1:].reshape(*self.grid_size, -1).permute(2, 0, 1)[None]
        patches = F.interpolate(patches, size=grid, mode="bilinear", align_corners=False)
        return torch.cat([pos[:1], patches[0].flatten(1).t()])

    @torch.no_grad()
    def dense_embeddings(self, tokens: torch.Tensor) -> torch.Tensor:
        """Dense CLIP embeddings (MaskCLIP / CLIPSelf): the last block with each token attending
        only to itself (its value path), then ``ln_post`` and ``proj``, token by token.

        Args:
            tokens: Tensor[B, width, h, w], the patch tokens before the last block
                (:meth:`forward`'s :data:`CLIP_FEATURES_KEY`).

        Returns:
            Tensor[B, D, h, w], not normalised.
        """
        v = self.visual
        block = v.transformer.resblocks[-1]
        x = tokens.flatten(2).transpose(1, 2)  # B x (h * w) x width
        # a token attending only to itself takes its own value: softmax of one score is 1
        _, _, value = _qkv(block.attn, block.ln_1(x))
        x = x + block.ls_1(block.attn.out_proj(value))
        x = x + block.ls_2(block.mlp(block.ln_2(x)))
        x = v.ln_post(x)
        if v.proj is not None:
            x = x @ v.proj
        return x.transpose(1, 2).unflatten(2, tokens.shape[-2:])

    def embed_regions(self, tokens: torch.Tensor, rois: list[torch.Tensor]) -> torch.Tensor:
        """The RoIAlign average of :meth:`dense_embeddings` of the patch tokens before the last
        block (Tensor[B, width, H / P, W / P]) over each box: Tensor[sum N_i, D]."""
        # sampling_ratio 0 (adaptive): about one sample per token the box covers, each at a
        # token's centre where the box lies on the grid, so a box reads the mean of its tokens.
        pooled = roi_align(
            self.dense_embeddings(tokens), rois, 1, spatial_scale=1 / self.patch_size,
            sampling_ratio=0, aligned=True,
        )  # fmt: skip
        return pooled.flatten(1)


def _qkv(attn: nn.MultiheadAttention, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The query, key and value projections of Tensor[B, L, C]: three Tensor[B, L, C]."""
    return F.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)


def _run_block(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """open_clip's ``ResidualAttentionBlock`` on Tensor[B, L, C], its attention written out:
    ``nn.MultiheadAttention`` fixes the number of tokens in a traced (ONNX) graph, and its fused
    inference kernel has no ONNX form. The same results (tests/core/test_clip_vit_backbone.py).
    """
    attn = block.attn
    q, k, v = (
        t.unflatten(-1, (attn.num_heads, -1)).transpose(1, 2) for t in _qkv(attn, block.ln_1(x))
    )  # B x heads x L x head_dim
    y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)
    x = x + block.ls_1(attn.out_proj(y))
    return x + block.ls_2(block.mlp(block.ln_2(x)))

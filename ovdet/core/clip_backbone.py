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
build_clip_resnet_fpn_backbone``), as they wrap the ViT tower
(:class:`~ovdet.core.clip_vit_backbone.FrozenClipViT`, ``build_clip_vit_fpn_backbone``);
:func:`load_clip_backbone` builds the tower a config names. Nothing of a detection framework is
imported here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align

from ovdet.core.clip_tower import (
    CLIP_BACKBONE_NAME,
    CLIP_BACKBONE_NAMES,
    CLIP_FEATURES_KEY,
    CLIP_STAGES,
    CLIP_VIT_BACKBONE_NAME,
    FrozenClipTower,
)
from ovdet.core.clip_vit_backbone import FrozenClipViT
from ovdet.utils.errors import ConfigError

__all__ = [
    "CLIP_BACKBONE_NAME",
    "CLIP_BACKBONE_NAMES",
    "CLIP_FEATURES_KEY",
    "CLIP_VIT_BACKBONE_NAME",
    "FrozenClipResNet",
    "FrozenClipTower",
    "load_clip_backbone",
]


#: Up to this many tokens (the map's and their mean), the attention pool forms keys and values.
_FEW_TOKENS = 4


class FrozenClipResNet(FrozenClipTower):
    """An open_clip ``ModifiedResNet`` image tower, frozen, seen as a detector backbone; the map
    it hands to the head (:data:`CLIP_FEATURES_KEY`) is its res5.

    Its input is the detector's; its arguments are
    :class:`~ovdet.core.clip_tower.FrozenClipTower`'s, ``visual`` open_clip's ``ModifiedResNet``
    (``stem``, ``layer1``-``layer4``, ``attnpool``).
    """

    builder = CLIP_BACKBONE_NAME

    def describe_tower(self, visual: nn.Module) -> None:
        self.pool_size = self.image_size // 32
        self.embed_dim = int(visual.attnpool.c_proj.out_features)
        width = visual.layer1[0].conv1.in_channels  # the stem's output channels
        self.out_channels = {s: width * 4 * 2**i for i, s in enumerate(CLIP_STAGES)}
        self.strides = {s: 4 * 2**i for i, s in enumerate(CLIP_STAGES)}
        self.clip_channels, self.clip_stride = self.out_channels["res5"], 32
        self.size_divisibility = 32

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Tensor[B, 3, H, W] (detector-normalised) -> ``res2``..``res5``: Tensor[B, C_s,
        H / stride_s, W / stride_s] (channels :attr:`out_channels`, strides 4, 8, 16, 32), and
        :data:`CLIP_FEATURES_KEY`: the same res5 map, for :meth:`region_embeddings`."""
        v = self.visual
        x = v.stem(self.clip_input(x).to(v.layer1[0].conv1.weight.dtype))
        out = {}
        for name, layer in zip(CLIP_STAGES, (v.layer1, v.layer2, v.layer3, v.layer4)):
            x = layer(x)
            out[name] = x
        out[CLIP_FEATURES_KEY] = x
        return out

    def embed_regions(self, res5: torch.Tensor, rois: list[torch.Tensor]) -> torch.Tensor:
        """Regions RoI-pooled from the frozen res5 map (Tensor[B, C, H / 32, W / 32]) to the
        attention pool's size, through CLIP's attention pool: Tensor[sum N_i, D]."""
        # sampling_ratio 0 (adaptive): a region of one res5 cell per output cell samples it once,
        # at its centre, so a whole-image box reads the map exactly as CLIP does.
        pooled = roi_align(
            res5, rois, self.pool_size, spatial_scale=1 / 32, sampling_ratio=0, aligned=True
        )
        return self._attention_pool(pooled)

    def _attention_pool(self, x: torch.Tensor) -> torch.Tensor:
        """CLIP's attention pool (open_clip's ``AttentionPool2d``) of Tensor[N, C, S, S] ->
        Tensor[N, D], with only the output it keeps computed: the mean token's query.

        open_clip's pool projects each of the ``T = S * S + 1`` tokens (the map's and their
        mean) to a query, a key and a value, and keeps the mean token's output. One query
        needs less: its score on a token ``z`` is ``q_h . (W_k,h z + b_k,h)`` per head ``h``,
        i.e. ``(W_k,h^T q_h) . z`` plus a term the same for every token (which the softmax
        drops), and its output ``sum_i a_hi (W_v,h z_i + b_v,h)`` is ``W_v,h (sum_i a_hi z_i) +
        b_v,h`` (the weights sum to 1). So no key or value is formed: about three ``C x C``
        products per region instead of ``2 T + 1`` (RN50: T = 50, C = 2048; 7 x less time on
        a CPU). For a pool of a few tokens (a 32 px CLIP's 1 x 1 map) the per-head products
        cost more than forming the keys and values, which :meth:`_attention_pool_few_tokens`
        does. Either is open_clip's pool up to float rounding."""
        if x.shape[-2] * x.shape[-1] + 1 <= _FEW_TOKENS:
            return self._attention_pool_few_tokens(x)
        pool = self.visual.attnpool
        heads = pool.num_heads
        tokens = self._pool_tokens(x)  # N x T x C
        n, _, width = tokens.shape
        query = F.linear(tokens[:, 0], pool.q_proj.weight, pool.q_proj.bias)
        query = query.view(n, heads, -1).transpose(0, 1) * (width // heads) ** -0.5  # H x N x d
        key_of_query = torch.bmm(query, pool.k_proj.weight.view(heads, -1, width))  # H x N x C
        scores = torch.bmm(key_of_query.transpose(0, 1), tokens.transpose(1, 2))  # N x H x T
        mixed = torch.bmm(scores.softmax(dim=-1), tokens).transpose(0, 1)  # H x N x C
        out = torch.bmm(mixed, pool.v_proj.weight.view(heads, -1, width).transpose(1, 2))
        out = out.transpose(0, 1).reshape(n, width) + pool.v_proj.bias
        return F.linear(out, pool.c_proj.weight, pool.c_proj.bias)

    def _pool_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Tensor[N, C, S, S] -> the pool's tokens Tensor[N, S * S + 1, C]: the map's mean
        first, positional embeddings added."""
        pool = self.visual.attnpool
        tokens = x.flatten(2).transpose(1, 2)
        tokens = torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1)
        return tokens + pool.positional_embedding.to(tokens.dtype)

    def _attention_pool_few_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`_attention_pool` by forming every token's key and value (PyTorch's attention
        with the mean token's query only)."""
        pool = self.visual.attnpool
        tokens = self._pool_tokens(x).transpose(0, 1)  # T x N x C
        out, _ = F.multi_head_attention_forward(
            query=tokens[:1], key=tokens, value=tokens, embed_dim_to_check=tokens.shape[-1],
            num_heads=pool.num_heads, q_proj_weight=pool.q_proj.weight,
            k_proj_weight=pool.k_proj.weight, v_proj_weight=pool.v_proj.weight,
            in_proj_weight=None,
            in_proj_bias=torch.cat([pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias]),
            bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0.0,
            out_proj_weight=pool.c_proj.weight, out_proj_bias=pool.c_proj.bias,
            use_separate_proj_weight=True, training=False, need_weights=False,
        )  # fmt: skip
        return out[0]


def load_clip_backbone(cfg) -> FrozenClipTower:
    """The frozen CLIP tower of ``MODEL.OVDET.CLIP`` (the same CLIP as the text embeddings) that
    ``MODEL.BACKBONE.NAME`` names, for either engine's builder: :class:`FrozenClipResNet` for
    ``build_clip_resnet_fpn_backbone``, :class:`~ovdet.core.clip_vit_backbone.FrozenClipViT`
    for ``build_clip_vit_fpn_backbone``.

    Raises:
        ConfigError: another ``MODEL.BACKBONE.NAME``, or a CLIP whose image tower is not the
            kind the name says (a ViT CLIP for the ResNet builder, or the reverse).
    """
    from ovdet.clip import load_clip

    towers = {CLIP_BACKBONE_NAME: FrozenClipResNet, CLIP_VIT_BACKBONE_NAME: FrozenClipViT}
    name = cfg.MODEL.BACKBONE.NAME
    if name not in towers:
        raise ConfigError(f"MODEL.BACKBONE.NAME {name!r} is not one of {CLIP_BACKBONE_NAMES}")
    return towers[name].from_clip(load_clip(cfg.MODEL.OVDET.CLIP), cfg)

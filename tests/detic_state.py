"""A hand-made Detic R50-C4 state dict (Detic's key names, random weights) for tests that need
no Detic source: made from this engine's C4 model by the inverse of the converter's renaming."""

from __future__ import annotations

from functools import lru_cache

import torch

from ovdet.config import load_config
from ovdet.tv import build_model


def c4_model(*opts: str) -> torch.nn.Module:
    """The torchvision engine's C4 model of Detic's config, random init."""
    return build_model(
        load_config("ovcoco_detic_boxsup_R50_C4.yaml", ["MODEL.OVDET.EMBED_DIM", "512", *opts])
    )


def _detic_name(key: str) -> str:
    new = (
        key.replace("backbone.body.conv1.", "backbone.stem.conv1.")
        .replace("backbone.body.bn1.", "backbone.stem.conv1.norm.")
        .replace("roi_heads.box_head.res5.", "roi_heads.res5.")
        .replace("rpn.head.conv.0.0.", "proposal_generator.rpn_head.conv.")
        .replace("rpn.head.cls_logits.", "proposal_generator.rpn_head.objectness_logits.")
        .replace("rpn.head.bbox_pred.", "proposal_generator.rpn_head.anchor_deltas.")
        .replace("box_predictor.classifier.projection.", "box_predictor.cls_score.linear.")
    )
    for stage in (1, 2, 3):
        new = new.replace(f"backbone.body.layer{stage}.", f"backbone.res{stage + 1}.")
    for i in (1, 2, 3):
        new = new.replace(f".bn{i}.", f".conv{i}.norm.")
    return new.replace(".downsample.0.", ".shortcut.").replace(".downsample.1.", ".shortcut.norm.")


@lru_cache(maxsize=1)
def detic_layout_state() -> dict[str, torch.Tensor]:
    """Detic's names, the C4 model's initial weights with random batch-norm statistics and the
    residual branches' last batch norms at 0.3 (so that activations stay of unit scale through
    50 layers and the boxes are sensible), plus Detic's zero-shot matrix and class frequencies."""
    torch.manual_seed(0)
    state = {}
    for key, value in c4_model().state_dict().items():
        value = value.clone()
        if key.endswith("running_var"):
            value = torch.rand_like(value) * 0.5 + 0.75
        elif key.endswith("running_mean"):
            value = torch.randn_like(value) * 0.01
        elif key.endswith(("bn3.weight", "downsample.1.weight")):
            value.fill_(0.3)
        state[_detic_name(key)] = value
    state["roi_heads.box_predictor.cls_score.zs_weight"] = torch.randn(512, 81)
    state["roi_heads.box_predictor.freq_weight"] = torch.rand(80)
    return state

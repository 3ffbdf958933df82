"""Detic's OV-COCO checkpoints as checkpoints of this engine (``--from detic``).

Detic's OV-COCO models (``BoxSup_OVCOCO_CLIP_R50_1x`` and the ``Detic_OVCOCO_CLIP_R50_1x_*``
fine-tunings of its model zoo) are detectron2 R50-C4 Faster R-CNNs with a zero-shot classifier:
:func:`convert_detic_checkpoint` renames their weights to this engine's C4 architecture
(``configs/ovcoco_detic_boxsup_R50_C4.yaml``, written into the checkpoint). Other layouts of
Detic's repository (its CenterNet2 LVIS / ImageNet-21k models, Deformable-DETR) are refused
with one line saying what they are.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import torch

from ovdet.config import load_config
from ovdet.core.detic_keys import detic_head_key
from ovdet.core.masks import torchvision_mask_key
from ovdet.data.splits import OVCOCO_BASE
from ovdet.utils.errors import CheckpointError
from ovdet.utils.io import atomic_torch_save

__all__ = ["DETIC_C4_CONFIG", "convert_detic_checkpoint", "detic_to_torchvision"]

logger = logging.getLogger(__name__)

# The config of converted checkpoints: Detic's OV-COCO architecture and inference settings.
DETIC_C4_CONFIG = "ovcoco_detic_boxsup_R50_C4.yaml"
_EMBED_DIM = 512  # CLIP ViT-B/32, Detic's text encoder

# detectron2 ResNet names -> torchvision's (after "backbone.res{2,3,4}.N." / "res5.N.").
_BLOCK_RENAMES = (
    (re.compile(r"^conv(\d)\.norm\."), r"bn\1."),
    (re.compile(r"^conv(\d)\.weight$"), r"conv\1.weight"),
    (re.compile(r"^shortcut\.norm\."), "downsample.1."),
    (re.compile(r"^shortcut\.weight$"), "downsample.0.weight"),
)
_RPN_RENAMES = {
    "conv.": "conv.0.0.",
    "objectness_logits.": "cls_logits.",
    "anchor_deltas.": "bbox_pred.",
}


def _detic_weights(state: Any, source: str) -> dict[str, torch.Tensor]:
    """The model weights of a Detic (detectron2) checkpoint: ``state["model"]`` or ``state``."""
    weights = state.get("model", state) if isinstance(state, dict) else None
    if not isinstance(weights, dict) or not all(torch.is_tensor(v) for v in weights.values()):
        raise CheckpointError(f"{source} is not a Detic checkpoint (no dict of weights)")
    return dict(weights)


def _check_layout(weights: dict[str, torch.Tensor], source: str) -> None:
    """One line for layouts other than Detic's R50-C4 OV-COCO models."""
    keys = list(weights)
    if any("centernet" in k for k in keys) or any(".box_predictor.0." in k for k in keys):
        raise CheckpointError(
            f"{source} is a Detic CenterNet2 model (CenterNet proposals, cascade box heads: "
            "Detic's LVIS / ImageNet-21k models), which ovdet does not support yet; ovdet runs "
            "Detic's R50-C4 OV-COCO models"
        )
    if any(k.startswith(("detr.", "transformer.")) or ".class_embed." in k for k in keys):
        raise CheckpointError(
            f"{source} is a Deformable-DETR model, which ovdet does not support; ovdet runs "
            "Detic's R50-C4 OV-COCO models"
        )
    needed = (
        "backbone.res4.0.conv1.weight",
        "roi_heads.res5.0.conv1.weight",
        "roi_heads.box_predictor.cls_score.linear.weight",
    )
    missing = [k for k in needed if k not in weights]
    if missing:
        raise CheckpointError(
            f"{source} is not a Detic R50-C4 checkpoint (no {missing[0]}); ovdet converts "
            "Detic's OV-COCO models"
        )


def _block_key(rest: str) -> str:
    for pattern, replacement in _BLOCK_RENAMES:
        if pattern.match(rest):
            return pattern.sub(replacement, rest)
    raise KeyError(rest)


def detic_to_torchvision(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detic R50-C4 weights renamed to this engine's C4 model (buffers it does not keep
    dropped). The detectron2 plugin's C4 weights (``OpenVocabularyRes5ROIHeads``, the head
    under ``roi_heads.box_predictor.head.``) are renamed too.

    Raises:
        CheckpointError: a weight of no known place (another head or backbone).
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in weights.items():
        try:
            new = _torchvision_key(key)
        except KeyError:
            raise CheckpointError(
                f"unexpected weight {key!r} in a Detic R50-C4 checkpoint"
            ) from None
        if new is not None:
            out[new] = value
    return out


def _torchvision_key(key: str) -> str | None:
    if key.startswith("backbone.stem.conv1."):
        rest = key[len("backbone.stem.conv1.") :]
        return "backbone.body." + ("conv1.weight" if rest == "weight" else "bn1." + rest[5:])
    match = re.match(r"^backbone\.res([234])\.(\d+)\.(.+)$", key)
    if match:
        stage, block, rest = match.groups()
        return f"backbone.body.layer{int(stage) - 1}.{block}.{_block_key(rest)}"
    match = re.match(r"^roi_heads\.res5\.(\d+)\.(.+)$", key)
    if match:
        return f"roi_heads.box_head.res5.{match.group(1)}.{_block_key(match.group(2))}"
    if key.startswith("proposal_generator.rpn_head."):
        rest = key[len("proposal_generator.rpn_head.") :]
        for old, new in _RPN_RENAMES.items():
            if rest.startswith(old):
                return "rpn.head." + new + rest[len(old) :]
        raise KeyError(key)
    if key.startswith("roi_heads.box_predictor.head."):  # the detectron2 plugin's own head
        return "roi_heads.box_predictor." + key[len("roi_heads.box_predictor.head.") :]
    if key.startswith("roi_heads.box_predictor."):
        new = detic_head_key(key[len("roi_heads.box_predictor.") :])
        return None if new is None else "roi_heads.box_predictor." + new
    if key.startswith("roi_heads.mask_head."):
        return "roi_heads." + torchvision_mask_key(key[len("roi_heads.mask_head.") :])
    if key in ("pixel_mean", "pixel_std"):
        return None  # the config's MODEL.PIXEL_MEAN / STD
    raise KeyError(key)


def convert_detic_checkpoint(state: Any, output: str | Path, source: str) -> dict[str, Any]:
    """Write Detic's checkpoint ``state`` (already read) as a checkpoint of this engine.

    The checkpoint holds the weights, the config (:data:`DETIC_C4_CONFIG`, ``RESNETS.DEPTH``
    from the number of ``res4`` blocks), the training classes (OV-COCO's 48 base classes) and
    CLIP's embedding size (512, ViT-B/32).

    Returns:
        the written checkpoint.

    Raises:
        CheckpointError: one line, for a file that is no Detic R50-C4 model (saying what it is).
    """
    weights = _detic_weights(state, source)
    _check_layout(weights, source)
    res4_blocks = {k.split(".")[2] for k in weights if k.startswith("backbone.res4.")}
    depth = {6: 50, 23: 101}.get(len(res4_blocks))
    if depth is None:
        raise CheckpointError(
            f"{source}: a ResNet with {len(res4_blocks)} res4 blocks is not R50/R101"
        )
    projection = weights["roi_heads.box_predictor.cls_score.linear.weight"]
    if projection.shape[0] != _EMBED_DIM:
        raise CheckpointError(
            f"{source} projects into {projection.shape[0]} dimensions, not CLIP ViT-B/32's 512"
        )
    # Detic's checkpoints start from its own ImageNet weights: nothing to fetch here.
    cfg = load_config(
        DETIC_C4_CONFIG,
        ["MODEL.RESNETS.DEPTH", str(depth), "MODEL.OVDET.EMBED_DIM", str(_EMBED_DIM),
         "MODEL.BACKBONE.WEIGHTS", ""],
    )  # fmt: skip
    converted = {
        "model": detic_to_torchvision(weights),
        "config": cfg.dump(),
        "class_names": list(OVCOCO_BASE),
        "embed_dim": _EMBED_DIM,
        "iteration": int(state.get("iteration", 0)) if isinstance(state, dict) else 0,
    }
    atomic_torch_save(converted, Path(output))
    logger.info("Converted Detic R%d-C4 checkpoint %s to %s", depth, source, output)
    return converted

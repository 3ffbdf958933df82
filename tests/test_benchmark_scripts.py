"""The command lines of the scripts in benchmarks/ (their measurements live in BENCHMARKS.md)."""

from __future__ import annotations

import pytest
import torch

from benchmarks import bench_training, vild_image_ablation
from ovdet.config import load_config


def test_ablation_takes_config_overrides_after_its_options():
    # the form of the module's own example: `train --bench B --small --output O KEY VALUE ...`
    args = vild_image_ablation.parse_args(
        ["train", "--bench", "b", "--small", "--output", "o", "MODEL.OVDET.DISTILL.WEIGHT", "0.1"]
    )
    assert (args.what, args.small, args.overrides) == (
        "train", True, ["MODEL.OVDET.DISTILL.WEIGHT", "0.1"]
    )  # fmt: skip


def test_training_variants_on_the_reference_paths_are_the_same_model_on_torchvisions_paths():
    args = bench_training.parse_args(
        ["--config", "tiny", "--variants", "text", "text@reference", "online", "closed@reference",
         "--distill-proposals", "4", "8"]
    )  # fmt: skip
    names = bench_training.variant_names(args)
    assert names == ["text", "text@reference", "online:4", "online:8", "closed@reference"]
    with pytest.raises(SystemExit, match="only @reference"):
        bench_training.variant_names(bench_training.parse_args(["--variants", "text@fast"]))

    cfg = load_config("tiny", ["MODEL.OVDET.EMBED_DIM", "32"])
    fast = bench_training.build_variant(cfg, args, "text", 32)
    reference = bench_training.build_variant(cfg, args, "text@reference", 32)
    assert fast.backbone.channels_last and not reference.backbone.channels_last
    assert not reference.roi_heads.box_roi_pool.vectorised_backward
    for (name, a), (_, b) in zip(fast.state_dict().items(), reference.state_dict().items()):
        assert torch.equal(a, b), name  # the same weights (both built with seed 0)

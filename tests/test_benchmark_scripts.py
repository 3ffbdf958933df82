"""The command lines of the scripts in benchmarks/ (their measurements live in BENCHMARKS.md)."""

from __future__ import annotations

from benchmarks import vild_image_ablation


def test_ablation_takes_config_overrides_after_its_options():
    # the form of the module's own example: `train --bench B --small --output O KEY VALUE ...`
    args = vild_image_ablation.parse_args(
        ["train", "--bench", "b", "--small", "--output", "o", "MODEL.OVDET.DISTILL.WEIGHT", "0.1"]
    )
    assert (args.what, args.small, args.overrides) == (
        "train", True, ["MODEL.OVDET.DISTILL.WEIGHT", "0.1"]
    )  # fmt: skip

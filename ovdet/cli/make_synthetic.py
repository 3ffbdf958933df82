"""``ovdet-make-synthetic``: write the synthetic colour x shape open-vocabulary dataset.

Examples::

    python tools/make_synthetic.py --output datasets/synthetic --preset small
    python tools/make_synthetic.py --output datasets/synthetic --preset default --workers 2
    python tools/make_synthetic.py --output datasets/synthetic_nonovel --no-novel-captions

See :mod:`ovdet.data.synthetic` for the layout of what is written.
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import Sequence

from ovdet.cli.common import add_common_arguments, cli_entry, setup_logging
from ovdet.data.synthetic import PRESETS, generate_synthetic_dataset

__all__ = ["build_parser", "main"]

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser of ``ovdet-make-synthetic``."""
    parser = argparse.ArgumentParser(
        description="Generate the synthetic open-vocabulary detection dataset (64 colour x "
        "shape classes, 48 base / 16 novel) with COCO annotations and CLIP caption crops.",
    )
    parser.add_argument("--output", required=True, metavar="DIR", help="folder to write into")
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="small",
        help="dataset size: " + "; ".join(
            f"{k}: {v['num_train_images']} train / {v['num_val_images']} val images, "
            f"{v['num_caption_crops']} caption crops"
            for k, v in PRESETS.items()
        ) + " (default: small)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument(
        "--num-train-images", type=int, metavar="N", help="override the preset's train images"
    )
    parser.add_argument(
        "--num-val-images", type=int, metavar="N", help="override the preset's val images"
    )
    parser.add_argument(
        "--num-caption-crops",
        type=int,
        metavar="N",
        help="override the preset's number of CLIP pre-training crop-caption pairs",
    )
    parser.add_argument(
        "--num-val-caption-crops",
        type=int,
        metavar="N",
        help="override the preset's number of held-out labelled crops (0: none)",
    )
    parser.add_argument(
        "--image-size", type=int, default=128, help="side of the square images (default: 128)"
    )
    parser.add_argument(
        "--max-objects", type=int, default=5, help="most objects per image (default: 5)"
    )
    parser.add_argument(
        "--min-object-size",
        type=float,
        default=14.0,
        help="smallest nominal object diameter, pixels (default: 14; the benchmark's --small: 24)",
    )
    parser.add_argument(
        "--max-object-size",
        type=float,
        default=56.0,
        help="largest nominal object diameter, pixels, at most --image-size / 1.5 (default: 56; "
        "--small: 64)",
    )
    parser.add_argument(
        "--min-visible",
        type=float,
        default=0.6,
        help="least visible fraction of each object under occlusion, in (0, 1] (default: 0.6; "
        "--small: 0.8)",
    )
    parser.add_argument(
        "--no-novel-captions",
        action="store_true",
        help="keep novel classes out of the CLIP pre-training captions (ablation)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="rendering processes (default: 0, render in this process); output is identical",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an earlier dataset in --output"
    )
    add_common_arguments(parser)
    return parser


@cli_entry
def main(argv: Sequence[str] | None = None) -> int:
    """Run ``ovdet-make-synthetic``; returns the exit status."""
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    sizes = dict(PRESETS[args.preset])
    for key in sizes:
        value = getattr(args, key)
        if value is not None:
            sizes[key] = value
    start = time.monotonic()
    info = generate_synthetic_dataset(
        args.output,
        **sizes,
        image_size=args.image_size,
        max_objects=args.max_objects,
        min_object_size=args.min_object_size,
        max_object_size=args.max_object_size,
        min_visible=args.min_visible,
        novel_captions=not args.no_novel_captions,
        seed=args.seed,
        workers=args.workers,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    logger.info("synthetic dataset written to %s in %.1f s", info.root, time.monotonic() - start)
    return 0

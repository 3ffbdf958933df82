"""``ovdet-pretrain-clip``: stage 0, pre-train a CLIP with open_clip's trainer.

Examples::

    python tools/pretrain_clip.py --captions datasets/synthetic/captions/train.csv \\
        --output output/clip --epochs 8
    python tools/pretrain_clip.py --captions train.csv --output output/clip --device cuda \\
        -- --grad-clip-norm 1.0          # flags after "--" go to open_clip_train

The final checkpoint is ``OUTPUT/NAME/checkpoints/epoch_N.pt``; a self-contained model folder
(config + weights) is exported to ``OUTPUT/NAME/model`` unless ``--no-export``. The detector
then takes the CLIP spec ``local-dir:OUTPUT/NAME/model`` (or
``local-dir:CONFIG_DIR:OUTPUT/NAME/checkpoints/epoch_N.pt``).
"""

from __future__ import annotations

import argparse
import logging
from typing import Sequence

from ovdet.cli.common import add_common_arguments, cli_entry, log_to_file, setup_logging
from ovdet.clip.pretrain import export_clip_dir, pretrain_clip
from ovdet.utils.errors import DataError

__all__ = ["build_parser", "main"]

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser of ``ovdet-pretrain-clip``."""
    parser = argparse.ArgumentParser(
        description="Pre-train a CLIP on crop-caption pairs by running open_clip_train.",
    )
    parser.add_argument(
        "--captions",
        required=True,
        metavar="CSV",
        help="CSV of image paths and captions (paths relative to the CSV's folder), e.g. "
        "captions/train.csv of the synthetic dataset; columns and separator: see below",
    )
    parser.add_argument(
        "--image-column",
        default="filepath",
        help="the CSV column of image paths (default: filepath)",
    )
    parser.add_argument(
        "--caption-column", default="title", help="the CSV column of captions (default: title)"
    )
    parser.add_argument(
        "--csv-separator",
        default="\t",
        help="the CSV's column separator; '\\t' (a backslash and t) means a tab (default: tab)",
    )
    parser.add_argument(
        "--output", required=True, metavar="DIR", help="folder of training runs (--logs)"
    )
    parser.add_argument(
        "--model",
        default=None,
        help="open_clip model name, e.g. 'local-dir:clip/tiny' or 'ViT-B-32' "
        "(default: the repository's tiny CLIP)",
    )
    parser.add_argument("--epochs", type=int, default=10, help="training epochs (default: 10)")
    parser.add_argument("--batch-size", type=int, default=256, help="batch size (default: 256)")
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default: 2e-3)")
    parser.add_argument(
        "--warmup", type=int, default=100, help="learning-rate warm-up steps (default: 100)"
    )
    parser.add_argument("--wd", type=float, default=0.1, help="AdamW weight decay (default: 0.1)")
    parser.add_argument("--workers", type=int, default=0, help="data-loader workers (default: 0)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument(
        "--device", default="cpu", help="torch device: cpu, cuda, ... (default: cpu)"
    )
    parser.add_argument(
        "--precision",
        default=None,
        help="open_clip_train precision (default: fp32 on CPU, amp otherwise)",
    )
    parser.add_argument(
        "--name", default=None, help="run name, a new folder under --output (default: unique)"
    )
    parser.add_argument(
        "--keep-all-checkpoints",
        action="store_true",
        help="keep every epoch's checkpoint (default: only the latest)",
    )
    parser.add_argument(
        "--log-every",
        type=int,
        default=10,
        metavar="N",
        help="log the trainer's loss every N steps (default: 10)",
    )
    parser.add_argument(
        "--no-export",
        action="store_true",
        help="do not export the self-contained model folder OUTPUT/NAME/model",
    )
    add_common_arguments(parser)
    parser.add_argument(
        "trainer_args",
        nargs=argparse.REMAINDER,
        help="after '--': more open_clip_train flags, passed through unchanged",
    )
    return parser


@cli_entry
def main(argv: Sequence[str] | None = None) -> int:
    """Run ``ovdet-pretrain-clip``; returns the exit status."""
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    separator = "\t" if args.csv_separator in ("\\t", "tab") else args.csv_separator
    if len(separator) != 1:
        raise DataError(f"--csv-separator must be one character, got {args.csv_separator!r}")
    log_to_file(args.output)
    extra = list(args.trainer_args)
    if extra and extra[0] == "--":
        extra = extra[1:]
    checkpoint = pretrain_clip(
        args.captions,
        args.output,
        model=args.model,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup=args.warmup,
        weight_decay=args.wd,
        workers=args.workers,
        seed=args.seed,
        device=args.device,
        precision=args.precision,
        name=args.name,
        keep_all_checkpoints=args.keep_all_checkpoints,
        log_every_n_steps=args.log_every,
        image_column=args.image_column,
        caption_column=args.caption_column,
        separator=separator,
        extra_args=extra,
    )
    logger.info("checkpoint: %s", checkpoint)
    if not args.no_export:
        model_dir = export_clip_dir(
            checkpoint, checkpoint.parent.parent / "model", model=args.model
        )
        logger.info("CLIP spec for the detector: local-dir:%s", model_dir.resolve())
    return 0

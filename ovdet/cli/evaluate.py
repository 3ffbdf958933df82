"""``ovdet-evaluate``: base / novel / all box AP of COCO-format detections.

Examples::

    python tools/evaluate.py --gt instances_val2017.json --split ovcoco \\
        --results detections.json --output metrics.json
    python tools/evaluate.py --gt lvis_v1_val.json --results detections.json   # APr etc.
    python tools/evaluate.py --gt instances_val2017.json --split ovcoco \\
        --checkpoint model.pth --image-root val2017/

The table goes to stdout, the metrics (optionally) to a JSON file. Bad input ends the program
with one ``error: ...`` line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

from ovdet.errors import OvdetError
from ovdet.evaluation import evaluate_coco, evaluate_lvis, format_table, is_lvis
from ovdet.evaluation.ground_truth import load_ground_truth
from ovdet.utils.io import atomic_write_json, check_writable_dir

__all__ = ["build_parser", "main"]

logger = logging.getLogger(__name__)

EXIT_BAD_INPUT = 2


class _UsageError(Exception):
    """A bad combination of command-line arguments."""


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser of ``ovdet-evaluate``."""
    parser = argparse.ArgumentParser(
        description="Box AP of COCO-format detections on base, novel and all categories "
        "(OV-COCO), or AP / APr / APc / APf on LVIS.",
    )
    parser.add_argument(
        "--gt",
        required=True,
        metavar="JSON",
        help="ground-truth annotations in COCO or LVIS format",
    )
    parser.add_argument(
        "--split",
        default=None,
        metavar="SPEC",
        help="base/novel split: 'ovcoco', 'lvis' (rare categories are novel), or a JSON/YAML "
        "file with 'base' and 'novel' name lists (default: 'lvis' for LVIS annotations, "
        "otherwise every category is base)",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--results",
        metavar="JSON",
        help="detections: a COCO results file, a JSON list of "
        "{image_id, category_id, bbox: [x, y, w, h], score}",
    )
    source.add_argument(
        "--checkpoint",
        metavar="PATH",
        help="evaluate this model checkpoint: run it on the --gt images first",
    )
    parser.add_argument(
        "--image-root",
        metavar="DIR",
        help="folder of the --gt images' file_name paths (needed with --checkpoint)",
    )
    parser.add_argument(
        "--device",
        default=None,
        help="torch device for --checkpoint, e.g. cpu or cuda:0 (default: cuda if available)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=2,
        metavar="N",
        help="images per forward pass with --checkpoint (default: %(default)s)",
    )
    parser.add_argument(
        "--output",
        metavar="JSON",
        help="also write the metrics to this JSON file (written atomically)",
    )
    return parser


def _predict(args: argparse.Namespace) -> list[dict]:
    """Detections of ``--checkpoint`` on the ``--gt`` images."""
    if args.image_root is None:
        raise _UsageError("--checkpoint needs --image-root")
    if args.batch_size < 1:
        raise _UsageError("--batch-size must be at least 1")
    try:
        from ovdet.engine.inference import predict_coco_dataset
    except ImportError as e:
        raise _UsageError("--checkpoint evaluation is not available") from e
    device = args.device
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    return predict_coco_dataset(args.checkpoint, args.gt, args.image_root, device, args.batch_size)


def _is_main_process() -> bool:
    from ovdet.engine.distributed import is_main_process

    return is_main_process()


def _check_output(output: str) -> None:
    """Fail before any work if ``--output`` cannot be written (a folder, unwritable, full)."""
    path = Path(output)
    if path.is_dir():
        raise _UsageError(f"--output {output} is a folder; give a file name such as metrics.json")
    check_writable_dir(path.parent)


def _run(args: argparse.Namespace) -> None:
    if args.output:
        _check_output(args.output)
    dataset = load_ground_truth(args.gt)
    results = args.results if args.results is not None else _predict(args)
    if args.checkpoint is not None and not _is_main_process():
        return  # under torchrun: this process ran its share of the images; rank 0 reports
    if args.split == "lvis" or is_lvis(dataset):
        metrics = evaluate_lvis(dataset, results, split=args.split)
    else:
        metrics = evaluate_coco(dataset, results, split=args.split)
    print(format_table(metrics))
    if args.output:
        atomic_write_json(metrics, args.output)
        logger.info("Wrote metrics to %s", args.output)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 on success, 2 on bad input.
    """
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        _run(args)
    except (OvdetError, OSError, _UsageError) as e:
        message = str(e).replace("\n", " ")
        print(f"error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0

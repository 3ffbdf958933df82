"""``ovdet-train-net`` (``tools/train_net.py``): train or evaluate with detectron2 (``ovdet.d2``).

detectron2 must be installed by its official guide
(https://detectron2.readthedocs.io/en/latest/tutorials/install.html); ``--help`` works without it.
``--config-file`` takes a YAML file or the name of a shipped config (``d2/instant_test.yaml``).

Examples::

    # OV-COCO with ViLD on 8 GPUs (datasets under $DETECTRON2_DATASETS, see ovdet/d2/datasets.py)
    ovdet-train-net --config-file d2/ovcoco_vild_R50_FPN.yaml --num-gpus 8

    # Evaluate a trained model (base / novel / all AP50 on ovcoco_2017_val)
    ovdet-train-net --config-file d2/ovcoco_vild_R50_FPN.yaml --eval-only \\
        MODEL.WEIGHTS output/model_final.pth

    # Any COCO-format data with a split file {"base": [...], "novel": [...]}
    ovdet-train-net --config-file d2/ovcoco_vild_R50_FPN.yaml \\
        --register-dataset my_train data/train.json data/train_images split.json train \\
        --register-dataset my_val data/val.json data/val_images split.json eval \\
        DATASETS.TRAIN "('my_train',)" DATASETS.TEST "('my_val',)"

``python tools/train_net.py`` takes the same arguments. Config overrides (``KEY VALUE`` pairs)
come last, after every flag.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from ovdet.utils.allocator import keep_freed_memory
from ovdet.utils.errors import OvdetError

__all__ = ["build_parser", "main"]

D2_INSTALL_GUIDE = "https://detectron2.readthedocs.io/en/latest/tutorials/install.html"
EXIT_BAD_INPUT = 2


def _default_dist_url() -> str:
    # As detectron2's default_argument_parser: a port fixed per user, so that an orphan process
    # of an earlier multi-GPU run shows up as an occupied port.
    uid = os.getuid() if sys.platform != "win32" else 1
    return f"tcp://127.0.0.1:{2**15 + 2**14 + hash(uid) % 2**14}"


def build_parser() -> argparse.ArgumentParser:
    """detectron2's standard flags (config, resume, eval-only, multi-GPU/machine) plus ours.

    The flags are those of ``detectron2.engine.default_argument_parser``, declared here so that
    ``--help`` works where detectron2 is not installed.
    """
    parser = argparse.ArgumentParser(
        description="Train or evaluate an open-vocabulary detector with detectron2 (ovdet.d2).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument(
        "--config-file",
        default="",
        metavar="FILE",
        help="detectron2 YAML config: a file, or a shipped config's name (d2/instant_test.yaml)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="resume from the last checkpoint in OUTPUT_DIR (else start from MODEL.WEIGHTS)",
    )
    parser.add_argument("--eval-only", action="store_true", help="perform evaluation only")
    parser.add_argument("--num-gpus", type=int, default=1, help="number of GPUs *per machine*")
    parser.add_argument("--num-machines", type=int, default=1, help="total number of machines")
    parser.add_argument(
        "--machine-rank", type=int, default=0, help="the rank of this machine (unique per machine)"
    )
    parser.add_argument(
        "--dist-url",
        default=_default_dist_url(),
        help="initialization URL of the PyTorch distributed backend (default: %(default)s)",
    )
    parser.add_argument(
        "--register-dataset",
        nargs=5,
        action="append",
        metavar=("NAME", "JSON", "IMAGE_ROOT", "SPLIT", "ROLE"),
        help="register a COCO-format dataset before training (repeatable): its name, instances "
        "JSON, image folder, split ('ovcoco' or a JSON/YAML file with 'base' and 'novel' class "
        "names) and ROLE 'train' (base annotations only) or 'eval' (base and novel)",
    )
    parser.add_argument(
        "opts",
        default=None,
        nargs=argparse.REMAINDER,
        metavar="KEY VALUE",
        help="config overrides, e.g. SOLVER.MAX_ITER 1000 OUTPUT_DIR out/run1",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``ovdet-train-net``; returns the exit status (2: bad input or no detectron2)."""
    args = build_parser().parse_args(argv)
    keep_freed_memory()  # as every ovdet tool (ovdet.cli.common.cli_entry)
    try:
        from ovdet.d2.train_net import launch_run
    except ImportError as e:
        print(
            f"error: ovdet-train-net needs detectron2, which cannot be imported ({e}); install "
            f"it by its official guide: {D2_INSTALL_GUIDE}",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    try:
        launch_run(args)
    except OvdetError as e:
        message = str(e).replace("\n", " ")
        print(f"error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0

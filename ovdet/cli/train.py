"""``tools/train.py``: train a detector from a YAML config.

Examples::

    python tools/train.py --config configs/ovcoco_vild_R50_FPN.yaml
    python tools/train.py --config configs/tiny.yaml SOLVER.MAX_ITER 200 OUTPUT_DIR out/tiny
    torchrun --nproc_per_node 8 tools/train.py --config configs/ovcoco_vild_R50_FPN.yaml
    python tools/train.py --config configs/tiny.yaml --resume   # continue after a crash
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from ovdet.cli.common import add_common_arguments, cli_entry, log_to_file, setup_logging

logger = logging.getLogger("ovdet.train")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Train an open-vocabulary (or closed-set baseline) detector.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    p.add_argument("--config", required=True, help="YAML config (may chain with _BASE_)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from OUTPUT_DIR/last_checkpoint (weights, optimizer, schedule, RNG, data)",
    )
    p.add_argument("--eval-only", action="store_true", help="evaluate MODEL.WEIGHTS and exit")
    add_common_arguments(p)
    p.add_argument(
        "opts",
        nargs=argparse.REMAINDER,
        metavar="KEY VALUE",
        help="config overrides, e.g. SOLVER.BASE_LR 0.01 OUTPUT_DIR out/run1",
    )
    return p


@cli_entry
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    from ovdet.config import load_config
    from ovdet.tv.engine.trainer import Trainer, TrainingInterrupted

    cfg = load_config(args.config, args.opts)
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, the main process writes it
        log_to_file(cfg.OUTPUT_DIR)
    logger.info("config %s, output %s", args.config, cfg.OUTPUT_DIR)
    trainer = Trainer(cfg, resume=args.resume, progress=not args.no_progress)
    if args.eval_only:
        metrics = trainer.evaluate()
        print({k: round(v, 4) for k, v in metrics.items()})
        return 0
    try:
        trainer.train()
    except TrainingInterrupted as e:
        print(f"interrupted: {e}", file=sys.stderr)
        return 130
    logger.info("Done: %s", cfg.OUTPUT_DIR)
    return 0

"""``tools/precompute_clip_embeddings.py``: CLIP embeddings of fixed proposals, for offline
ViLD-image distillation (``MODEL.OVDET.DISTILL.MODE offline``).

Proposals come from a trained checkpoint's RPN (ViLD: a class-agnostic RPN trained on the base
boxes) or from a COCO-format results/proposals JSON (a list of ``image_id``, ``bbox``,
``score``).

Examples::

    python tools/precompute_clip_embeddings.py --config configs/ovcoco_vild_R50_FPN.yaml \\
        --checkpoint output/rpn/model_final.pt --output datasets/ovcoco_clip_embeddings.pt
    python tools/precompute_clip_embeddings.py --config configs/tiny.yaml \\
        --proposals proposals.json --num-proposals 16 --output clip_embeddings.pt
    python tools/train.py --config configs/ovcoco_vild_R50_FPN.yaml \\
        MODEL.OVDET.DISTILL.MODE offline \\
        MODEL.OVDET.DISTILL.EMBEDDINGS_FILE datasets/ovcoco_clip_embeddings.pt
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from ovdet.cli.common import add_common_arguments, cli_entry, log_to_file, setup_logging
from ovdet.utils.errors import ConfigError, DataError

__all__ = ["build_parser", "main"]

logger = logging.getLogger("ovdet.precompute")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Precompute CLIP embeddings of proposals for offline ViLD-image distillation.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    p.add_argument(
        "--config",
        required=True,
        help="the training config: its DATASETS.TRAIN_* images, MODEL.OVDET.CLIP and "
        "DISTILL.CROP_SCALES / CROP_SIZE are used",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="a checkpoint whose RPN proposes the boxes")
    source.add_argument(
        "--proposals", help="COCO-format JSON list of {image_id, bbox [x,y,w,h], score}"
    )
    p.add_argument("--output", required=True, help="the .pt file to write")
    p.add_argument(
        "--num-proposals",
        type=int,
        default=0,
        help="boxes per image (default: MODEL.OVDET.DISTILL.NUM_PROPOSALS)",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    add_common_arguments(p)
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    return p


@cli_entry
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    from ovdet.clip import load_clip
    from ovdet.config import load_config
    from ovdet.data.coco import load_coco_detection
    from ovdet.tv.engine.build import build_clip_teacher
    from ovdet.tv.engine.precompute import precompute_clip_embeddings, proposals_from_results
    from ovdet.utils.io import check_writable_dir

    cfg = load_config(args.config, args.opts)
    num = args.num_proposals or cfg.MODEL.OVDET.DISTILL.NUM_PROPOSALS
    if num < 1:
        raise ConfigError("--num-proposals must be at least 1")
    log_to_file(check_writable_dir(Path(args.output).resolve().parent))
    if not cfg.DATASETS.TRAIN_JSON:
        raise ConfigError("the config sets no DATASETS.TRAIN_JSON")
    records = load_coco_detection(
        cfg.DATASETS.TRAIN_JSON,
        cfg.DATASETS.TRAIN_IMAGES,
        split=cfg.DATASETS.SPLIT or None,
        filter_empty=False,
    )
    proposals, detector = None, None
    if args.proposals:
        path = Path(args.proposals)
        try:
            results = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DataError(f"cannot read proposals {path}: {e}") from None
        if not isinstance(results, list):
            raise DataError(f"proposals {path} must be a JSON list of detections")
        proposals = proposals_from_results(results, num)
    else:
        from ovdet.api import OVDetector

        detector = OVDetector.from_checkpoint(args.checkpoint, device=args.device)
    clip = load_clip(cfg.MODEL.OVDET.CLIP, args.device)
    summary = precompute_clip_embeddings(
        records,
        build_clip_teacher(cfg, clip),
        args.output,
        proposals=proposals,
        detector=detector,
        num_proposals=num,
        clip_spec=cfg.MODEL.OVDET.CLIP,
        max_load_pixels=cfg.INPUT.MAX_LOAD_PIXELS,
        device=args.device,
        progress=not args.no_progress,
    )
    print(
        f"wrote {args.output}: {summary['boxes']} boxes in {summary['images']} images "
        f"({summary['skipped']} skipped)"
    )
    return 0

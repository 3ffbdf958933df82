"""Accuracy of cheaper CLIP rescoring: one trained detector, evaluated with each variant.

CLIP rescoring costs one CLIP forward pass per crop: ``CLIP_RESCORING.NUM_PROPOSALS`` regions per
image times its crop scales (``CLIP_RESCORING.CROP_SCALES``, by default the teacher's
``DISTILL.CROP_SCALES``). This script loads one checkpoint once and evaluates it on a COCO-format
validation set (base / novel / all AP50, scores down to ``--score-thresh`` as the synthetic
benchmark does) without rescoring and with every ``K:S1,S2`` variant (K regions, crop scales
S1, S2...). Their cost at the real operating point is measured by ``benchmarks/real_scale.py``;
both go in one table of docs/speed.md.

Example (the detector of a synthetic benchmark run)::

    python tools/benchmark_synthetic.py --small --output RUN
    python -m benchmarks.rescoring_accuracy --checkpoint RUN/vild/model_final.pt \\
        --data RUN/data --variants 100:1.0,1.5 100:1.5 100:1.0 32:1.5 16:1.5
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Sequence

import torch

from benchmarks.common import print_report


def parse_variant(text: str) -> tuple[int, tuple[float, ...]]:
    """``"32:1.0,1.5"`` -> ``(32, (1.0, 1.5))``; ``"32"`` -> ``(32, ())`` (the teacher's)."""
    k, _, scales = text.partition(":")
    try:
        out = int(k), tuple(float(s) for s in scales.split(",") if s)
    except ValueError:
        raise SystemExit(f"error: variant {text!r} is not K[:S1,S2...] (e.g. 32:1.5)") from None
    if out[0] < 1 or any(s <= 0 for s in out[1]):
        raise SystemExit(f"error: variant {text!r}: K >= 1 and scales > 0")
    return out


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--checkpoint", required=True, help="an open-vocabulary model_final.pt")
    p.add_argument(
        "--data",
        required=True,
        help="a synthetic dataset folder (tools/make_synthetic.py, or a benchmark run's data/)",
    )
    p.add_argument(
        "--variants",
        nargs="+",
        default=["100:1.0,1.5", "100:1.5", "100:1.0", "32:1.5", "16:1.5"],
        help="rescoring variants K:S1,S2 (K regions, crop scales; K alone: the teacher's)",
    )
    p.add_argument("--score-thresh", type=float, default=0.001, help="least score evaluated")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default: 1)")
    p.add_argument("--json", default="", help="also write the results to this JSON file")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    variants = [parse_variant(v) for v in args.variants]
    torch.set_num_threads(args.threads)

    from ovdet.api import OVDetector
    from ovdet.core import ClipRescoringSettings, get_head
    from ovdet.data.coco import load_coco_detection
    from ovdet.evaluation import evaluate_coco
    from ovdet.ovbench.data import BenchmarkData
    from ovdet.tv.engine.inference import inference_on_records

    data = BenchmarkData(Path(args.data).resolve())
    gt, images = str(data.path("val_json")), str(data.path("val_images"))
    records = load_coco_detection(gt, images, split=None, filter_empty=False)
    detector = OVDetector.from_checkpoint(
        args.checkpoint, overrides=["MODEL.ROI_HEADS.SCORE_THRESH_TEST", str(args.score_thresh)]
    )
    detector.set_classes(records.class_names)
    detector.enable_clip_rescoring(True)  # the teacher, built once
    head = get_head(detector.model)
    base = ClipRescoringSettings.from_config(detector.cfg)
    teacher_scales = tuple(head.clip_teacher.crop_scales)

    rows = []
    for k, scales in [(0, ()), *variants]:
        settings = None
        if k:
            settings = dataclasses.replace(base, num_proposals=k, crop_scales=scales)
        head.enable_clip_rescoring(settings)
        print(f"evaluating {'detector' if not k else f'rescoring {k}:{scales}'}", file=sys.stderr)
        results = inference_on_records(
            detector.model, records, detector.cfg, "cpu", 2, progress=False
        )
        metrics = evaluate_coco(gt, results, data.split_spec)
        used = scales or teacher_scales
        rows.append(
            {
                "proposals": k,
                "crop_scales": list(used) if k else [],
                "clip_passes_per_image": k * len(used),
                **{g: metrics[g]["AP50"] or 0.0 for g in ("base", "novel", "all")},
            }
        )
    table = [
        [
            "detector alone" if not r["proposals"] else f"{r['proposals']} x {r['crop_scales']}",
            str(r["clip_passes_per_image"]),
            *(f"{r[g]:.3f}" for g in ("base", "novel", "all")),
        ]
        for r in rows
    ]
    header = ["rescoring", "CLIP passes/img", "base AP50", "novel AP50", "all AP50"]
    title = f"Checkpoint `{args.checkpoint}`, {len(records.images)} validation images:"
    print_report(title, header, table, rows, args.json)
    return rows


if __name__ == "__main__":
    main()

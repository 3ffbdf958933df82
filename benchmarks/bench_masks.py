"""Inference cost of masks: the same detector with and without ``MODEL.MASK_ON``.

Both models share every weight but the mask branch (copied from one to the other), so they find
the same detections; the mask model also runs the mask head on them and pastes each mask into
the image (``Detections.masks``, as ``OVDetector.predict`` returns them). Timings are
interleaved (see ``benchmarks/common.py``) and reported as the median per-round ratio masks /
boxes, with its quartiles.

Example::

    python -m benchmarks.bench_masks --threads 1 --rounds 20
"""

from __future__ import annotations

import argparse
from typing import Sequence

import numpy as np
import torch

from benchmarks.common import (
    interleaved_timing,
    machine_lines,
    markdown_table,
    paired_ratios,
    random_text_embeddings,
    ratio_summary,
    setup_torch,
)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", default="tiny", help="detector config (name or YAML)")
    p.add_argument("--size", type=int, default=128, help="image side in pixels (square images)")
    p.add_argument("--classes", type=int, default=80, help="vocabulary size")
    p.add_argument("--threshold", type=float, default=0.0,
                   help="score threshold (0 keeps every region: the most masks)")  # fmt: skip
    p.add_argument("--rounds", type=int, default=20, help="timed rounds")
    p.add_argument("--warmup", type=int, default=3, help="untimed rounds first")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    return p.parse_args(argv)


def _predictor(model):
    """A callable: one image -> detections with masks pasted at the image's size."""
    from ovdet.core import get_head
    from ovdet.core.masks import paste_masks

    head = get_head(model)

    def run(image: torch.Tensor) -> int:
        with torch.no_grad():
            (det,) = model([image])
        if "mask_probs" in det:
            paste_masks(det["mask_probs"], det["boxes"], image.shape[1:])
        return len(det["boxes"])

    return head, run


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    device = setup_torch("cpu", args.threads)
    from ovdet.config import load_config
    from ovdet.tv import build_open_vocabulary_rcnn

    embed_dim = 32
    models = {}
    for name, mask_on in (("boxes", "False"), ("masks", "True")):
        cfg = load_config(args.config, ["MODEL.MASK_ON", mask_on,
                                        "MODEL.OVDET.EMBED_DIM", str(embed_dim)])  # fmt: skip
        torch.manual_seed(0)
        models[name] = build_open_vocabulary_rcnn(cfg, embed_dim=embed_dim).eval()
    shared = models["boxes"].state_dict()
    models["masks"].load_state_dict(shared, strict=False)
    text = random_text_embeddings(args.classes, embed_dim)
    image = torch.rand(3, args.size, args.size, generator=torch.Generator().manual_seed(1))
    fns, counts = {}, {}
    for name, model in models.items():
        head, run = _predictor(model)
        head.set_vocabulary(text)
        head.score_thresh = args.threshold
        counts[name] = run(image)
        fns[name] = lambda run=run: run(image)
    assert counts["boxes"] == counts["masks"], counts  # the same detections
    times = interleaved_timing(fns, args.rounds, args.warmup, device)
    median, q1, q3 = ratio_summary(paired_ratios(times, "boxes", "masks"))
    rows = [[name, f"{1000 * float(np.median(t)):.1f}", counts[name]] for name, t in times.items()]
    print("\n".join(machine_lines(device, args.threads)))
    print(f"- image {args.size}x{args.size}, {args.classes} classes, threshold {args.threshold}")
    print()
    print(markdown_table(["model", "median ms / image", "detections"], rows))
    print()
    print(f"masks / boxes: {median:.2f} (quartiles {q1:.2f}-{q3:.2f})")


if __name__ == "__main__":
    main()

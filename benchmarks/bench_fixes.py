"""Before / after measurements of the performance fixes, each timed in one interleaved run.

The "before" paths are the earlier implementations, kept here (only here) as reference code:

1. ``classifier``: the zero-shot classifier's inference path. Before: ``T * (e @ text.T)``,
   ``cat`` the background column, ``softmax``, drop the background column and flatten (a
   copy), compare all ``N x C`` probabilities with the threshold and ``nonzero`` them. After:
   :meth:`ZeroShotClassifier.probabilities` (the temperature scales ``e``; below 4096 classes
   the background is a row of the text matrix and one fused softmax follows, no flatten copy;
   from 4096 classes on the softmax runs in place in the ``N x C`` product) and
   :func:`threshold_scores` (from 256 classes on, only rows whose maximum passes the threshold
   are searched).
2. ``gemm`` (why the in-place path keeps the ``[N, C]`` product): the region-text product with
   ``C`` columns against ``C + 1`` (the text matrix with the background as one more row), at the
   R50 config's shape, 1000 regions x 512 x 20,000 classes.
3. ``teacher``: the CLIP teacher. Before: one RoIAlign and one encoder pass per crop scale.
   After: every scale in one RoIAlign call and one batched encoder pass.

Example::

    python -m benchmarks.bench_fixes
"""

from __future__ import annotations

import argparse
import functools
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from benchmarks import bench_training
from benchmarks.common import (
    interleaved_timing,
    machine_lines,
    markdown_table,
    paired_ratios,
    random_text_embeddings,
    ratio_summary,
    setup_torch,
)
from ovdet.core import ClipRegionTeacher, ZeroShotClassifier
from ovdet.core.postprocessing import threshold_scores

# (regions N, CLIP dim D): the tiny config (100 test proposals, a small CLIP) and R50-FPN with a
# ViT-B/32 CLIP (1000 test proposals).
SHAPES = ((100, 64), (1000, 512))
HEADER = ["case", "before ms", "after ms", "after / before [IQR]", "max difference"]


def classifier_before(clf: ZeroShotClassifier, emb: torch.Tensor, thresh: float) -> torch.Tensor:
    """The original path: full logits, concatenation, softmax, slice + flatten, threshold."""
    cls_logits = clf.temperature * emb @ clf.text_embeddings.t()
    bg = F.normalize(clf.background_embedding.float(), dim=0)
    bg_logits = clf.temperature * (emb @ bg)[:, None]
    probs = F.softmax(torch.cat([cls_logits, bg_logits], dim=1), dim=-1)[:, :-1]
    flat = probs.reshape(-1)
    return torch.nonzero(flat > thresh).squeeze(1)


def classifier_after(clf: ZeroShotClassifier, emb: torch.Tensor, thresh: float) -> torch.Tensor:
    """The current path (flat indices, to compare with ``classifier_before``)."""
    rows, labels, _ = threshold_scores(clf.probabilities(emb), thresh)
    return rows * clf.num_classes + labels


def teacher_before(
    teacher: ClipRegionTeacher, images: torch.Tensor, boxes: list[torch.Tensor]
) -> torch.Tensor:
    """The original teacher: a loop over crop scales, one RoIAlign + encoder pass each."""
    total = None
    for scale in teacher.crop_scales:
        crops = teacher.crops(images, boxes, scale)
        parts = []
        for start in range(0, crops.shape[0], teacher.chunk_size):
            chunk = (crops[start : start + teacher.chunk_size] - teacher.mean) / teacher.std
            parts.append(F.normalize(teacher.visual(chunk).float(), dim=-1))
        emb = torch.cat(parts)
        total = emb if total is None else total + emb
    return F.normalize(total, dim=-1)


def _row(name: str, times: dict, err: float) -> list[str]:
    med, q1, q3 = ratio_summary(paired_ratios(times, "before", "after"))
    ms = {k: sorted(v)[len(v) // 2] * 1e3 for k, v in times.items()}
    return [
        name,
        f"{ms['before']:.2f}",
        f"{ms['after']:.2f}",
        f"**{med:.2f}** [{q1:.2f}, {q3:.2f}]",
        f"{err:.1e}",
    ]


def _time(before: Callable, after: Callable, rounds: int, device) -> dict:
    return interleaved_timing({"before": before, "after": after}, rounds, 2, device, progress=False)


def classifier_rows(args, device) -> list[list[str]]:
    rows = []
    with torch.no_grad():
        for n, d in SHAPES:
            for c in args.vocab_sizes:
                clf = ZeroShotClassifier(d, d, temperature=50.0)
                clf.set_text_embeddings(random_text_embeddings(c, d))
                emb = F.normalize(torch.randn(n, d), dim=-1)
                ref = F.softmax(clf.logits_from_embeddings(emb), -1)[:, :-1]
                err = (clf.probabilities(emb) - ref).abs().max().item()
                same = torch.equal(
                    classifier_before(clf, emb, 0.05), classifier_after(clf, emb, 0.05)
                )
                times = _time(
                    functools.partial(classifier_before, clf, emb, 0.05),
                    functools.partial(classifier_after, clf, emb, 0.05),
                    args.rounds,
                    device,
                )
                name = f"{n} regions x D {d}, {c:,} classes" + ("" if same else " (!)")
                rows.append(_row(name, times, err))
    return rows


def training_parts(args, device):
    """The config, its CLIP and the training batch of bench_training."""
    targs = bench_training.parse_args(["--config", args.config])
    cfg, embed_dim, clip, images, targets, _ = bench_training.load_everything(
        targs, ["online:32"], device
    )
    return cfg, clip, images


def gemm_rows(args, device) -> list[list[str]]:
    emb = torch.randn(1000, 512)
    text = random_text_embeddings(20000, 512)
    with_bg = random_text_embeddings(20001, 512)
    times = _time(
        lambda: emb @ with_bg.t(), lambda: emb @ text.t(), max(args.rounds // 2, 3), device
    )
    return [_row("1000 x 512 times 512 x (20,000 + 1) (before) / 512 x 20,000 (after)", times, 0.0)]


def teacher_rows(args, device, cfg, clip, images) -> list[list[str]]:
    from ovdet.tv.engine.build import build_clip_teacher

    teacher = build_clip_teacher(cfg, clip)
    rows = []
    h, w = images[0].shape[1:]
    batch = torch.stack(images)
    gen = torch.Generator().manual_seed(0)
    for m in args.distill_proposals:
        boxes = [bench_training._random_boxes(m, h, w, gen) for _ in images]
        err = (teacher_before(teacher, batch, boxes) - teacher(batch, boxes)).abs().max().item()
        times = _time(
            functools.partial(teacher_before, teacher, batch, boxes),
            functools.partial(teacher, batch, boxes),
            args.rounds,
            device,
        )
        name = f"{len(images)} images x {m} boxes x {len(teacher.crop_scales)} scales"
        rows.append(_row(name, times, err))
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", default="configs/tiny.yaml", help="config of the teacher part")
    p.add_argument("--vocab-sizes", type=int, nargs="+", default=[80, 1203, 20000])
    p.add_argument("--distill-proposals", type=int, nargs="+", default=[8, 32])
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--parts", nargs="+", default=["classifier", "gemm", "teacher"], help="which parts"
    )
    args = p.parse_args(argv)
    device = setup_torch("cpu", args.threads)
    print("### Performance fixes, before / after (same run, interleaved)\n")
    print("\n".join(machine_lines(device, args.threads)))
    print(f"- {args.rounds} interleaved rounds per case\n")
    if "classifier" in args.parts:
        print(
            "Zero-shot classifier at inference (probabilities + score threshold 0.05; (!) marks "
            "a case whose candidate set differs):\n"
        )
        print(markdown_table(HEADER, classifier_rows(args, device)) + "\n")
    if "gemm" in args.parts:
        print("Product with C + 1 columns (before) and C columns (after):\n")
        print(markdown_table(HEADER, gemm_rows(args, device)) + "\n")
    if "teacher" in args.parts:
        cfg, clip, images = training_parts(args, device)
        print(f"CLIP teacher `{cfg.MODEL.OVDET.CLIP}` (difference: embeddings):\n")
        print(markdown_table(HEADER, teacher_rows(args, device, cfg, clip, images)) + "\n")


if __name__ == "__main__":
    main()

"""Training step time and memory: ovdet against torchvision's closed-set Faster R-CNN.

One step = forward + backward + gradient clipping (``SOLVER.CLIP_GRADIENTS``) + optimizer step
(``SOLVER.OPTIMIZER``) + ``zero_grad`` on one fixed batch, the body of
``ovdet.tv.engine.Trainer.train`` without the data loader, logging and checkpoints. Every model
starts from the same backbone / RPN / box-head weights and has its own optimizer. Variants:

* ``closed``: torchvision's Faster R-CNN, C-way classifier, per-class boxes;
* ``text``: ovdet with ViLD-text only (``DISTILL.MODE none``);
* ``offline``: ViLD-text + ViLD-image from precomputed CLIP embeddings (``DISTILL.MODE
  offline``): each target carries ``distill_boxes`` and ``distill_embeddings``, as the data
  loader gives them from the embeddings file (random boxes and unit vectors here);
* ``online:M``: ViLD-text + ViLD-image with the CLIP teacher in the loop, ``M`` distilled
  proposals per image (``DISTILL.NUM_PROPOSALS``); the CLIP is ``MODEL.OVDET.CLIP`` (the tiny
  config's ``configs/clip/tiny``, randomly initialised: its speed does not depend on training);
* ``weak`` / ``weak_caption``: the same images as an image-labelled batch (weak supervision,
  issue 12): targets carry ``image_labels`` (2 per image) and no boxes, and the step trains the
  image-label loss (``MODEL.OVDET.WEAK``, max-size over the top ``WEAK.NUM_PROPOSALS``
  proposals) and, for ``weak_caption``, the caption loss (a precomputed caption embedding per
  image, as the trainer passes them); compare with ``text``, the box-only step of the batch;
* any of them with ``@reference`` (``text@reference``): the same model on torchvision's own
  computation (:func:`ovdet.tv.modeling.fast_paths.use_reference_paths`: NCHW training,
  torchvision's
  RoIAlign backward), to time what the fast paths save.

Timings are interleaved (see ``benchmarks/common.py``); peak memory per variant in a fresh
process.

Examples::

    python -m benchmarks.bench_training
    python -m benchmarks.bench_training --device cuda --config configs/ovcoco_vild_R50_FPN.yaml \\
        --size 800 --batch-size 4 --distill-proposals 32 64 128
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
from typing import Sequence

import torch
from torch import nn

from benchmarks.bench_inference import share_weights
from benchmarks.common import (
    autocast,
    cuda_peak,
    interleaved_timing,
    machine_lines,
    markdown_table,
    max_rss_mib,
    paired_ratios,
    random_text_embeddings,
    ratio_summary,
    run_probe,
    setup_torch,
)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", default="configs/tiny.yaml", help="detector config (YAML)")
    p.add_argument(
        "--size",
        type=int,
        default=0,
        help="shorter image side; the longer is 4/3 of it, capped by INPUT.MAX_SIZE_TRAIN "
        "(default: the config's largest INPUT.MIN_SIZE_TRAIN)",
    )
    p.add_argument(
        "--batch-size", type=int, default=0, help="images per step (default: SOLVER.IMS_PER_BATCH)"
    )
    p.add_argument("--num-classes", type=int, default=48, help="training classes (default: 48)")
    p.add_argument("--gt-per-image", type=int, default=4, help="ground-truth boxes per image")
    p.add_argument(
        "--distill-proposals",
        type=int,
        nargs="*",
        default=[16, 64],
        help="DISTILL.NUM_PROPOSALS values of the online variants (also the boxes per image of "
        "the offline variant: the config's value)",
    )
    p.add_argument(
        "--variants",
        nargs="+",
        default=["closed", "text", "offline", "online"],
        help="closed, text, offline, online (one per --distill-proposals value), online:M, weak, "
        "weak_caption; NAME@reference: on torchvision's reference paths (default: %(default)s)",
    )
    p.add_argument("--rounds", type=int, default=20, help="timed rounds (default: 20)")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds first (default: 2)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (cuda: float16 autocast)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default: 1)")
    p.add_argument("--no-memory", action="store_true", help="skip the per-process memory probes")
    p.add_argument("--json", default="", help="also write the raw results to this JSON file")
    p.add_argument("opts", nargs="*", default=[], help="config overrides: KEY VALUE ...")
    p.add_argument("--probe", default="", help=argparse.SUPPRESS)  # internal: one memory probe
    return p.parse_args(argv)


def split_variant(name: str) -> tuple[str, bool]:
    """``"text@reference"`` -> ``("text", True)``: the variant and whether it runs on
    torchvision's reference paths."""
    kind, at, _ = name.partition("@")
    return kind, bool(at)


def variant_names(args: argparse.Namespace) -> list[str]:
    names = []
    for variant in args.variants:
        v, at, paths = variant.partition("@")
        if at and paths != "reference":
            raise SystemExit(f"error: unknown paths {paths!r} in {variant!r} (only @reference)")
        if v == "online":
            names += [f"online:{m}{at}{paths}" for m in args.distill_proposals]
        elif v in ("closed", "text", "offline", "weak", "weak_caption") or v.startswith("online:"):
            names.append(variant)
        else:
            raise SystemExit(f"error: unknown variant {variant!r}")
    return names


def make_batch(cfg, args, embed_dim: int, device: torch.device):
    """Fixed images, targets (with offline-distillation boxes and embeddings) and a batch size."""
    batch = args.batch_size or cfg.SOLVER.IMS_PER_BATCH
    short = args.size or max(cfg.INPUT.MIN_SIZE_TRAIN)
    h, w = short, min(round(short * 4 / 3), cfg.INPUT.MAX_SIZE_TRAIN)
    gen = torch.Generator().manual_seed(1)
    m = cfg.MODEL.OVDET.DISTILL.NUM_PROPOSALS
    images, targets = [], []
    for _ in range(batch):
        images.append(torch.rand(3, h, w, generator=gen).to(device))
        targets.append(
            {
                "boxes": _random_boxes(args.gt_per_image, h, w, gen).to(device),
                "labels": torch.randint(
                    1, args.num_classes + 1, (args.gt_per_image,), generator=gen
                ).to(device),
                "distill_boxes": _random_boxes(m, h, w, gen).to(device),
                "distill_embeddings": random_text_embeddings(m, embed_dim, seed=len(targets)).to(
                    device
                ),
            }
        )
    return images, targets, (h, w)


def _random_boxes(n: int, h: int, w: int, gen: torch.Generator) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=gen) * torch.tensor([w * 0.7, h * 0.7])
    wh = (0.1 + 0.2 * torch.rand(n, 2, generator=gen)) * torch.tensor([w, h])
    return torch.cat([xy, xy + wh], dim=1)


def build_variant(cfg, args, name: str, embed_dim: int, clip=None) -> nn.Module:
    """One model, built with seed 0 (shared weights are copied afterwards)."""
    from ovdet.config import merge_overrides
    from ovdet.core import get_head
    from ovdet.tv import build_closed_set_rcnn, build_open_vocabulary_rcnn
    from ovdet.tv.engine.build import build_clip_teacher
    from ovdet.tv.modeling.fast_paths import use_reference_paths

    name, reference = split_variant(name)
    if reference:
        model = build_variant(cfg, args, name, embed_dim, clip)
        use_reference_paths(model, True)
        return model
    torch.manual_seed(0)
    if name == "closed":
        return build_closed_set_rcnn(cfg, args.num_classes)
    cfg = cfg.clone()
    cfg.defrost()
    mode, _, m = name.partition(":")
    weak = mode.startswith("weak")
    mode = "none" if mode == "text" or weak else mode
    overrides = ["MODEL.OVDET.DISTILL.MODE", mode]
    if name == "weak_caption":
        overrides += ["MODEL.OVDET.WEAK.CAPTION_LOSS", "True"]
    if m:
        overrides += ["MODEL.OVDET.DISTILL.NUM_PROPOSALS", m]
    merge_overrides(cfg, overrides)
    model = build_open_vocabulary_rcnn(cfg, embed_dim=embed_dim)
    get_head(model).set_vocabulary(random_text_embeddings(args.num_classes, embed_dim))
    if mode == "online":
        get_head(model).set_clip_teacher(build_clip_teacher(cfg, clip))
    return model


def image_labelled_targets(targets: list[dict], num_classes: int, embed_dim: int) -> list[dict]:
    """The batch as image-labelled data: per image 2 labels and a caption embedding, no boxes."""
    gen = torch.Generator().manual_seed(2)
    out = []
    for i, t in enumerate(targets):
        device = t["boxes"].device
        out.append(
            {
                "boxes": t["boxes"].new_zeros(0, 4),
                "labels": t["labels"].new_zeros(0),
                "image_labels": torch.randint(0, num_classes, (2,), generator=gen).to(device),
                "caption_embedding": random_text_embeddings(1, embed_dim, seed=100 + i)[0].to(
                    device
                ),
            }
        )
    return out


def variant_targets(name: str, targets: list[dict], args, embed_dim: int) -> list[dict]:
    if split_variant(name)[0].startswith("weak"):
        return image_labelled_targets(targets, args.num_classes, embed_dim)
    return targets


class Step:
    """One training step of a model on the fixed batch (the Trainer's inner loop)."""

    def __init__(self, cfg, model: nn.Module, images, targets, device: torch.device) -> None:
        from ovdet.tv.engine.build import build_optimizer

        self.model = model.to(device).train()
        self.optimizer = build_optimizer(cfg, self.model)
        self.images, self.targets, self.device = images, targets, device
        self.cfg = cfg
        self.amp = device.type == "cuda" and cfg.SOLVER.AMP.ENABLED
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)

    def __call__(self) -> None:
        with autocast(self.device) if self.amp else contextlib.nullcontext():
            losses = self.model(self.images, self.targets)
        total = sum(losses.values())
        self.scaler.scale(total).backward()
        if self.cfg.SOLVER.CLIP_GRADIENTS.ENABLED:  # as the Trainer: SOLVER.CLIP_GRADIENTS.*
            from ovdet.tv.engine.build import clip_gradients

            self.scaler.unscale_(self.optimizer)
            clip_gradients(self.cfg, self.model.parameters())
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)


def load_everything(args: argparse.Namespace, names: Sequence[str], device: torch.device):
    """Config, embedding size, the CLIP (if an online variant needs it) and the batch."""
    from ovdet.clip import ClipSpec, load_clip
    from ovdet.config import load_config

    cfg = load_config(args.config, args.opts, freeze=False)
    ov = cfg.MODEL.OVDET
    embed_dim = ov.EMBED_DIM or ClipSpec.parse(ov.CLIP).embed_dim
    clip = load_clip(ov.CLIP, device) if any(n.startswith("online") for n in names) else None
    images, targets, shape = make_batch(cfg, args, embed_dim, device)
    return cfg, embed_dim, clip, images, targets, shape


def probe_memory(args: argparse.Namespace) -> dict:
    """One variant in this (fresh) process: peak memory of building it and training 2 steps."""
    device = setup_torch(args.device, args.threads)
    cfg, embed_dim, clip, images, targets, _ = load_everything(args, [args.probe], device)
    base = max_rss_mib()
    with cuda_peak(device) as peak:
        step = Step(cfg, build_variant(cfg, args, args.probe, embed_dim, clip), images,
                    variant_targets(args.probe, targets, args, embed_dim), device)  # fmt: skip
        for _ in range(2):
            step()
    return {"rss_peak_delta_mib": max_rss_mib() - base, **peak}


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.probe:
        print(json.dumps(probe_memory(args)))
        return
    device = setup_torch(args.device, args.threads)
    names = variant_names(args)
    cfg, embed_dim, clip, images, targets, shape = load_everything(args, names, device)
    models = {n: build_variant(cfg, args, n, embed_dim, clip) for n in names}
    reference = next(iter(models.values()))
    for model in models.values():
        if model is not reference:
            share_weights(reference, model)
    steps = {
        n: Step(cfg, m, images, variant_targets(n, targets, args, embed_dim), device)
        for n, m in models.items()
    }
    print(
        f"timing {len(steps)} variants x {args.rounds} rounds, batch {len(images)} of "
        f"{shape[0]}x{shape[1]}",
        file=sys.stderr,
    )
    times = interleaved_timing(steps, args.rounds, args.warmup, device)
    steps.clear()
    models.clear()

    memory: dict[str, dict] = {}
    if not args.no_memory:
        forwarded = [
            "--config", args.config, "--size", str(args.size), "--batch-size",
            str(len(images)), "--num-classes", str(args.num_classes), "--gt-per-image",
            str(args.gt_per_image), "--device", args.device, "--threads", str(args.threads),
        ]  # fmt: skip
        for name in names:
            print(f"memory probe {name}", file=sys.stderr, flush=True)
            memory[name] = run_probe(
                "benchmarks.bench_training", [*forwarded, *args.opts, "--probe", name]
            )
    report(args, cfg, device, shape, len(images), names, times, memory)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"times": times, "memory": memory, "shape": shape}, f, indent=1)


def report(args, cfg, device, shape, batch, names, times, memory) -> None:
    """Print the markdown section."""
    base = "closed" if "closed" in names else names[0]
    text = "text" if "text" in names else None
    rows = []
    for name in names:
        med_ms = sorted(times[name])[len(times[name]) // 2] * 1e3
        ratio, q1, q3 = ratio_summary(paired_ratios(times, base, name))
        kind, reference = split_variant(name)
        per_proposal = ""
        if kind.startswith("online:") and not reference and text is not None:
            m = int(name.split(":")[1])
            extra = statistics.median(b - a for a, b in zip(times[text], times[name]))
            per_proposal = f"{extra * 1e3 / (batch * m):.3f}"
        mem = ""
        if memory:
            key = "cuda_peak_mib" if device.type == "cuda" else "rss_peak_delta_mib"
            mem = f"{memory[name][key]:.0f}"
        label = {
            "closed": f"closed-set Faster R-CNN ({args.num_classes} classes)",
            "text": "ovdet, ViLD-text only",
            "offline": "ovdet, ViLD-text + offline ViLD-image "
            f"({cfg.MODEL.OVDET.DISTILL.NUM_PROPOSALS} boxes/img)",
            "weak": "ovdet, image-labelled batch: image-label loss (max-size, "
            f"{cfg.MODEL.OVDET.WEAK.NUM_PROPOSALS} proposals/img)",
            "weak_caption": "ovdet, image-labelled batch: image-label + caption loss",
        }.get(kind, f"ovdet, ViLD-text + online CLIP teacher, {kind.split(':')[-1]} proposals/img")
        if reference:
            label += ", torchvision's reference paths"
        rows.append(
            [label, f"{med_ms:.0f}", f"**{ratio:.3f}** [{q1:.3f}, {q3:.3f}]", per_proposal, mem]
        )
    scales = len(cfg.MODEL.OVDET.DISTILL.CROP_SCALES)
    print(
        f"### Training step: `{args.config}`, batch {batch} of {shape[0]}x{shape[1]} px, "
        f"{args.num_classes} classes\n"
    )
    print("\n".join(machine_lines(device, args.threads)))
    print(
        f"- {args.rounds} interleaved rounds after {args.warmup} warm-up rounds; optimizer "
        f"{cfg.SOLVER.OPTIMIZER}; CLIP teacher `{cfg.MODEL.OVDET.CLIP}` (random init), "
        f"{scales} crop scales per proposal\n"
    )
    mem_header = "peak memory MiB" + (
        " (CUDA max allocated)" if device.type == "cuda" else " (maxrss increase)"
    )
    print(
        markdown_table(
            [
                "variant",
                "ms/step",
                f"ratio to {base} [IQR]",
                "extra ms over ViLD-text per distilled proposal (median)",
                mem_header,
            ],
            rows,
        )
    )
    slope = marginal_cost(times, names, text)
    if slope is not None:
        per_box, fixed = slope
        print(
            f"\nOnline teacher, least-squares fit of the per-round extra time over ViLD-text "
            f"against distilled proposals per image: **{per_box * 1e3 / batch:.3f} ms per "
            f"distilled proposal** ({scales} crops each) + {fixed * 1e3:.0f} ms per step."
        )
    print()


def marginal_cost(times, names, text) -> tuple[float, float] | None:
    """(seconds per proposal per image, fixed seconds per step) of online distillation: a
    least-squares line through the per-round ``online:M - text`` differences against M."""
    online = [n for n in names if n.startswith("online:") and not split_variant(n)[1]]
    if text is None or len({int(n.split(":")[1]) for n in online}) < 2:
        return None
    xs, ys = [], []
    for name in online:
        m = int(name.split(":")[1])
        for a, b in zip(times[text], times[name]):
            xs.append(m)
            ys.append(b - a)
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return slope, my - slope * mx


if __name__ == "__main__":
    main()

"""Inference speed and memory: ovdet's open-vocabulary Faster R-CNN against torchvision's
closed-set Faster R-CNN with the same backbone, RPN, box head, weights and input size.

For each vocabulary size C, the open-vocabulary detector scores regions against C random
L2-normalised text embeddings (set with ``set_vocabulary``); the closed-set detector has a
``C + 1``-way classifier and per-class boxes (torchvision's ``FastRCNNPredictor``). Backbone,
RPN and box-head weights are copied from one model to all others, so both sides see the same
proposals. Timings are interleaved (see ``benchmarks/common.py``); peak memory is measured in a
fresh process per configuration (``ru_maxrss`` increase on CPU, ``max_memory_allocated`` on
CUDA).

Examples::

    python -m benchmarks.bench_inference                       # tiny config, 128 px
    python -m benchmarks.bench_inference --config configs/Base-RCNN-FPN.yaml --size 320 \\
        --rounds 5 --vocab-sizes 80 1203 20000
    python -m benchmarks.bench_inference --device cuda --threads 4
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

import torch
from torch import nn

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

SHARED_PREFIXES = ("backbone.", "rpn.", "roi_heads.box_head.")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", default="configs/tiny.yaml", help="detector config (YAML)")
    p.add_argument(
        "--size",
        type=int,
        default=0,
        help="shorter image side in pixels; the longer is 4/3 of it, capped by "
        "INPUT.MAX_SIZE_TEST (default: the config's INPUT.MIN_SIZE_TEST)",
    )
    p.add_argument("--vocab-sizes", type=int, nargs="+", default=[1, 80, 1203, 20000])
    p.add_argument(
        "--closed-vocab-sizes",
        type=int,
        nargs="*",
        default=None,
        help="class counts of the closed-set models (default: --vocab-sizes); 80 (or the first "
        "vocabulary size) is always included as the reference",
    )
    p.add_argument("--rounds", type=int, default=30, help="timed rounds (default: 30)")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds first (default: 2)")
    p.add_argument("--batch-size", type=int, default=1, help="images per forward pass")
    p.add_argument("--device", default="cpu", help="cpu or cuda (cuda uses float16 autocast)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default: 1)")
    p.add_argument(
        "--embed-dim", type=int, default=0, help="CLIP embedding size (default: the config's)"
    )
    p.add_argument("--no-memory", action="store_true", help="skip the per-process memory probes")
    p.add_argument("--json", default="", help="also write the raw results to this JSON file")
    p.add_argument("opts", nargs="*", default=[], help="config overrides: KEY VALUE ...")
    p.add_argument("--probe", default="", help=argparse.SUPPRESS)  # internal: one memory probe
    return p.parse_args(argv)


def load_cfg(args: argparse.Namespace):
    """The config with the overrides, and the embedding size."""
    from ovdet.clip import ClipSpec
    from ovdet.config import load_config

    cfg = load_config(args.config, args.opts)
    ov = cfg.MODEL.OVDET
    embed_dim = args.embed_dim or ov.EMBED_DIM or ClipSpec.parse(ov.CLIP).embed_dim
    return cfg, embed_dim


def image_shape(cfg, size: int) -> tuple[int, int]:
    """(H, W) of the benchmark images: shorter side ``size``, 4:3, capped like the test input."""
    short = size or cfg.INPUT.MIN_SIZE_TEST
    return short, min(round(short * 4 / 3), cfg.INPUT.MAX_SIZE_TEST)


def make_images(shape: tuple[int, int], batch: int, device: torch.device) -> list[torch.Tensor]:
    """Fixed random RGB images in [0, 1]."""
    gen = torch.Generator().manual_seed(1)
    return [torch.rand(3, *shape, generator=gen).to(device) for _ in range(batch)]


def build_model(cfg, kind: str, num_classes: int, embed_dim: int) -> nn.Module:
    """``kind`` ``closed`` or ``ov``; built with seed 0, so every model shares the same
    backbone, RPN and box head weights (the classifiers differ by construction)."""
    from ovdet.core import get_head
    from ovdet.tv import build_closed_set_rcnn, build_open_vocabulary_rcnn

    torch.manual_seed(0)
    if kind == "closed":
        return build_closed_set_rcnn(cfg, num_classes).eval()
    model = build_open_vocabulary_rcnn(cfg, embed_dim=embed_dim)
    get_head(model).set_vocabulary(random_text_embeddings(num_classes, embed_dim))
    return model.eval()


def share_weights(reference: nn.Module, model: nn.Module) -> None:
    """Copy backbone, RPN and box-head weights of ``reference`` into ``model``."""
    state = {k: v for k, v in reference.state_dict().items() if k.startswith(SHARED_PREFIXES)}
    missing, _ = model.load_state_dict(state, strict=False)
    if any(k.startswith(SHARED_PREFIXES) for k in missing):
        raise RuntimeError(f"shared weights missing in the model: {missing[:3]}")


def probe_memory(args: argparse.Namespace) -> dict:
    """One configuration in this (fresh) process: peak memory of building it and running it."""
    device = setup_torch(args.device, args.threads)
    cfg, embed_dim = load_cfg(args)
    images = make_images(image_shape(cfg, args.size), args.batch_size, device)
    kind, num_classes = args.probe.split(":")
    base = max_rss_mib()
    with cuda_peak(device) as peak:
        model = build_model(cfg, kind, int(num_classes), embed_dim).to(device)
        with torch.no_grad(), autocast(device):
            for _ in range(2):
                model(images)
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    return {
        "weights_mib": (params + buffers) / 2**20,
        "rss_peak_delta_mib": max_rss_mib() - base,
        **peak,
    }


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.probe:
        print(json.dumps(probe_memory(args)))
        return
    device = setup_torch(args.device, args.threads)
    cfg, embed_dim = load_cfg(args)
    shape = image_shape(cfg, args.size)
    images = make_images(shape, args.batch_size, device)
    sizes = list(dict.fromkeys(args.vocab_sizes))
    ref_size = 80 if 80 in sizes else sizes[0]

    closed_sizes = sizes if args.closed_vocab_sizes is None else args.closed_vocab_sizes
    closed_sizes = list(dict.fromkeys([ref_size, *closed_sizes]))
    models: dict[str, nn.Module] = {}
    for c in closed_sizes:
        models[f"closed:{c}"] = build_model(cfg, "closed", c, embed_dim)
    for c in sizes:
        models[f"ov:{c}"] = build_model(cfg, "ov", c, embed_dim)
    reference = models[f"closed:{ref_size}"]
    for model in models.values():
        if model is not reference:
            share_weights(reference, model)
        model.to(device)

    detections: dict[str, float] = {}

    def runner(name: str):
        model = models[name]

        def run() -> None:
            with torch.no_grad(), autocast(device):
                out = model(images)
            detections[name] = sum(len(o["boxes"]) for o in out) / len(out)

        return run

    print(
        f"timing {len(models)} models x {args.rounds} rounds on {shape[0]}x{shape[1]} images",
        file=sys.stderr,
    )
    times = interleaved_timing(
        {n: runner(n) for n in models}, args.rounds, args.warmup, device, progress=True
    )
    models.clear()  # free them before the memory probes

    memory: dict[str, dict] = {}
    if not args.no_memory:
        forwarded = _forwarded_args(args)
        for name in times:
            print(f"memory probe {name}", file=sys.stderr, flush=True)
            memory[name] = run_probe("benchmarks.bench_inference", [*forwarded, "--probe", name])

    report(args, device, shape, embed_dim, sorted({*sizes, *closed_sizes}), ref_size, times,
           detections, memory)  # fmt: skip
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(
                {"times": times, "detections": detections, "memory": memory, "shape": shape},
                f,
                indent=1,
            )


def _forwarded_args(args: argparse.Namespace) -> list[str]:
    out = [
        "--config",
        args.config,
        "--size",
        str(args.size),
        "--batch-size",
        str(args.batch_size),
        "--device",
        args.device,
        "--threads",
        str(args.threads),
        "--embed-dim",
        str(args.embed_dim),
    ]
    return out + list(args.opts)


def _median_ms(values: Sequence[float]) -> float:
    return sorted(values)[len(values) // 2] * 1e3


def report(args, device, shape, embed_dim, sizes, ref_size, times, detections, memory) -> None:
    """Print the markdown section."""
    batch = args.batch_size
    ref = f"closed:{ref_size}"
    rows = []
    for c in sizes:
        closed, ov = f"closed:{c}", f"ov:{c}"
        have_closed, have_ov = closed in times, ov in times
        same = vs_ref = "—"
        if have_closed and have_ov:
            r, q1, q3 = ratio_summary(paired_ratios(times, closed, ov))
            same = f"**{r:.3f}** [{q1:.3f}, {q3:.3f}]"
        if have_ov:
            vs_ref = f"{ratio_summary(paired_ratios(times, ref, ov))[0]:.3f}"
        mem = ""
        if memory:
            key = "cuda_peak_mib" if device.type == "cuda" else "rss_peak_delta_mib"
            cells = [
                f"{memory[n][key]:.0f} (weights {memory[n]['weights_mib']:.0f})"
                if n in memory
                else "—"
                for n in (closed, ov)
            ]
            mem = " / ".join(cells)
        ov_ms = _median_ms(times[ov]) / batch if have_ov else None
        rows.append(
            [
                f"{c:,}",
                f"{_median_ms(times[closed]) / batch:.1f}" if have_closed else "—",
                f"{ov_ms:.1f}" if ov_ms else "—",
                f"{1e3 / ov_ms:.2f}" if ov_ms else "—",
                same,
                vs_ref,
                " / ".join(
                    f"{detections[n]:.0f}" if n in detections else "—" for n in (closed, ov)
                ),
                mem,
            ]
        )
    print(f"### Inference: `{args.config}`, {shape[0]}x{shape[1]} px, batch {batch}\n")
    print("\n".join(machine_lines(device, args.threads)))
    print(
        f"- {args.rounds} interleaved rounds after {args.warmup} warm-up rounds; CLIP dim "
        f"{embed_dim}; random weights, random text embeddings, random images\n"
    )
    mem_header = "peak memory MiB closed / ov" + (
        " (CUDA max allocated)" if device.type == "cuda" else " (maxrss increase)"
    )
    print(
        markdown_table(
            [
                "classes C",
                "closed-set ms/img",
                "ovdet ms/img",
                "ovdet img/s",
                "ovdet / closed-set(C) [IQR]",
                f"ovdet / closed-set({ref_size})",
                "detections/img closed / ov",
                mem_header,
            ],
            rows,
        )
    )
    print()


if __name__ == "__main__":
    main()

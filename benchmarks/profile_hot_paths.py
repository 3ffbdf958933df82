"""Operator-level profiles (torch.profiler) of ovdet's hot paths next to the closed-set
baseline: inference at a given vocabulary size, and training steps of the benchmark variants.

Prints, per configuration, the operators with the most self time (CPU, or CUDA with
``--device cuda``), averaged per call of the profiled function.

Examples::

    python -m benchmarks.profile_hot_paths --what inference --vocab-size 20000
    python -m benchmarks.profile_hot_paths --what training --variants closed text online:32
"""

from __future__ import annotations

import argparse
from typing import Callable, Sequence

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks import bench_inference, bench_training
from benchmarks.common import autocast, machine_lines, setup_torch


def profile_fn(fn: Callable[[], object], calls: int, device: torch.device, rows: int) -> str:
    """Profile ``calls`` calls of ``fn`` after one warm-up call; the top operators' table."""
    fn()
    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        for _ in range(calls):
            fn()
    sort = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=sort, row_limit=rows, max_name_column_width=40)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--what", choices=["inference", "training"], default="inference")
    p.add_argument("--config", default="configs/tiny.yaml")
    p.add_argument("--size", type=int, default=0, help="shorter image side (default: config's)")
    p.add_argument("--vocab-size", type=int, default=20000, help="inference vocabulary size")
    p.add_argument(
        "--variants", nargs="+", default=["closed", "text", "offline", "online:32"], help="training"
    )
    p.add_argument("--calls", type=int, default=3, help="profiled calls per configuration")
    p.add_argument("--rows", type=int, default=15, help="operators listed per configuration")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("opts", nargs="*", default=[], help="config overrides: KEY VALUE ...")
    args = p.parse_args(argv)
    device = setup_torch(args.device, args.threads)
    print("\n".join(machine_lines(device, args.threads)) + "\n")

    if args.what == "inference":
        iargs = bench_inference.parse_args(
            ["--config", args.config, "--size", str(args.size), *args.opts]
        )
        cfg, embed_dim = bench_inference.load_cfg(iargs)
        images = bench_inference.make_images(bench_inference.image_shape(cfg, args.size), 1, device)
        reference = None
        for kind in ("closed", "ov"):
            model = bench_inference.build_model(cfg, kind, args.vocab_size, embed_dim)
            if reference is None:
                reference = model
            else:
                bench_inference.share_weights(reference, model)
            model.to(device)

            def run(model=model) -> None:
                with torch.no_grad(), autocast(device):
                    model(images)

            print(f"== inference, {kind}, {args.vocab_size} classes, per {args.calls} calls")
            print(profile_fn(run, args.calls, device, args.rows))
        return

    targs = bench_training.parse_args(
        ["--config", args.config, "--size", str(args.size), "--variants", "text", *args.opts]
    )
    cfg, embed_dim, clip, images, targets, _ = bench_training.load_everything(
        targs, args.variants, device
    )
    reference = None
    for name in args.variants:
        model = bench_training.build_variant(cfg, targs, name, embed_dim, clip)
        if reference is None:
            reference = model
        else:
            bench_inference.share_weights(reference, model)
        step = bench_training.Step(cfg, model, images, targets, device)
        print(f"== training step, {name}, per {args.calls} calls")
        print(profile_fn(step, args.calls, device, args.rows))


if __name__ == "__main__":
    main()

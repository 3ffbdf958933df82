"""One optimizer step over a detector's parameters: torch's per-tensor loop against its fused
kernel (what :func:`ovdet.tv.engine.build.build_optimizer` uses on CPU and CUDA).

Example::

    python -m benchmarks.bench_optimizer --config tiny --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Sequence

import torch

from ovdet.config import load_config
from ovdet.tv.engine.build import build_model


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="tiny", help="detector config (default: tiny)")
    p.add_argument("--optimizer", default="AdamW", choices=["AdamW", "SGD"], help="optimizer")
    p.add_argument("--rounds", type=int, default=30, help="timed steps per variant (default: 30)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default: 1)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    return p.parse_args(argv)


def time_steps(optimizer: torch.optim.Optimizer, device: torch.device, rounds: int) -> float:
    """Median seconds of one ``optimizer.step()`` after 3 warm-up steps."""
    times = []
    for i in range(rounds + 3):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 3:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = build_model(load_config(args.config, []), num_classes=48).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.randn_like(p)
    print(
        f"{args.config}: {len(params)} tensors, {sum(p.numel() for p in params) / 1e6:.1f} M "
        f"parameters; {args.optimizer} on {device}, {args.threads} thread(s)"
    )
    make = torch.optim.AdamW if args.optimizer == "AdamW" else torch.optim.SGD
    extra = {"momentum": 0.9} if args.optimizer == "SGD" else {}
    for name, kwargs in (("per-tensor loop", {"foreach": False}), ("fused", {"fused": True})):
        seconds = time_steps(make(params, lr=1e-3, **extra, **kwargs), device, args.rounds)
        print(f"| {name} | {seconds * 1000:.1f} ms |")


if __name__ == "__main__":
    main()

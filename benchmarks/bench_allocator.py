"""Training step time with and without glibc keeping freed memory for reuse.

:func:`ovdet.utils.allocator.keep_freed_memory` sets glibc's ``malloc`` for the whole process,
so each measurement is a fresh process: one training step (``bench_training``'s ``Step``: forward,
backward, clipping, optimizer) timed ``--rounds`` times after ``--warmup`` steps, with
``OVDET_KEEP_FREED_MEMORY=0`` ("off": glibc's defaults) and without it ("on": ovdet's tools).
The two settings alternate, ``--pairs`` times, and the ratio is taken pair by pair, so a host
that slows down for a while moves both sides. Reported per step: wall and CPU milliseconds
(medians) and the minor page faults, i.e. the pages the kernel handed the process afresh.

Example (the ``--small`` benchmark's closed-set step)::

    python -m benchmarks.bench_allocator --config configs/synthetic_benchmark.yaml \\
        --variant closed --batch-size 4 --size 128 --pairs 4 \\
        MODEL.RPN.PRE_NMS_TOPK_TRAIN 300 MODEL.RPN.POST_NMS_TOPK_TRAIN 100
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from typing import Sequence

from benchmarks import bench_training
from benchmarks.common import (
    machine_lines,
    markdown_table,
    ratio_summary,
    run_probe,
    setup_torch,
)
from ovdet.utils.allocator import ENV_VAR, keeps_freed_memory

SETTINGS = {"off": "0", "on": "1"}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", default="configs/tiny.yaml", help="detector config (YAML)")
    p.add_argument("--variant", default="text", help="a bench_training variant (default: text)")
    p.add_argument("--batch-size", type=int, default=8, help="images per step (default: 8)")
    p.add_argument("--size", type=int, default=0, help="shorter image side (default: config's)")
    p.add_argument("--pairs", type=int, default=4, help="off/on process pairs (default: 4)")
    p.add_argument("--rounds", type=int, default=10, help="timed steps per process (default: 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (default: 2)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default: 1)")
    p.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)  # internal
    p.add_argument("opts", nargs="*", default=[], help="config overrides: KEY VALUE ...")
    return p.parse_args(argv)


def probe(args: argparse.Namespace) -> dict:
    """Time the step in this process; its medians per step, and whether the setting took."""
    device = setup_torch("cpu", args.threads)  # applies keep_freed_memory() unless turned off
    targs = bench_training.parse_args(
        [
            "--config", args.config,
            "--size", str(args.size),
            "--batch-size", str(args.batch_size),
            "--variants", args.variant,
            *args.opts,
        ]
    )  # fmt: skip
    cfg, embed_dim, clip, images, targets, _ = bench_training.load_everything(
        targs, [args.variant], device
    )
    model = bench_training.build_variant(cfg, targs, args.variant, embed_dim, clip)
    step = bench_training.Step(cfg, model, images, targets, device)
    for _ in range(args.warmup):
        step()
    wall, cpu, faults = [], [], []
    for _ in range(args.rounds):
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    return {
        "ms": 1000 * statistics.median(wall),
        "cpu_ms": 1000 * statistics.median(cpu),
        "faults": statistics.median(faults),
        "kept": keeps_freed_memory(),
    }


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.probe:
        print(json.dumps(probe(args)))
        return
    lines = machine_lines(setup_torch("cpu", args.threads), args.threads)
    # this process's setting is not the probes': each probe sets its own (off / on below)
    print("\n".join(line for line in lines if "keeps freed memory" not in line) + "\n")
    forwarded = [
        "--config", args.config,
        "--variant", args.variant,
        "--batch-size", str(args.batch_size),
        "--size", str(args.size),
        "--rounds", str(args.rounds),
        "--warmup", str(args.warmup),
        "--threads", str(args.threads),
        "--probe",
        *args.opts,
    ]  # fmt: skip
    results: dict[str, list[dict]] = {name: [] for name in SETTINGS}
    for pair in range(args.pairs):
        for name, value in SETTINGS.items():
            result = run_probe("benchmarks.bench_allocator", forwarded, env={ENV_VAR: value})
            results[name].append(result)
            print(f"pair {pair + 1}, {name}: {json.dumps(result)}", flush=True)
    ratios = [on["ms"] / off["ms"] for off, on in zip(results["off"], results["on"])]
    median, q1, q3 = ratio_summary(ratios)
    rows = []
    for name, runs in results.items():
        rows.append(
            [
                name,
                f"{statistics.median(r['ms'] for r in runs):.0f}",
                f"{statistics.median(r['cpu_ms'] for r in runs):.0f}",
                f"{statistics.median(r['faults'] for r in runs):.0f}",
                "1.000" if name == "off" else f"{median:.3f} [{q1:.3f}, {q3:.3f}]",
            ]
        )
    header = ["freed memory kept", "ms/step", "CPU ms/step", "minor faults/step", "time ratio"]
    print(f"\n{args.variant}, batch {args.batch_size}, {args.pairs} process pairs")
    print(markdown_table(header, rows))


if __name__ == "__main__":
    main()

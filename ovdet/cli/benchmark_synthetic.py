"""``tools/benchmark_synthetic.py``: the synthetic open-vocabulary benchmark in one command.

Generates the colour x shape dataset, pre-trains a tiny CLIP on its captions with
open_clip_train, trains a closed-set Faster R-CNN and two ovdet detectors on the base boxes,
evaluates five methods (base / novel / all AP50), prints the table and runs tools/infer.py with
the novel class names on held-out images. A re-run with the same --output reuses finished
stages (an interrupted run resumes).

Examples::

    python tools/benchmark_synthetic.py --output output/synthetic_benchmark
    python tools/benchmark_synthetic.py --small --output output/synthetic_benchmark_small
"""

from __future__ import annotations

import argparse
import logging

from ovdet.cli.common import cli_entry, setup_logging

__all__ = ["build_parser", "main"]

logger = logging.getLogger("ovdet.benchmark")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Run the synthetic open-vocabulary benchmark end to end, with baselines.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    p.add_argument(
        "--output",
        default="output/synthetic_benchmark",
        help="folder for the data, models, results.json/results.md and pictures "
        "(default: output/synthetic_benchmark)",
    )
    p.add_argument(
        "--small",
        action="store_true",
        help="the small size (about 3 minutes on 2 CPU cores) instead of the default size",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed of every stage (default: 0)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch CPU threads (default: 0, torch's choice)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--verbose", action="store_true", help="debug logging")
    return p


@cli_entry
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    import torch

    from ovdet.benchmark.synthetic_benchmark import format_results, run_synthetic_benchmark

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    report = run_synthetic_benchmark(
        args.output,
        size="small" if args.small else "default",
        seed=args.seed,
        device=args.device,
        progress=not args.no_progress,
    )
    print(format_results(report))
    total = sum(v for k, v in report["seconds"].items() if not k.startswith("total"))
    print(f"stage times (s): {report['seconds']}; sum {total:.0f} s")
    print(f"pictures of the novel classes on held-out images: {report['infer_output']}")
    return 0

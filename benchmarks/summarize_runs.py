"""Mean and spread of the synthetic benchmark's rows over several runs (e.g. seeds).

One run of ``tools/benchmark_synthetic.py`` is noisy: float rounding alone moves single rows by
several points of novel AP50 (docs/benchmark.md, "Noise and seeds"). This script reads the
``results.json`` of runs of one size and prints, per row, the mean and range of base / novel
AP50, and per weak-supervision row its novel AP50 gain over its control (the row trained as
long on box images only, :attr:`~ovdet.ovbench.plan.Method.control`), run by
run: a gain is worth something when it holds in every run.

Example::

    for s in 0 1 2; do python tools/benchmark_synthetic.py --small --seed $s --output RUN$s; done
    python -m benchmarks.summarize_runs RUN0 RUN1 RUN2
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

from ovdet.ovbench.plan import METHODS
from ovdet.ovbench.targets import ap50
from ovdet.utils.errors import DataError


def load_report(run: str | Path) -> dict:
    """The ``results.json`` of a finished benchmark folder."""
    path = Path(run) / "results.json"
    if not path.is_file():
        raise DataError(f"{path} does not exist: {run} is not a finished benchmark run")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{path} is not valid JSON: {e}") from e


def summarize(reports: Sequence[dict]) -> dict:
    """Per row: the base and novel AP50 of every run; per row with a control: its novel AP50
    minus the control's, run by run.

    Args:
        reports: ``results.json`` contents of runs of one size (refused otherwise).

    Returns:
        ``{"size", "seeds", "rows": {key: {"description", "base": [...], "novel": [...]}},
        "gains": {key: {"description", "control", "novel": [...]}}}``; a row is listed when
        every run has it.
    """
    if not reports:
        raise DataError("no runs to summarize")
    sizes = {json.dumps(r.get("size_settings"), sort_keys=True) for r in reports}
    if len(sizes) > 1:
        raise DataError(
            "the runs have different sizes (size_settings differ): summarize runs of one size"
        )
    rows, gains = {}, {}
    for method in METHODS:
        if not all(method.key in r["metrics"] for r in reports):
            continue
        rows[method.key] = {
            "description": method.description,
            "base": [ap50(r["metrics"], method.key, "base") for r in reports],
            "novel": [ap50(r["metrics"], method.key, "novel") for r in reports],
        }
        if method.control and all(method.control in r["metrics"] for r in reports):
            gains[method.key] = {
                "description": method.description,
                "control": method.control,
                "novel": [
                    ap50(r["metrics"], method.key, "novel")
                    - ap50(r["metrics"], method.control, "novel")
                    for r in reports
                ],
            }
    return {
        "size": reports[0].get("size"),
        "seeds": [r.get("seed") for r in reports],
        "rows": rows,
        "gains": gains,
    }


def _mean_range(values: Sequence[float]) -> str:
    mean = sum(values) / len(values)
    return f"{mean:.3f} [{min(values):.3f}, {max(values):.3f}]"


def format_summary(summary: dict) -> str:
    """The summary as two Markdown tables: the rows, and the gains over the controls."""
    runs = len(summary["seeds"])
    seeds = ", ".join(str(s) for s in summary["seeds"])
    lines = [
        f"{runs} runs of size {summary['size']} (seeds {seeds}); mean [min, max] AP50:",
        "",
        "| method | base AP50 | novel AP50 |",
        "|---|---|---|",
    ]
    for row in summary["rows"].values():
        lines.append(
            f"| {row['description']} | {_mean_range(row['base'])} | {_mean_range(row['novel'])} |"
        )
    if summary["gains"]:
        descriptions = {k: v["description"] for k, v in summary["rows"].items()}
        lines += [
            "",
            "| novel AP50 gain | over | per run | mean | runs above 0 |",
            "|---|---|---|---|---|",
        ]
        for gain in summary["gains"].values():
            values = gain["novel"]
            per_run = ", ".join(f"{v:+.3f}" for v in values)
            above = sum(v > 0 for v in values)
            lines.append(
                f"| {gain['description']} | {descriptions[gain['control']]} | {per_run} | "
                f"{sum(values) / len(values):+.3f} | {above} of {len(values)} |"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("runs", nargs="+", help="folders of finished tools/benchmark_synthetic.py runs")
    p.add_argument("--json", default="", help="also write the summary to this JSON file")
    args = p.parse_args(argv)
    try:
        summary = summarize([load_report(run) for run in args.runs])
    except DataError as e:
        p.error(str(e))
    print(format_summary(summary))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()

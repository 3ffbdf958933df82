"""The benchmark over several detector seeds: each row as the mean and standard error of its
seeds, and a row's gain over another as the mean and standard error of the per-seed differences.

With ``--seeds N`` every seed trains the same detectors on the same data and CLIP (those of the
first seed), so that the spread is that of detector training (initialisation, batch order, the
sampled regions), the part that decides between two detectors; two rows of one seed are paired
(same data, same CLIP), so their difference is taken seed by seed.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

__all__ = [
    "aggregate_metrics",
    "mean_and_standard_error",
    "paired_difference",
    "seed_dir",
    "seed_list",
]


def seed_list(seed: int, seeds: int) -> list[int]:
    """The seeds of a run of ``seeds`` seeds starting at ``seed``: ``seed, seed + 1, ...``."""
    return [seed + i for i in range(seeds)]


def seed_dir(out: Path, seed: int, first_seed: int) -> Path:
    """The folder of one seed's detectors and evaluations: the run's folder itself for the
    first seed (so ``--seeds N`` reuses a finished single-seed run), else ``out/seed_S``."""
    return out if seed == first_seed else out / f"seed_{seed}"


def mean_and_standard_error(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """The mean of ``values`` and its standard error (sample standard deviation / sqrt(n)).

    Returns:
        ``(mean, standard error)``; the standard error is ``None`` for a single value, and
        both are ``None`` where a value is ``None`` (a group without objects).
    """
    if not values or any(v is None for v in values):
        return None, None
    n = len(values)
    mean = sum(values) / n
    if n == 1:
        return mean, None
    variance = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(variance / n)


def aggregate_metrics(per_seed: Sequence[dict]) -> tuple[dict, dict]:
    """The mean and the standard error of every metric of the rows every seed has.

    Args:
        per_seed: one ``{row key: {group: {metric: value}}}`` per seed (the ``metrics`` of a
            benchmark report; a number in place of a group, e.g. ``num_detections``, is
            averaged too).

    Returns:
        ``(means, standard_errors)``, each ``{row key: {group: {metric: value}}}`` with the
        groups and metrics of the first seed, rows in its order.
    """
    means: dict = {}
    errors: dict = {}
    for key, row in per_seed[0].items():
        if not all(key in m for m in per_seed):
            continue
        means[key], errors[key] = {}, {}
        for group, values in row.items():
            if not isinstance(values, dict):
                means[key][group], errors[key][group] = mean_and_standard_error(
                    [m[key][group] for m in per_seed]
                )
                continue
            means[key][group], errors[key][group] = {}, {}
            for metric in values:
                mean, se = mean_and_standard_error([m[key][group][metric] for m in per_seed])
                means[key][group][metric] = mean
                errors[key][group][metric] = se
    return means, errors


def paired_difference(
    per_seed: Sequence[dict], row: str, other: str, group: str = "novel", metric: str = "AP50"
) -> dict:
    """Row ``row`` minus row ``other`` seed by seed (``None`` values count as 0).

    Returns:
        ``{"values": [...], "mean": float, "se": float | None}``.
    """

    def value(metrics: dict, key: str) -> float:
        v = metrics[key][group][metric]
        return 0.0 if v is None else float(v)

    values = [value(m, row) - value(m, other) for m in per_seed]
    mean, se = mean_and_standard_error(values)
    return {"values": values, "mean": mean, "se": se}

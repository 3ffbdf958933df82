"""Inference time of two ways of predicting, as a ratio measured by interleaved rounds."""

from __future__ import annotations

import statistics
import time
from typing import Callable

__all__ = ["TIMING_ROUNDS", "time_against"]

#: Timed rounds, each one pass per mode.
TIMING_ROUNDS = 5


def time_against(
    run: Callable[[bool], int], rounds: int = TIMING_ROUNDS
) -> dict[str, float | int | list[float]]:
    """Seconds of ``run(False)`` (the reference) and ``run(True)`` (the candidate), and their
    ratio.

    One torch thread (two threads on a shared machine stall on each other); one untimed pass
    of the reference first (first-call costs: allocations, caches), then ``rounds`` rounds of
    one pass per mode, the order alternating between rounds. The ratio is the median of the
    rounds' ratios, so that a burst of load on the machine during one round moves it little.

    Args:
        run: one pass; returns how many detections it made.
        rounds: timed rounds.

    Returns:
        ``ratio`` (candidate / reference, the median over the rounds), ``ratios`` (each
        round's), ``reference_s`` and ``candidate_s`` (the median seconds of a pass),
        ``detections`` (of the candidate's last pass), ``rounds`` and ``torch_threads``.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    seconds: dict[bool, list[float]] = {False: [], True: []}
    detections = 0
    try:
        run(False)
        for r in range(rounds):
            for candidate in (False, True) if r % 2 == 0 else (True, False):
                t = time.perf_counter()
                count = run(candidate)
                seconds[candidate].append(time.perf_counter() - t)
                if candidate:
                    detections = count
    finally:
        torch.set_num_threads(threads)
    return {
        "ratio": statistics.median(c / r for c, r in zip(seconds[True], seconds[False])),
        "ratios": [c / r for c, r in zip(seconds[True], seconds[False])],
        "reference_s": statistics.median(seconds[False]),
        "candidate_s": statistics.median(seconds[True]),
        "detections": detections,
        "rounds": rounds,
        "torch_threads": 1,
    }

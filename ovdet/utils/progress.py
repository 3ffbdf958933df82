"""Progress lines for logs: what a progress bar shows, as one line (for ``--no-progress``)."""

from __future__ import annotations

import datetime

__all__ = ["format_eta", "progress_line"]


def format_eta(seconds: float) -> str:
    """Seconds -> ``H:MM:SS`` (rounded to whole seconds)."""
    return str(datetime.timedelta(seconds=max(0, round(seconds))))


def progress_line(metrics: dict, total: int, elapsed: float, done: int) -> str:
    """One training log line: iteration, losses, learning rate, speed and ETA.

    Args:
        metrics: ``iteration``, ``total_loss``, the loss terms (``loss_*``) and ``lr``.
        total: the last iteration.
        elapsed: seconds since this run's first iteration started.
        done: iterations run in those seconds (more than 0).

    Returns:
        e.g. ``"iter 20/200  total_loss 1.234  loss_cls 0.512  lr 0.002  0.45 s/it  ETA 0:01:21"``.
    """
    iteration = int(metrics["iteration"])
    losses = [f"total_loss {metrics['total_loss']:.4g}"] + [
        f"{k} {v:.4g}" for k, v in metrics.items() if k.startswith("loss")
    ]
    per_iter = elapsed / max(done, 1)
    return "  ".join(
        [
            f"iter {iteration}/{total}",
            *losses,
            f"lr {metrics['lr']:.3g}",
            f"{per_iter:.2f} s/it",
            f"ETA {format_eta(per_iter * (total - iteration))}",
        ]
    )

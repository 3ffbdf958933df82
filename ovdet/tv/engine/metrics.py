"""The training metrics of the torchvision engine: ``metrics.jsonl`` and TensorBoard.

One JSON object a line (``iteration``, the losses, ``lr``, ``time``; evaluation results on their
own lines), written by the main process; a resumed run first drops the lines logged after its
checkpoint (:func:`truncate_metrics`), so that the file reads as one uninterrupted run.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ovdet.utils.io import atomic_open

__all__ = ["MetricsWriter", "truncate_metrics"]

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"


class MetricsWriter:
    """Appends metrics to ``OUTPUT_DIR/metrics.jsonl`` and, where tensorboard is installed, to
    ``OUTPUT_DIR/tensorboard``.

    Args:
        output_dir: the run's folder.
        start_iter: the iteration training resumes after (TensorBoard drops later events).
        enabled: write at all (the main process); other processes get a writer that does not.
    """

    def __init__(self, output_dir: Path, start_iter: int = 0, enabled: bool = True) -> None:
        self.path = Path(output_dir) / METRICS_FILE
        self.enabled = enabled
        self.tensorboard = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                logger.warning("tensorboard is not installed; metrics go to metrics.jsonl only")
            else:
                self.tensorboard = SummaryWriter(
                    str(Path(output_dir) / "tensorboard"), purge_step=start_iter + 1
                )

    def log(self, metrics: dict) -> None:
        """One line of ``metrics`` (with its ``iteration``); numbers also to TensorBoard."""
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(metrics) + "\n")
        if self.tensorboard is not None:
            for k, v in metrics.items():
                if k != "iteration" and isinstance(v, (int, float)):
                    self.tensorboard.add_scalar(k, v, metrics["iteration"])

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
            self.tensorboard = None


def truncate_metrics(output_dir: Path, iteration: int) -> None:
    """Drop the metric lines logged after ``iteration`` (a resumed run logs them again), and
    lines cut short by SIGKILL or a full disk."""
    path = Path(output_dir) / METRICS_FILE
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:  # a line cut short by SIGKILL or a full disk
            continue
        if isinstance(entry, dict) and entry.get("iteration", 0) <= iteration:
            kept.append(line)
    with atomic_open(path, "w") as f:
        f.write("".join(line + "\n" for line in kept))

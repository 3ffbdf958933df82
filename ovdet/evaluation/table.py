"""A fixed-width text table of base / novel / all AP, for logs and the command line."""

from __future__ import annotations

from ovdet.evaluation.aggregation import GROUPS

__all__ = ["format_percent", "format_table"]

_LVIS_KEYS = ("APr", "APc", "APf")


def format_percent(value: float | None) -> str:
    """``0.4123`` as ``"41.2"``; ``None`` (no ground truth) as ``"-"``."""
    return "-" if value is None else f"{100 * value:.1f}"


def format_table(metrics: dict) -> str:
    """Render evaluation metrics as a table, in percent with one decimal.

    Args:
        metrics: the dict returned by :func:`~ovdet.evaluation.evaluate_coco` or
            :func:`~ovdet.evaluation.evaluate_lvis`.

    Returns:
        Lines like (no trailing newline)::

            split: ovcoco, 1234 detections
            group       AP   AP50  #categories
            all       41.2   60.3           65
            base      45.0   64.1           48
            novel     30.4   49.2           17

        followed, for LVIS metrics, by a line with APr / APc / APf. ``-`` marks a group
        without ground truth.
    """
    lines = []
    header = []
    if "split" in metrics:
        header.append(f"split: {metrics['split']}")
    if "num_detections" in metrics:
        header.append(f"{metrics['num_detections']} detections")
    if metrics.get("iou_type") == "segm":
        header.append("mask AP")
    if header:
        lines.append(", ".join(header))
    lines.append(f"{'group':<6} {'AP':>6} {'AP50':>6} {'#categories':>12}")
    for group in GROUPS:
        row = metrics.get(group)
        if row is None:
            continue
        ap, ap50 = format_percent(row["AP"]), format_percent(row["AP50"])
        lines.append(f"{group:<6} {ap:>6} {ap50:>6} {row['num_categories']:>12}")
    if all(key in metrics for key in _LVIS_KEYS):
        lines.append("LVIS:  " + "  ".join(f"{k} {format_percent(metrics[k])}" for k in _LVIS_KEYS))
    return "\n".join(lines)

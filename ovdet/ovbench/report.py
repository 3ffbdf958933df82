"""The benchmark's report as text: the results table, CLIP's accuracy, the targets, the novel
findings and the package versions (``results.md`` and the command's output)."""

from __future__ import annotations

from ovdet.ovbench.exemplars import EXEMPLAR_TABLE_ROWS
from ovdet.ovbench.plan import METHODS

__all__ = ["format_results"]


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def format_results(report: dict) -> str:
    """The results table (Markdown), CLIP's accuracy, the targets and the novel findings of a
    report of :func:`ovdet.ovbench.run.run_synthetic_benchmark`."""
    lines = [
        "| method | base AP50 | novel AP50 | all AP50 | novel AP |",
        "|---|---|---|---|---|",
    ]
    rows = [(method.key, method.description) for method in METHODS] + EXEMPLAR_TABLE_ROWS
    for key, description in rows:
        m = report["metrics"].get(key)
        if m is None:
            continue
        lines.append(
            f"| {description} | {_fmt(m['base']['AP50'])} | {_fmt(m['novel']['AP50'])} | "
            f"{_fmt(m['all']['AP50'])} | {_fmt(m['novel']['AP'])} |"
        )
    clip = report["clip_zero_shot"]
    lines.append("")
    lines.append(
        f"CLIP zero-shot accuracy ({clip.get('on', 'labelled crops')}): base {clip['base']:.3f}, "
        f"novel {clip['novel']:.3f}."
    )
    for target in report["targets"]:
        reason = f" ({target['reason']})" if target["reason"] else ""
        lines.append(f"{target['status']}: {target['text']}{reason}")
    found = report.get("novel_findings")
    if found:
        lines.append(
            f"Novel objects found by {found['method']} on {found['images']} validation images "
            f"(every class name in the vocabulary, score >= {found['score_thresh']}): "
            f"{found['novel_found']} of {found['novel_objects']} (right name, IoU >= 0.5); "
            f"{found['novel_right']} of its {found['novel_detections']} novel-named detections "
            "were right."
        )
    versions = report.get("versions")
    if versions:
        lines.append(
            "Packages: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v is not None) + "."
        )
    return "\n".join(lines)

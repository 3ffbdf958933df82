"""The benchmark's report as text: the results table (with ``--masks``, the mask detector's box
and mask rows and its inference time; with ``--fvlm``, F-VLM's inference time), CLIP's
accuracy, the targets, the novel findings and the package versions (``results.md`` and the
command's output)."""

from __future__ import annotations

from ovdet.ovbench.exemplars import EXEMPLAR_TABLE_ROWS
from ovdet.ovbench.fvlm import fvlm_time_line
from ovdet.ovbench.plan import METHODS

__all__ = ["format_results"]

#: (key, label) of every row of the results table, in order: the methods, then the exemplar rows.
TABLE_ROWS = [(method.key, method.description) for method in METHODS] + EXEMPLAR_TABLE_ROWS


def _fmt(value, error=None) -> str:
    """``0.412``, or ``0.412 ± 0.013`` with a standard error; "-" for none."""
    if value is None:
        return "-"
    return f"{value:.3f}" if error is None else f"{value:.3f} ± {error:.3f}"


def _cell(report: dict, key: str, group: str, metric: str) -> str:
    """A row's cell; with its standard error where the row has one (a run of several seeds)."""
    value = report["metrics"][key][group][metric]
    error = (report.get("standard_errors") or {}).get(key)
    return _fmt(value, error[group][metric] if error else None)


def _mask_lines(masks: dict) -> tuple[list[str], str]:
    """The mask detector's table rows (its detections scored on their boxes, then on their
    masks) and the line of its inference time with masks against boxes only."""
    errors = masks.get("standard_errors")
    rows = []
    for key, what in (("box", "box AP"), ("segm", "mask AP")):
        cells = [
            _fmt(masks[key][g][k], errors[key][g][k] if errors else None)
            for g, k in (("base", "AP50"), ("novel", "AP50"), ("all", "AP50"), ("novel", "AP"))
        ]
        rows.append(f"| {masks['label']}, {what} | {' | '.join(cells)} |")
    t = masks["inference"]
    line = (
        f"Inference time of {masks['label']}, masks / boxes only: {t['ratio']:.2f} x (the "
        f"median of {t['rounds']} rounds, each a pass over the {t['images']} validation images "
        f"per mode: {t['masks_s']:.1f} s against {t['boxes_s']:.1f} s, medians; the same "
        f"weights, score >= {t['score_thresh']:g}, {t['detections_per_image']:.1f} detections "
        f"per image, {t['torch_threads']} torch thread(s))."
    )
    return rows, line


def _seed_lines(report: dict) -> list[str]:
    """With several seeds: what the cells are, each row's novel AP50 per seed, and each row's
    gain over its control, seed by seed."""
    seeds = report["seeds"]
    lines = [
        "",
        f"Means ± standard errors over {len(seeds)} detector seeds ({', '.join(map(str, seeds))}),"
        f" on the data and CLIP of seed {report['seed']}; targets judged on the means.",
        "",
        "| method | novel AP50 per seed |",
        "|---|---|",
    ]
    for key, description in TABLE_ROWS:
        if key in report["metrics"]:
            values = [report["per_seed"][str(s)][key]["novel"]["AP50"] for s in seeds]
            lines.append(f"| {description} | {', '.join(_fmt(v) for v in values)} |")
    gains = report.get("gains") or {}
    if gains:
        names = {m.key: m.description for m in METHODS}
        lines += ["", "| novel AP50 gain | over | per seed | mean ± s.e. |", "|---|---|---|---|"]
        for key, gain in gains.items():
            per_seed = ", ".join(f"{v:+.3f}" for v in gain["values"])
            lines.append(
                f"| {names[key]} | {names[gain['control']]} | {per_seed} | "
                f"{gain['mean']:+.3f} ± {gain['se']:.3f} |"
            )
    return lines


def format_results(report: dict) -> str:
    """The results table (Markdown), CLIP's accuracy, the targets and the novel findings of a
    report of :func:`ovdet.ovbench.run.run_synthetic_benchmark`; with several seeds each cell is
    the mean ± its standard error, followed by the per-seed novel AP50 and the gains over the
    controls."""
    lines = [
        "| method | base AP50 | novel AP50 | all AP50 | novel AP |",
        "|---|---|---|---|---|",
    ]
    for key, description in TABLE_ROWS:
        if key not in report["metrics"]:
            continue
        cells = [
            _cell(report, key, g, k)
            for g, k in (("base", "AP50"), ("novel", "AP50"), ("all", "AP50"), ("novel", "AP"))
        ]
        lines.append(f"| {description} | {' | '.join(cells)} |")
    mask_time = None
    if report.get("masks"):
        mask_rows, mask_time = _mask_lines(report["masks"])
        lines += mask_rows
    if len(report.get("seeds", ())) > 1:
        lines += _seed_lines(report)
    clip = report["clip_zero_shot"]
    lines.append("")
    if mask_time:
        lines.append(mask_time)
    if report.get("fvlm_time"):
        lines.append(fvlm_time_line(report["fvlm_time"]))
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

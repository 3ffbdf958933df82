"""The benchmark's F-VLM rows (``--fvlm``), without training: the detector they add, the rows
kept out of the quick start's "best" rows, the interleaved timing, the targets and the report
line. The run itself: tests/ovbench/test_synthetic_benchmark_fvlm.py."""

from __future__ import annotations

import itertools

import pytest

from ovdet.ovbench.fvlm import CROP_ROW, fvlm_targets, fvlm_time_line
from ovdet.ovbench.plan import DETECTORS, FVLM_DETECTOR, MASK_DETECTOR, SIZES
from ovdet.ovbench.targets import best_box_trained_method, best_open_vocabulary_method


def _size(*argv):
    from ovdet.cli.benchmark_synthetic import _size, build_parser

    spec = _size(build_parser().parse_args(list(argv)))
    return SIZES[spec] if isinstance(spec, str) else spec


def _metrics(**novel: float) -> dict:
    return {k: {g: {"AP50": v, "AP": v / 2} for g in ("base", "novel", "all")}
            for k, v in novel.items()}  # fmt: skip


def test_fvlm_adds_one_detector_on_the_frozen_clip():
    assert FVLM_DETECTOR not in _size("--small").detectors()
    spec = _size("--small", "--fvlm", "--masks")
    assert spec.detectors() == [*DETECTORS, MASK_DETECTOR, FVLM_DETECTOR]
    assert spec.trains(FVLM_DETECTOR) and spec.iters("fvlm") == spec.iters("vild") == 120
    opts = dict(zip(FVLM_DETECTOR.overrides[::2], FVLM_DETECTOR.overrides[1::2]))
    assert opts["MODEL.BACKBONE.NAME"] == "build_clip_resnet_fpn_backbone"
    assert opts["MODEL.OVDET.CLIP_RESCORING.SOURCE"] == "backbone"


def test_fvlm_rows_do_not_become_the_quick_starts_best_rows():
    """The main targets, the pictures and the exemplar rows stay on the quick start's rows."""
    metrics = _metrics(vild_text=0.2, vild=0.3, vild_clip_rescoring=0.4, fvlm=0.9,
                       fvlm_detector=0.8)  # fmt: skip
    assert best_open_vocabulary_method(metrics).key == "vild_clip_rescoring"
    assert best_box_trained_method(metrics).key == "vild_clip_rescoring"


def _timing(ratio: float, crop_ratio: float) -> dict:
    def one(r):
        return {"ratio": r, "ratios": [r], "reference_s": 1.0, "candidate_s": r,
                "detections": 5, "rounds": 1, "torch_threads": 1, "images": 100}  # fmt: skip

    return {"fvlm": one(ratio), "crops": one(crop_ratio)}


@pytest.mark.parametrize("novel, ratio, status", [(0.5, 1.1, ("met", "met")),
                                                  (0.3, 1.3, ("MISSED", "MISSED"))])  # fmt: skip
def test_targets_compare_with_crop_rescoring_and_the_detector_alone(novel, ratio, status):
    metrics = _metrics(**{CROP_ROW: 0.4, "fvlm": novel})
    targets = fvlm_targets(metrics, _timing(ratio, 1.9))
    assert tuple(t["status"] for t in targets) == status
    assert f"F-VLM novel AP50 {novel:.3f}" in targets[0]["text"] and "0.400" in targets[0]["text"]
    assert f"{ratio:.2f} x" in targets[1]["text"] and "crop rescoring: 1.90 x" in targets[1]["text"]
    assert fvlm_targets(_metrics(**{CROP_ROW: 0.4}), None) == []  # no F-VLM rows, no targets
    line = fvlm_time_line(_timing(ratio, 1.9))
    assert f"F-VLM (pooled from its frozen backbone) {ratio:.2f} x" in line and "1.90 x" in line


def test_time_against_alternates_and_takes_the_median_ratio(monkeypatch):
    """With a clock that the passes advance by known amounts: one untimed reference pass, then
    rounds alternating which mode goes first; the ratio is the median of the rounds'."""
    from ovdet.ovbench import timing

    clock = itertools.count()
    now = [0.0]
    monkeypatch.setattr(timing.time, "perf_counter", lambda: now[0])
    calls = []
    costs = {False: [2.0, 2.0, 2.0, 2.0], True: [3.0, 30.0, 3.3, 3.0]}

    def run(candidate: bool) -> int:
        calls.append(candidate)
        if len(calls) > 1:  # the first, untimed pass costs nothing here
            now[0] += costs[candidate][sum(c == candidate for c in calls[1:]) - 1]
        return next(clock)

    result = timing.time_against(run, rounds=4)
    assert calls == [False, False, True, True, False, False, True, True, False]
    assert result["ratios"] == pytest.approx([1.5, 15.0, 1.65, 1.5])
    assert result["ratio"] == pytest.approx(1.575)  # a slow round moves it little
    assert result["reference_s"] == 2.0 and result["rounds"] == 4

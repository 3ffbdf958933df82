"""The F-VLM rows added to the quick start (``--small --fvlm``), end to end: only the F-VLM
detector trains, on the run's CLIP frozen as its backbone; it learns the base classes and finds
novel ones well above chance; its rows, targets and time ratios are reported and the quick
start's rows keep their values. On top of the quick start's run (tests/ovbench/conftest.py),
about 4 minutes on 2 CPU cores (training 1 minute, the time ratios' 22 passes 2.5), in
``make test-benchmark``."""

import json

import pytest

from tests.ovbench.conftest import run_small_on_a_copy

pytestmark = [pytest.mark.slow, pytest.mark.synthetic_benchmark]

#: Learning, not a wall-clock limit: base AP50 of the classes it was trained on, and novel AP50
#: far above a detector that names novel objects at random among 64 classes (about 0.01).
MIN_BASE_AP50 = 0.2
MIN_NOVEL_AP50 = 0.1


@pytest.fixture(scope="module")
def fvlm_run(small_run, tmp_path_factory):
    """``--fvlm`` on a copy of the quick start's folder: ``(folder, result, its report before)``."""
    return run_small_on_a_copy(small_run, tmp_path_factory, "fvlm", "--fvlm")


def test_fvlm_trains_one_detector_and_keeps_the_quick_starts_rows(fvlm_run):
    out, result, before = fvlm_run
    report = json.loads((out / "results.json").read_text())
    assert result.stderr.count("stage 2: training") == 1
    assert "stage 2: training fvlm (120 iterations)" in result.stderr
    for key, value in before["metrics"].items():
        assert report["metrics"][key] == value, key
    assert report["targets"][: len(before["targets"])] == before["targets"]


def test_fvlm_learned_and_its_rows_and_times_are_reported(fvlm_run):
    out, result, _ = fvlm_run
    report = json.loads((out / "results.json").read_text())
    detector, fvlm = report["metrics"]["fvlm_detector"], report["metrics"]["fvlm"]
    assert detector["base"]["AP50"] > MIN_BASE_AP50, detector
    assert max(detector["novel"]["AP50"], fvlm["novel"]["AP50"]) > MIN_NOVEL_AP50, (detector, fvlm)
    assert fvlm != detector  # the CLIP scores of the pooled regions changed the detections
    timing = report["fvlm_time"]
    for key in ("fvlm", "crops"):
        assert timing[key]["images"] == 100 and len(timing[key]["ratios"]) == 5
    assert [t["text"].split(" ")[0] for t in report["targets"][-2:]] == ["F-VLM", "F-VLM"]
    assert "| F-VLM: frozen CLIP backbone, CLIP scores of its pooled regions |" in result.stdout
    assert "Inference time with CLIP scores / without" in result.stdout
    # its backbone is the run's pre-trained CLIP tower, unchanged by training
    import torch

    from ovdet.clip import load_clip
    from ovdet.tv.engine.checkpoint import load_checkpoint

    weights = load_checkpoint(out / "fvlm" / "model_final.pt")["model"]
    tower = load_clip(report["clip"]).model.visual.state_dict()
    for key, value in tower.items():
        assert torch.equal(weights[f"backbone.clip.visual.{key}"], value), key

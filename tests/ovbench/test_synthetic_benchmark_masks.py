"""The mask rows added to the quick start (``--small --masks``), end to end: only the mask
detector trains, it learns the masks of the base classes, its rows, target and time ratio are
reported, and the quick start's rows keep their values. On top of the quick start's run
(tests/ovbench/conftest.py), about 5 minutes on 2 CPU cores shared with other jobs (training
1.5 minutes, evaluation and the time ratio's 12 passes 2.5), in ``make test-benchmark``."""

import json

import pytest

from ovdet.ovbench.masks import mask_prediction, mask_row_label
from tests.ovbench.conftest import run_small, run_small_on_a_copy

pytestmark = [pytest.mark.slow, pytest.mark.synthetic_benchmark]

#: Learning, not a wall-clock limit: the mask AP50 of the base classes, whose masks it trained on.
MIN_BASE_MASK_AP50 = 0.2


@pytest.fixture(scope="module")
def mask_run(small_run, tmp_path_factory):
    """``--masks`` on a copy of the quick start's folder: ``(folder, result, report before)``."""
    return run_small_on_a_copy(small_run, tmp_path_factory, "masks", "--masks")


def test_masks_train_one_detector_and_keep_the_box_rows(mask_run):
    out, result, before = mask_run
    report = json.loads((out / "results.json").read_text())
    for name in ("closed_set", "vild", "vild_text"):
        assert f"stage 2: reusing {out / name / 'model_final.pt'}" in result.stderr
    assert result.stderr.count("stage 2: training") == 1
    assert "stage 2: training vild_masks (120 iterations)" in result.stderr
    assert report["metrics"] == before["metrics"]  # every row of the quick start, unchanged
    assert report["targets"][:-1] == before["targets"]
    assert report["novel_findings"] == before["novel_findings"]


def test_the_mask_detector_learned_and_its_rows_are_reported(mask_run):
    out, result, _ = mask_run
    report = json.loads((out / "results.json").read_text())
    masks = report["masks"]
    box, segm, label = masks["box"], masks["segm"], masks["label"]
    # it predicts as the best row of ViLD-text + ViLD-image (with CLIP rescoring or without)
    assert label == mask_row_label(mask_prediction(report["metrics"]))
    assert segm["base"]["AP50"] > MIN_BASE_MASK_AP50, masks
    assert segm["base"]["AP"] < segm["base"]["AP50"]  # pycocotools' segm AP, not a copy of box
    assert segm != box
    timing = masks["inference"]
    assert timing["images"] == 100 and timing["masks_s"] > 0 and timing["boxes_s"] > 0
    assert len(timing["ratios"]) == timing["rounds"] == 5
    assert min(timing["ratios"]) <= timing["ratio"] <= max(timing["ratios"])
    assert report["targets"][-1]["text"] == (
        f"{label}: novel mask AP50 {segm['novel']['AP50']:.3f} >= 0.8 x its novel box AP50 "
        f"({box['novel']['AP50']:.3f})"
    )
    for what in ("box AP", "mask AP"):
        assert f"| {label}, {what} |" in result.stdout
    assert f"Inference time of {label}, masks / boxes only" in result.stdout
    # a rerun reuses the mask detector and its evaluation
    again = run_small(out, "--masks", timeout=600)
    assert "stage 2: training" not in again.stderr and "stage 3: evaluating" not in again.stderr
    assert json.loads((out / "results.json").read_text())["masks"] == masks

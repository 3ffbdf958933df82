"""The quick-start main job: tools/benchmark_synthetic.py --small, end to end (real training)."""

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def _run_small(out, timeout: int) -> subprocess.CompletedProcess:
    """The README's command at the small size; asserts it succeeded."""
    result = subprocess.run(
        [sys.executable, str(REPO / "tools" / "benchmark_synthetic.py"), "--small",
         "--output", str(out), "--no-progress"],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    return out, _run_small(out, timeout=1800).stdout


def test_open_vocabulary_beats_closed_set_on_novel_classes(small_run):
    out, stdout = small_run
    report = json.loads((out / "results.json").read_text())
    metrics = report["metrics"]
    closed_novel = metrics["closed_set"]["novel"]["AP50"]
    assert closed_novel < 0.01  # it cannot name a class it was not trained on
    best_novel = max(metrics[k]["novel"]["AP50"] for k in ("vild_text", "vild", "vild_ensemble"))
    assert best_novel > closed_novel + 0.05, metrics
    # CLIP pre-training learned the compositions, novel ones included (chance: 1/64).
    assert report["clip_zero_shot"]["novel"] > 0.2
    assert "| (e) (d) + ViLD-ensemble |" in stdout


def test_the_run_ends_with_novel_findings_counted_and_pictured(small_run):
    out, stdout = small_run
    report = json.loads((out / "results.json").read_text())
    findings = report["novel_findings"]
    val = json.loads((out / "data" / "annotations" / "instances_val.json").read_text())
    split = json.loads((out / "data" / "split.json").read_text())
    novel_ids = {c["id"] for c in val["categories"] if c["name"] in split["novel"]}
    assert findings["novel_objects"] == sum(a["category_id"] in novel_ids
                                            for a in val["annotations"])  # fmt: skip
    assert 0 <= findings["novel_found"] <= findings["novel_objects"]
    assert 0 <= findings["novel_right"] <= findings["novel_detections"]
    assert len(list((out / "pictures").glob("*_det.jpg"))) == 6
    assert (out / "pictures" / "overview.jpg").is_file()
    assert f"{findings['novel_found']} of {findings['novel_objects']}" in stdout
    # A check against a baseline that did not learn is not reported as met.
    closed = report["metrics"]["closed_set"]["base"]["AP50"]
    status = report["targets"][2]["status"]
    assert status == "not applicable" if closed < 0.05 else status in ("met", "MISSED")


def test_a_rerun_reuses_every_finished_stage(small_run):
    out, _ = small_run
    before = {p: p.stat().st_mtime_ns for p in out.rglob("model_final.pt")}
    assert len(before) == 3
    result = _run_small(out, timeout=600)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("model_final.pt")} == before
    assert "stage 2: training" not in result.stderr

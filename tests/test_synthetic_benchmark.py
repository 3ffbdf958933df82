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


def test_the_run_ends_with_pictures_of_novel_classes(small_run):
    out, _ = small_run
    results = json.loads((out / "infer" / "results.json").read_text())
    split = json.loads((out / "data" / "split.json").read_text())
    assert [c["name"] for c in results["categories"]] == split["novel"]
    assert len(list((out / "infer").glob("*_det.jpg"))) == 6


def test_a_rerun_reuses_every_finished_stage(small_run):
    out, _ = small_run
    before = {p: p.stat().st_mtime_ns for p in out.rglob("model_final.pt")}
    assert len(before) == 3
    result = _run_small(out, timeout=600)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("model_final.pt")} == before
    assert "stage 2: training" not in result.stderr

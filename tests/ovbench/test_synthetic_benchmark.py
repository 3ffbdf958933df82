"""The quick-start main job, tools/benchmark_synthetic.py --small, end to end (real training), and
what it must show: the open-vocabulary detector finds novel classes (novel AP50 >= 0.4), the
closed-set baseline learns its base classes (base AP50 > 0.2), and its novel-class detections
label a dataset that a closed-set detector learns the novel classes from; then the README's
second command, which adds the weak-supervision rows to that run (--fine-tune-iters 50).

About 7 minutes on 2 CPU cores, so these tests are their own step: ``make test-benchmark``
(``pytest -m synthetic_benchmark``); ``make test`` deselects them.
"""

import json
import subprocess
import sys

import pytest

from ovdet.ovbench.exemplars import EXEMPLAR_ROWS
from ovdet.ovbench.plan import DETECTORS, METHODS
from tests.conftest import REPO
from tests.ovbench.conftest import run_small as _run_small
from tests.ovbench.conftest import run_tool as _run_tool

pytestmark = [pytest.mark.slow, pytest.mark.synthetic_benchmark]

#: The floor of issue "The quick start convinces": learning, not a wall-clock limit.
MIN_BEST_NOVEL_AP50 = 0.4
MIN_CLOSED_SET_BASE_AP50 = 0.2


#: The README's command that adds the weak-supervision rows to a finished --small run.
WEAK_ROWS = ("--fine-tune-iters", "50")


@pytest.fixture(scope="module")
def weak_run(small_run):
    """The weak-supervision rows added to the quick start's folder."""
    out, _ = small_run
    quick_start = _report(out)
    result = _run_small(out, *WEAK_ROWS)
    return out, result, quick_start


def _report(out) -> dict:
    return json.loads((out / "results.json").read_text())


def test_open_vocabulary_finds_novel_classes_and_the_closed_set_baseline_learns(small_run):
    out, stdout = small_run
    report = _report(out)
    metrics = report["metrics"]
    closed = metrics["closed_set"]
    assert closed["novel"]["AP50"] < 0.01  # it cannot name a class it was not trained on
    assert closed["base"]["AP50"] > MIN_CLOSED_SET_BASE_AP50, metrics
    rows = ("vild_text", "vild", "vild_clip_rescoring")
    best_novel = max(metrics[k]["novel"]["AP50"] for k in rows)
    assert best_novel >= MIN_BEST_NOVEL_AP50, metrics
    # CLIP pre-training learned the compositions, novel ones included (chance: 1/64).
    assert report["clip_zero_shot"]["novel"] > 0.5
    # With a baseline that learned, every target is a real check, and each is met.
    assert [t["status"] for t in report["targets"][:3]] == ["met"] * 3, report["targets"]
    assert "| ViLD-text + ViLD-image, CLIP rescoring |" in stdout
    # The quick start leaves out the fine-tuned rows: three detectors, five rows, then the
    # exemplar rows on the best of them, with their three targets (for the default size).
    assert list(metrics) == QUICK_START_ROWS + EXEMPLAR_KEYS
    assert len(report["targets"]) == 3 + 3
    assert report["targets"][3]["text"].startswith("5 exemplars, clip: novel AP50")
    assert sorted(p.parent.name for p in out.glob("*/model_final.pt")) == [
        "closed_set", "vild", "vild_text"
    ]  # fmt: skip


#: The rows of the quick start's detectors, and of every detector of a run without opt-in rows
#: (--masks, --fvlm).
QUICK_START_ROWS = [m.key for m in METHODS if m.detector in {d.name for d in DETECTORS
                                                             if not d.init_from}]  # fmt: skip
ALL_ROWS = [m.key for m in METHODS if m.detector in {d.name for d in DETECTORS}]
EXEMPLAR_KEYS = [r.key for r in EXEMPLAR_ROWS]


def test_the_run_ends_with_correct_novel_findings_counted_and_pictured(small_run):
    out, stdout = small_run
    findings = _report(out)["novel_findings"]
    val = json.loads((out / "data" / "annotations" / "instances_val.json").read_text())
    split = json.loads((out / "data" / "split.json").read_text())
    novel_ids = {c["id"] for c in val["categories"] if c["name"] in split["novel"]}
    assert findings["novel_objects"] == sum(a["category_id"] in novel_ids
                                            for a in val["annotations"])  # fmt: skip
    # At the pictures' threshold the model finds most novel objects under their right names.
    assert findings["novel_found"] >= 0.5 * findings["novel_objects"], findings
    assert 0 < findings["novel_right"] <= findings["novel_detections"], findings
    assert len(list((out / "pictures").glob("*_det.jpg"))) == 6
    assert (out / "pictures" / "overview.jpg").is_file()
    assert f"{findings['novel_found']} of {findings['novel_objects']}" in stdout


def test_novel_auto_labels_teach_a_closed_set_detector(small_run, tmp_path):
    """Auto-annotation (issue "Use it in the world"): the best ovdet model labels the training
    images with the novel class names only; a closed-set Faster R-CNN trained on those labels
    alone (the benchmark's own closed-set recipe) detects the novel classes on the validation
    ground truth, which it never saw a human box of."""
    out, _ = small_run
    report = _report(out)
    findings = report["novel_findings"]
    data = out / "data"
    split = json.loads((data / "split.json").read_text())
    pictured = json.loads((out / "pictures" / "summary.json").read_text())["method"]
    best = next(m for m in METHODS if m.description == pictured)
    labels = tmp_path / "labels"
    _run_tool(
        "infer", "--checkpoint", str(out / best.detector / "model_final.pt"),
        "--classes", ",".join(split["novel"]), "--input", str(data / "images" / "train"),
        "--output", str(labels), "--no-draw", "--coco-out", str(labels / "auto.json"),
        "--label-thresh", str(findings["score_thresh"]),
        *(["--clip-rescoring"] if best.prediction == "clip_rescoring" else []),
    )  # fmt: skip
    auto = json.loads((labels / "auto.json").read_text())
    assert [c["name"] for c in auto["categories"]] == split["novel"]
    assert len(auto["annotations"]) >= 50, len(auto["annotations"])

    run = tmp_path / "closed"
    _run_tool(
        "train", "--config", str(out / "closed_set" / "config.yaml"),
        "DATASETS.TRAIN_JSON", str(labels / "auto.json"),
        "DATASETS.TRAIN_IMAGES", auto["info"]["image_root"],
        "DATASETS.SPLIT", "", "OUTPUT_DIR", str(run),
    )  # fmt: skip
    _run_tool(
        "evaluate", "--gt", str(data / "annotations" / "instances_val.json"),
        "--split", str(data / "split.json"), "--checkpoint", str(run / "model_final.pt"),
        "--image-root", str(data / "images" / "val"), "--score-thresh", "0.001",
        "--device", "cpu", "--output", str(tmp_path / "metrics.json"),
    )  # fmt: skip
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["novel"]["AP50"] > 0.1, metrics


def test_the_weak_supervision_rows_add_to_the_quick_start(weak_run):
    out, result, quick_start = weak_run
    report = _report(out)
    metrics = report["metrics"]
    # The quick start's detectors and evaluations were reused, and their rows kept their values,
    # the exemplar rows (on the best box-trained detector) included.
    for detector in ("closed_set", "vild", "vild_text"):
        assert f"stage 2: reusing {out / detector / 'model_final.pt'}" in result.stderr
    for key, value in quick_start["metrics"].items():
        assert metrics[key] == value, key
    # The weak-supervision rows (their own targets are for the default size, and printed) and
    # their controls ran; image labels keep the novel classes found.
    assert list(metrics) == ALL_ROWS + EXEMPLAR_KEYS
    weak_best = "ViLD-text + ViLD-image + image labels, CLIP rescoring"
    assert len(report["targets"]) == 5 + 3
    assert report["targets"][3]["text"].startswith(f"{weak_best}: novel AP50")
    assert metrics["vild_weak_clip_rescoring"]["novel"]["AP50"] >= MIN_BEST_NOVEL_AP50, metrics
    assert f"| {weak_best} |" in result.stdout


def test_a_rerun_reuses_every_finished_stage(weak_run):
    out, _, _ = weak_run
    before = {p: p.stat().st_mtime_ns for p in out.rglob("model_final.pt")}
    assert len(before) == len(DETECTORS)
    for args in (WEAK_ROWS, ()):  # the same rows, then fewer
        result = _run_small(out, *args, timeout=600)
        assert {p: p.stat().st_mtime_ns for p in out.rglob("model_final.pt")} == before
        assert "stage 2: training" not in result.stderr
        assert "stage 3: evaluating" not in result.stderr
    assert list(_report(out)["metrics"]) == QUICK_START_ROWS + EXEMPLAR_KEYS
    # Other iterations for a finished detector are refused, with the reason.
    other = subprocess.run(
        [sys.executable, str(REPO / "tools" / "benchmark_synthetic.py"), "--small", "--no-progress",
         "--output", str(out), "--fine-tune-iters", "60"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert other.returncode == 2 and "the iterations of vild_weak (50, now 60)" in other.stderr

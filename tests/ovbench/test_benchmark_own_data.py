"""The benchmark on a researcher's own dataset (a layout and CSV columns of the test's choosing),
its target checks, and the counting of novel findings."""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ovdet.ovbench.pictures import best_f1_threshold, match_detections
from ovdet.ovbench.plan import DETECTORS, METHODS, SIZES
from ovdet.ovbench.schedule import stage_workers
from ovdet.ovbench.targets import check_targets
from ovdet.utils.errors import ConfigError
from tests.conftest import REPO, TOY_CLASSES, write_toy_dataset


def _m(base, novel) -> dict:
    return {g: {"AP": v, "AP50": v} for g, v in (("base", base), ("novel", novel), ("all", base))}


def _metrics(closed_base=0.5, clip_novel=0.1, vild_text=(0.6, 0.5)) -> dict:
    """Metrics of the rows without image labels."""
    out = {k.key: _m(0.3, 0.2) for k in METHODS if not k.key.startswith("vild_text_")
           and k.key != "vild_weak_clip_rescoring"}  # fmt: skip
    out["closed_set"] = _m(closed_base, 0.0)
    out["clip_on_proposals"] = _m(0.1, clip_novel)
    out["vild_text"] = _m(*vild_text)
    return out


def test_targets_are_met_missed_or_not_applicable():
    met = check_targets(_metrics())
    assert [t["status"] for t in met] == ["met", "met", "met"]
    assert "(ViLD-text: 0.500)" in met[0]["text"]  # the best novel AP50 is chosen
    missed = check_targets(_metrics(closed_base=0.9))
    assert missed[2]["status"] == "MISSED"
    # A baseline that did not learn, or a reference that scored 0: the check cannot fail.
    na = check_targets(_metrics(closed_base=0.0, clip_novel=0.0))
    assert [t["status"] for t in na] == ["met", "not applicable", "not applicable"]
    assert "did not learn" in na[2]["reason"] and "scored 0" in na[1]["reason"]


def test_weak_supervision_targets():
    metrics = _metrics()  # the best row without image labels: ViLD-text, novel 0.5
    metrics["vild_text_labels"] = _m(0.6, 0.76)
    metrics["vild_weak_clip_rescoring"] = _m(0.64, 0.61)
    targets = check_targets(metrics)
    assert len(targets) == 5  # the image labels target only in the variant without novel captions
    assert [t["status"] for t in targets[3:]] == ["met", "met"]
    assert "(ViLD-text: 0.500) + 0.10" in targets[3]["text"]
    # the control, ViLD-text trained as long on boxes only, is a row without image labels
    metrics["vild_text_longer"] = _m(0.6, 0.55)
    control = check_targets(metrics)[3]
    assert control["status"] == "MISSED" and "(ViLD-text, fine-tuned on boxes:" in control["text"]
    del metrics["vild_text_longer"]
    # so is the control of the best image-label row, trained as long on boxes only
    metrics["vild_longer_clip_rescoring"] = _m(0.6, 0.52)
    h_control = check_targets(metrics)[3]
    assert h_control["status"] == "MISSED"
    assert "fine-tuned on boxes, CLIP rescoring:" in h_control["text"]
    del metrics["vild_longer_clip_rescoring"]
    metrics["vild_weak_clip_rescoring"] = _m(0.7, 0.59)  # 0.09 above, and under 0.95 x its base
    assert [t["status"] for t in check_targets(metrics)[3:]] == ["MISSED", "MISSED"]
    variant = check_targets(metrics, novel_captions=False)
    assert variant[5]["status"] == "met" and "1.5 x ViLD-text's (0.500)" in variant[5]["text"]
    metrics["vild_text_labels"] = _m(0.6, 0.74)
    assert check_targets(metrics, novel_captions=False)[5]["status"] == "MISSED"


def test_fine_tune_iters_set_only_the_detectors_that_fine_tune():
    from ovdet.cli.benchmark_synthetic import _size, build_parser

    def size(*argv):
        return _size(build_parser().parse_args(["--small", *argv]))

    spec = size("--iters", "50", "--fine-tune-iters", "20")
    iters = {d.name: spec.iters(d.name) for d in DETECTORS}
    assert iters == {d.name: 20 if d.init_from else 50 for d in DETECTORS}
    assert {n for n, i in iters.items() if i == 20} == {
        "vild_text_longer", "vild_longer", "vild_text_labels", "vild_text_captions", "vild_weak"
    }  # fmt: skip
    small = SIZES["small"]
    spec = size("--fine-tune-iters", "7")  # the closed-set baseline keeps its longer schedule
    assert spec.iters("closed_set") == small.iters("closed_set") != small.detector_iters
    assert spec.iters("vild_text") == small.detector_iters and spec.iters("vild_weak") == 7
    with pytest.raises(ConfigError, match="--fine-tune-iters"):
        size("--fine-tune-iters", "-1")
    with pytest.raises(ConfigError, match="--iters must be at least 1"):
        size("--iters", "0")


def _trained(spec) -> set[str]:
    return {d.name for d in DETECTORS if spec.trains(d)}


def test_the_small_size_leaves_out_the_fine_tuned_rows_unless_given_their_iterations():
    from ovdet.cli.benchmark_synthetic import _size, build_parser

    def size(*argv):
        spec = _size(build_parser().parse_args(list(argv)))
        return SIZES[spec] if isinstance(spec, str) else spec

    from_scratch = {d.name for d in DETECTORS if not d.init_from}
    assert from_scratch == {"closed_set", "vild", "vild_text"}
    assert _trained(size("--small")) == _trained(size("--small", "--iters", "5")) == from_scratch
    assert _trained(size("--small", "--fine-tune-iters", "100")) == {d.name for d in DETECTORS}
    assert _trained(size()) == {d.name for d in DETECTORS}
    assert _trained(size("--fine-tune-iters", "0")) == from_scratch
    # a detector left out takes the ones that start from it along
    no_vild = replace(SIZES["default"], detector_iters_overrides=(("vild", 0),))
    assert _trained(no_vild) == {d.name for d in DETECTORS if "vild" not in (d.name, d.init_from)}
    # the variant without novel captions is about the image-label row: at --small it needs its
    # iterations
    with pytest.raises(ConfigError, match="--fine-tune-iters"):
        size("--small", "--no-novel-captions")
    variant = size("--small", "--no-novel-captions", "--fine-tune-iters", "50")
    assert variant.data["novel_captions"] is False and "vild_text_labels" in _trained(variant)


def test_the_detectors_train_at_the_synthetic_scenes_size_and_own_data_at_the_configs(tmp_path):
    from ovdet.ovbench.data import BenchmarkData
    from ovdet.ovbench.plan import run_opts
    from ovdet.ovbench.stages import detector_config

    small, default = SIZES["small"], SIZES["default"]
    data = BenchmarkData(tmp_path)
    vild_text = next(d for d in DETECTORS if d.name == "vild_text")

    def config(spec, synthetic, opts=()):
        return detector_config(tmp_path, data, "local-dir:clip", vild_text, spec, 0, "cpu",
                               run_opts(spec, synthetic, opts))  # fmt: skip

    cfg = config(small, True)
    assert small.data["image_size"] == 96 and cfg.INPUT.MIN_SIZE_TEST == 96
    assert list(cfg.INPUT.MIN_SIZE_TRAIN) == list(cfg.INPUT.WEAK_MIN_SIZE_TRAIN) == [84, 96, 108]
    assert cfg.INPUT.MAX_SIZE_TRAIN == cfg.INPUT.WEAK_MAX_SIZE_TRAIN == cfg.INPUT.MAX_SIZE_TEST
    assert cfg.INPUT.MAX_SIZE_TEST == 144
    # a dataset of one's own keeps the config's sizes, which are those of the 128 px scenes of
    # the default size: its detectors are configured as they were measured
    own = config(small, False)
    assert own.INPUT.MIN_SIZE_TEST == 128 and list(own.INPUT.MIN_SIZE_TRAIN) == [112, 128, 144]
    assert config(default, True).dump() == config(default, False).dump()
    # the user's overrides come last
    assert config(small, True, ("INPUT.MIN_SIZE_TEST", "64")).INPUT.MIN_SIZE_TEST == 64


def test_a_run_may_add_rows_to_a_finished_one_but_not_change_its_iterations(tmp_path):
    from ovdet.ovbench.resume import check_same_inputs, run_inputs

    small = SIZES["small"]
    with_rows = small.with_fine_tuning(100)

    def check(spec, seed=0):
        check_same_inputs(tmp_path, run_inputs(None, spec, seed, None, ()))

    check(small)
    check(with_rows)  # the fine-tuned rows added: the finished ones are reused
    recorded = json.loads((tmp_path / "inputs.json").read_text())["iterations"]
    assert recorded == {d.name: with_rows.iters(d.name) for d in DETECTORS}
    check(small)  # and a run of fewer rows reuses them too
    with pytest.raises(ConfigError, match=r"the iterations of vild_weak \(100, now 50\)"):
        check(small.with_fine_tuning(50))
    with pytest.raises(ConfigError, match="the iterations of closed_set"):
        check(replace(small, detector_iters_overrides=(("closed_set", 7),)))
    with pytest.raises(ConfigError, match=r"\(seed differ\)"):
        check(small, seed=1)


def test_stage_workers_share_out_the_cores(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert stage_workers("cpu") == (2, 8)  # two trainings side by side
    assert stage_workers("cuda") == (1, 16)  # one GPU: one at a time
    assert stage_workers("cpu", workers=4) == (4, 4)
    assert stage_workers("cpu", threads=3) == (2, 3)
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    assert stage_workers("cpu") == (1, 1)


def test_the_detectors_left_out_are_named_on_one_line(tmp_path, caplog):
    from ovdet.ovbench.data import BenchmarkData
    from ovdet.ovbench.plan import FINE_TUNED
    from ovdet.ovbench.schedule import stage_tasks

    data = BenchmarkData(tmp_path)
    for weak in ("weak_labels", "weak_captions"):  # the image-labelled data is there
        data.path(weak).parent.mkdir(parents=True, exist_ok=True)
        data.path(weak).write_text("{}")

    def left_out(size) -> list[str]:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="ovdet.ovbench"):
            tasks = stage_tasks(tmp_path, data, "local-dir:c", size, 0, "cpu", False, ())
        assert {t.name for t in tasks} == {"clip"} | _trained(size)
        return [m for m in caplog.messages if "leaving out" in m]

    lines = left_out(SIZES["small"])  # the five fine-tuned detectors: 0 iterations
    assert len(lines) == 1 and "(0 iterations at this size)" in lines[0]
    names = lines[0].split("leaving out ")[1].split(" (")[0].split(", ")
    assert sorted(names) == sorted(FINE_TUNED)
    no_vild = replace(SIZES["default"], detector_iters_overrides=(("vild", 0),))
    assert left_out(no_vild) == [
        "stage 2: leaving out vild (0 iterations at this size)",
        "stage 2: leaving out vild_weak, vild_longer (the detector they start from is left out)",
    ]
    assert left_out(SIZES["default"]) == []


def test_match_detections_counts_each_object_once():
    gt_boxes = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]])
    gt_labels = torch.tensor([1, 2])
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 11], [20, 20, 30, 30], [40, 40, 50, 50]])
    labels = torch.tensor([1, 1, 3, 1])
    scores = torch.tensor([0.5, 0.9, 0.8, 0.7])
    right, found = match_detections(boxes, labels, scores, gt_boxes, gt_labels)
    # The higher-scored duplicate takes the object; the wrong class and the stray box do not.
    assert right.tolist() == [False, True, False, False]
    assert found.tolist() == [True, False]


def test_best_f1_threshold():
    scores = torch.tensor([0.9, 0.8, 0.7, 0.3, 0.2])
    right = torch.tensor([True, True, False, True, False])
    # F1 of the prefixes with 4 objects: 0.4, 0.667, 0.571, 0.75, 0.667 -> keep down to 0.3.
    assert best_f1_threshold(scores, right, num_objects=4) == pytest.approx(0.3)
    assert best_f1_threshold(scores, torch.zeros(5, dtype=torch.bool), 4) == 1.0


def _write_own_dataset(root: Path) -> None:
    """A layout of our own: train/, val/, text/captions.csv (comma, 'image' and 'caption')."""
    write_toy_dataset(root / "train", 24, seed=1)
    write_toy_dataset(root / "val", 6, seed=2)
    (root / "split.json").write_text(
        json.dumps({"base": ["red square", "blue circle"], "novel": ["green square"]})
    )
    names = {cid: name for name, cid, _, _ in TOY_CLASSES}
    data = json.loads((root / "train" / "instances.json").read_text())
    files = {im["id"]: im["file_name"] for im in data["images"]}
    crops = root / "text" / "crops"
    crops.mkdir(parents=True)
    rows = []
    for i, ann in enumerate(data["annotations"] * 3):
        x, y, w, h = ann["bbox"]
        image = Image.open(root / "train" / "images" / files[ann["image_id"]])
        crop = image.crop((x - w / 4, y - h / 4, x + w * 1.25, y + h * 1.25)).resize((32, 32))
        crop.save(crops / f"{i}.png")
        rows.append({"image": f"crops/{i}.png", "caption": f"a {names[ann['category_id']]}"})
    with open(root / "text" / "captions.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["image", "caption"])
        writer.writeheader()
        writer.writerows(rows)
    # image labels, no boxes (Detic's pos_category_ids), on the same crops
    ids = {name: cid for cid, name in names.items()}
    images = [
        {"id": i + 1, "file_name": r["image"], "width": 32, "height": 32,
         "pos_category_ids": [ids[r["caption"][2:]]]}
        for i, r in enumerate(rows)
    ]  # fmt: skip
    (root / "text" / "labels.json").write_text(
        json.dumps({"images": images, "annotations": [], "categories": data["categories"]})
    )


def _benchmark(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "tools" / "benchmark_synthetic.py"), "--small",
         "--no-progress", *args],
        capture_output=True, text=True, timeout=1800,
    )  # fmt: skip


@pytest.mark.slow
def test_benchmark_runs_on_a_dataset_in_its_own_layout(tmp_path):
    data, out = tmp_path / "mine", tmp_path / "out"
    _write_own_dataset(data)
    args = [
        "--data", str(data), "--output", str(out),
        "--train-json", "train/instances.json", "--train-images", "train/images",
        "--val-json", "val/instances.json", "--val-images", "val/images",
        "--captions", "text/captions.csv", "--image-column", "image",
        "--caption-column", "caption", "--csv-separator", ",",
        "--weak-labels", "text/labels.json", "--weak-images", "text",
        "--weak-captions", "text/none.json",
        "--iters", "2", "--fine-tune-iters", "1", "--clip-epochs", "1",
        "--clip-batch-size", "32", "--picture-thresh", "0.0", "--workers", "2", "--threads", "1",
        "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "64",
        "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "64", "SOLVER.IMS_PER_BATCH", "2",
    ]  # fmt: skip
    proc = _benchmark(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "results.json").read_text())
    # no captions of image-labelled images: the row with the caption loss is skipped
    trained = {d.name for d in DETECTORS}  # not the opt-in F-VLM rows
    expected = {m.key for m in METHODS if m.detector in trained} - {"vild_text_captions"}
    assert set(report["metrics"]) == expected
    assert report["data"]["train_json"] == str(data / "train" / "instances.json")
    # No labelled crops in this dataset: CLIP's zero-shot accuracy is measured on the val boxes.
    zero_shot = report["clip_zero_shot"]
    val = json.loads((data / "val" / "instances.json").read_text())
    assert zero_shot["on"].startswith("validation boxes")
    assert zero_shot["num_crops"] == len(val["annotations"])
    # The closed-set model names base classes only.
    assert report["metrics"]["closed_set"]["novel"]["AP50"] == 0.0
    assert len(report["targets"]) == 5  # with the best image-label row's two
    findings = report["novel_findings"]
    novel_id = next(c["id"] for c in val["categories"] if c["name"] == "green square")
    assert findings["novel_objects"] == sum(
        a["category_id"] == novel_id for a in val["annotations"]
    )
    assert 0 <= findings["novel_right"] <= findings["novel_detections"]
    assert len(findings["pictures"]) == 6 and Path(findings["overview"]).is_file()
    assert "Novel objects found by" in proc.stdout
    log = (out / "log.txt").read_text()
    assert "stage 2: training vild_text" in log and "iter 2/2  total_loss" in log
    # Two worker processes trained the detectors; their lines carry the detector's name.
    assert "on 2 worker processes (torch threads per worker: 1)" in log
    assert "[vild_text] iter 2/2  total_loss" in log and "[closed_set] iter 2/2" in log
    assert "skipping vild_text_captions: the dataset has no weak_captions" in log
    weak_config = (out / "vild_text_labels" / "config.yaml").read_text()
    assert f"\n  WEIGHTS: {out / 'vild_text' / 'model_final.pt'}\n" in weak_config  # fine-tuned
    assert "\n  ACCUMULATE_STEPS: 2\n" in weak_config  # a box and an image-labelled batch a step
    assert "\n  MAX_ITER: 1\n" in weak_config and "[vild_text_labels] iter 1/1  total_loss" in log
    labelled = json.loads((data / "text" / "labels.json").read_text())["images"]
    assert f"Weak supervision: {len(labelled)} image-labelled images" in log

    # A re-run reuses every stage; other inputs in the same folder are refused.
    rerun = _benchmark(*args)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "stage 2: training" not in rerun.stderr and "reusing" in rerun.stderr
    assert "stage 3: evaluating" not in rerun.stderr
    # A detector retrained since its evaluation (here: other weights) is evaluated again.
    shutil.copy(out / "vild_text_longer" / "model_final.pt", out / "vild_text_labels")
    rescored = _benchmark(*args)
    assert rescored.returncode == 0, rescored.stderr[-3000:]
    assert rescored.stderr.count("stage 3: evaluating") == 1
    assert "scored another" in rescored.stderr
    assert "evaluating ViLD-text + image labels\n" in rescored.stderr
    metrics = json.loads((out / "results.json").read_text())["metrics"]
    assert metrics["vild_text_labels"] == metrics["vild_text_longer"]
    other = _benchmark(*[a if a != "2" else "3" for a in args])
    assert other.returncode == 2
    assert "other inputs" in other.stderr and "Traceback" not in other.stderr


def test_missing_dataset_files_are_named_with_their_flags(tmp_path):
    proc = _benchmark("--data", str(tmp_path), "--output", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert "--train-json" in proc.stderr and "--captions" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert np.sum([line.startswith("error:") for line in proc.stderr.splitlines()]) == 1

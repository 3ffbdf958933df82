"""Tests of the ``ovdet-evaluate`` command line (ovdet.cli.evaluate and tools/evaluate.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ovdet.cli.evaluate import build_parser, main

REPO = Path(__file__).resolve().parents[2]

CATEGORIES = [(1, "apple"), (2, "banana"), (3, "dog")]
BOXES = [(1, 1, [10, 10, 50, 40]), (1, 3, [100, 100, 60, 80]), (2, 2, [30, 30, 70, 50])]


def _gt(lvis: bool = False) -> dict:
    gt = {
        "images": [{"id": i, "file_name": f"{i}.jpg", "height": 200, "width": 200} for i in (1, 2)],
        "categories": [{"id": cid, "name": name} for cid, name in CATEGORIES],
        "annotations": [
            {"id": n + 1, "image_id": i, "category_id": c, "bbox": b, "area": b[2] * b[3]}
            for n, (i, c, b) in enumerate(BOXES)
        ],
    }
    if lvis:
        for cat, freq in zip(gt["categories"], "fcr"):
            cat.update(
                frequency=freq, synset=f"{cat['name']}.n.01", image_count=1, instance_count=1
            )
        for img in gt["images"]:
            img.update(neg_category_ids=[], not_exhaustive_category_ids=[])
    return gt


@pytest.fixture
def files(tmp_path):
    """Paths of a ground truth, a split and perfect detections, written to tmp_path."""

    def write(name, data):
        path = tmp_path / name
        path.write_text(json.dumps(data))
        return str(path)

    dets = [{"image_id": i, "category_id": c, "bbox": b, "score": 0.8} for i, c, b in BOXES]
    return {
        "gt": write("gt.json", _gt()),
        "lvis_gt": write("lvis.json", _gt(lvis=True)),
        "split": write("split.json", {"base": ["apple", "banana"], "novel": ["dog"]}),
        "results": write("dets.json", dets),
        "no_dog": write("no_dog.json", [d for d in dets if d["category_id"] != 3]),
        "bad_results": write("bad.json", [*dets, {**dets[0], "category_id": 9}]),
    }


def test_end_to_end(files, tmp_path, capsys):
    out = tmp_path / "out" / "metrics.json"
    argv = ["--gt", files["gt"], "--split", files["split"], "--results", files["no_dog"]]
    assert main([*argv, "--output", str(out)]) == 0

    stdout = capsys.readouterr().out.splitlines()
    assert stdout[1].split() == ["group", "AP", "AP50", "#categories"]
    assert stdout[2].split() == ["all", "66.7", "66.7", "3"]
    assert stdout[3].split() == ["base", "100.0", "100.0", "2"]
    assert stdout[4].split() == ["novel", "0.0", "0.0", "1"]

    metrics = json.loads(out.read_text())
    assert metrics["base"]["AP"] == pytest.approx(1.0)
    assert metrics["novel"]["AP"] == 0.0
    assert metrics["per_category"]["dog"]["kind"] == "novel"
    assert metrics["num_detections"] == 2

    # Overwriting leaves no temporary file behind.
    argv = ["--gt", files["gt"], "--split", files["split"], "--results", files["results"]]
    assert main([*argv, "--output", str(out)]) == 0
    assert json.loads(out.read_text())["novel"]["AP"] == pytest.approx(1.0)
    assert sorted(os.listdir(out.parent)) == ["log.txt", "metrics.json"]  # no temporary file


def test_lvis_ground_truth_uses_lvis_evaluation(files, tmp_path, capsys):
    out = tmp_path / "lvis_metrics.json"
    assert main(["--gt", files["lvis_gt"], "--results", files["no_dog"], "--output", str(out)]) == 0
    metrics = json.loads(out.read_text())
    assert metrics["split"] == "lvis"
    assert metrics["APr"] == 0.0  # "dog" is the rare category
    assert metrics["APf"] == pytest.approx(1.0)
    assert "APr 0.0" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--gt": "missing.json"}, "cannot read annotation file"),
        ({"--results": "missing.json"}, "cannot read results file"),
        ({"--results": "bad_results"}, "entry 3: unknown category_id 9"),
        ({"--split": "no_such_split"}, "neither 'ovcoco', 'lvis' nor an existing file"),
        ({"--split": "lvis"}, "LVIS"),
    ],
)
def test_bad_input_exits_2(files, tmp_path, capsys, change, message):
    def resolve(value: str) -> str:  # a key of `files`, a missing file, or a literal
        return files.get(value, str(tmp_path / value) if value.endswith(".json") else value)

    args = {"--gt": "gt", "--split": "split", "--results": "results", **change}
    argv = [x for flag, value in args.items() for x in (flag, resolve(value))]
    out = tmp_path / "metrics.json"
    assert main([*argv, "--output", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: ")
    assert message in captured.err
    assert len(captured.err.strip().splitlines()) == 1
    assert not out.exists()


def test_every_option_has_help():
    parser = build_parser()
    for action in parser._actions:
        assert action.help, action.option_strings
    with pytest.raises(SystemExit):  # --results and --checkpoint are mutually exclusive
        parser.parse_args(["--gt", "g.json", "--results", "r.json", "--checkpoint", "c.pth"])


def test_tools_wrapper_reports_error_without_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    missing = str(tmp_path / "missing.json")
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "tools" / "evaluate.py"),
            "--gt",
            missing,
            "--results",
            missing,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: cannot read annotation file")
    assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------- any checkpoint, any method


@pytest.fixture(scope="module")
def closed_set_checkpoint(tmp_path_factory, toy_dataset, tiny_clip):
    """torchvision's closed-set Faster R-CNN, trained 2 iterations on the toy base classes."""
    from ovdet.config import load_config
    from ovdet.tv.engine.trainer import Trainer
    from tests.conftest import TINY_CONFIG, toy_overrides

    out = tmp_path_factory.mktemp("closed_set")
    overrides = toy_overrides(toy_dataset, tiny_clip, out, max_iter=2)
    cfg = load_config(TINY_CONFIG, [*overrides, "MODEL.META_ARCHITECTURE", "FasterRCNN"])
    Trainer(cfg, progress=False).train()
    return out / "model_final.pt"


def _toy_args(toy, *more):
    return ["--gt", str(toy / "instances.json"), "--image-root", str(toy / "images"),
            "--split", str(toy / "split.json"), "--no-progress", *more]  # fmt: skip


@pytest.mark.slow
def test_closed_set_checkpoint_is_evaluated(closed_set_checkpoint, toy_dataset, tmp_path):
    from ovdet.ovbench.predict import predict_with_method

    out = tmp_path / "metrics.json"
    args = _toy_args(toy_dataset, "--checkpoint", str(closed_set_checkpoint), "--score-thresh",
                     "0.001", "--output", str(out))  # fmt: skip
    assert main(args) == 0
    metrics = json.loads(out.read_text())
    assert metrics["num_detections"] > 0
    assert metrics["novel"]["AP"] == 0.0  # it cannot name a class it was not trained on
    assert (tmp_path / "log.txt").is_file()
    results = predict_with_method(
        closed_set_checkpoint, toy_dataset / "instances.json", toy_dataset / "images",
        score_thresh=0.001, progress=False,
    )  # fmt: skip
    base_ids = {7, 3}  # red square, blue circle (conftest.TOY_CLASSES); green square is novel
    assert results and {r["category_id"] for r in results} <= base_ids
    # The methods that need a CLIP say so in one line.
    assert main(_toy_args(toy_dataset, "--checkpoint", str(closed_set_checkpoint),
                          "--clip-rescoring")) == 2  # fmt: skip


@pytest.mark.slow
def test_every_method_of_the_table_is_evaluated(trained_checkpoint, toy_dataset, capsys):
    from ovdet.ovbench.predict import predict_with_method

    scores = {}
    for flag, method in (("", "detector"), ("--clip-rescoring", "clip_rescoring"),
                         ("--clip-on-proposals", "clip_on_proposals")):  # fmt: skip
        args = _toy_args(toy_dataset, "--checkpoint", str(trained_checkpoint))
        assert main([*args, flag] if flag else args) == 0, method
        table = capsys.readouterr().out
        assert "novel" in table and "base" in table
        results = predict_with_method(
            trained_checkpoint, toy_dataset / "instances.json", toy_dataset / "images", method,
            progress=False,
        )  # fmt: skip
        scores[method] = sorted(r["score"] for r in results)
    assert scores["clip_rescoring"] != scores["detector"]
    assert scores["clip_on_proposals"] != scores["detector"]


@pytest.mark.slow
def test_clip_zero_shot_accuracy_on_ground_truth_boxes(tiny_clip, toy_dataset, tmp_path, capsys):
    out = tmp_path / "zero_shot.json"
    assert main(_toy_args(toy_dataset, "--clip-zero-shot", tiny_clip, "--output", str(out))) == 0
    accuracy = json.loads(out.read_text())["zero_shot_accuracy"]
    boxes = json.loads((toy_dataset / "instances.json").read_text())["annotations"]
    assert accuracy["num_crops"] == len(boxes)
    for group in ("all", "base", "novel"):
        assert 0.0 <= accuracy[group] <= 1.0
    assert "CLIP zero-shot top-1 accuracy" in capsys.readouterr().out


def test_method_flags_need_a_checkpoint(files, capsys):
    argv = ["--gt", files["gt"], "--results", files["results"], "--clip-rescoring"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "need --checkpoint" in err


@pytest.mark.parametrize("tool", ["evaluate", "infer"])
def test_the_old_ensemble_flag_names_clip_rescoring(tool, files, tmp_path, capsys):
    from ovdet.cli import infer

    if tool == "evaluate":
        run = main
        argv = ["--gt", files["gt"], "--results", files["results"], "--ensemble"]
    else:
        run = infer.main
        argv = ["--checkpoint", str(tmp_path / "m.pt"), "--classes", "dog", "--input",
                files["gt"], "--output", str(tmp_path / "out"), "--ensemble"]  # fmt: skip
    assert run(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == "error: --ensemble was renamed: use --clip-rescoring"
    assert not (tmp_path / "out").exists()

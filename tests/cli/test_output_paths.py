"""``ovdet-infer`` checks every output path before the work, and never loses finished results to a
failing secondary output: results.json is written first, a failing ``--coco-out`` after it is one
``error:`` line naming the safe results (docs/RELIABILITY.md)."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from ovdet.annotate.datasets import CocoDatasetWriter
from ovdet.cli import infer as infer_cli
from tests.conftest import assert_one_line_error


@pytest.fixture()
def images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for i, colour in enumerate([(200, 20, 20), (20, 20, 200)]):
        Image.new("RGB", (48, 40), colour).save(folder / f"{i}.png")
    return folder


def _argv(checkpoint, images, out, *extra) -> list[str]:
    return ["--checkpoint", str(checkpoint), "--classes", "red square", "--input", str(images),
            "--output", str(out), "--score-thresh", "0", "--no-progress", *extra]  # fmt: skip


def test_output_paths_that_cannot_be_written_fail_before_the_model_loads(
    untrained_checkpoint, images, tmp_path, capsys, no_model
):
    folder = tmp_path / "existing"
    folder.mkdir()
    out = tmp_path / "out"
    assert infer_cli.main(_argv(untrained_checkpoint, images, out, "--coco-out", str(folder))) == 2
    assert_one_line_error(
        capsys.readouterr().err,
        f"--coco-out {folder} is a folder; give a file name such as auto_labels.json",
    )
    assert not (out / "log.txt").exists()
    (out / "results.json").mkdir(parents=True)
    assert infer_cli.main(_argv(untrained_checkpoint, images, out)) == 2
    assert_one_line_error(capsys.readouterr().err, f"--output {out} holds a folder results.json")
    same = ["--coco-out", str(tmp_path / "o2" / "results.json")]
    assert infer_cli.main(_argv(untrained_checkpoint, images, tmp_path / "o2", *same)) == 2
    assert_one_line_error(capsys.readouterr().err, "would overwrite results.json")
    (tmp_path / "labels").write_text("a file where the --yolo-out folder goes")
    yolo = ["--yolo-out", str(tmp_path / "labels")]
    assert infer_cli.main(_argv(untrained_checkpoint, images, tmp_path / "o3", *yolo)) == 2
    assert_one_line_error(capsys.readouterr().err, f"output folder {tmp_path / 'labels'}")


def test_a_failing_coco_out_keeps_the_results(
    untrained_checkpoint, images, tmp_path, capsys, monkeypatch
):
    """The --coco-out path passes the early check, then becomes a folder during the run (another
    process, a mistyped command in a second shell): results.json is written all the same."""
    coco_out = tmp_path / "auto.json"
    add = CocoDatasetWriter.add

    def add_then_block_the_path(self, *args, **kwargs):
        coco_out.mkdir(exist_ok=True)
        return add(self, *args, **kwargs)

    monkeypatch.setattr(CocoDatasetWriter, "add", add_then_block_the_path)
    out = tmp_path / "out"
    argv = _argv(untrained_checkpoint, images, out, "--coco-out", str(coco_out))
    assert infer_cli.main(argv) == 2
    captured = capsys.readouterr()
    assert_one_line_error(
        captured.err,
        f"--coco-out {coco_out} could not be written (Is a directory); the detections are in "
        f"{out / 'results.json'}",
    )
    results = json.loads((out / "results.json").read_text())
    assert len(results["images"]) == 2 and results["detections"]
    assert "2 image(s) processed" in captured.out

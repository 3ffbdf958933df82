"""Numbers that parse but mean nothing (``nan``, ``inf``, an IoU of 2) are one ``error:`` line
before any work, in ``ovdet-infer``, ``ovdet-evaluate`` and ``ovdet-search evaluate``
(docs/RELIABILITY.md)."""

from __future__ import annotations

import pytest
from PIL import Image

from ovdet.cli import evaluate as evaluate_cli
from ovdet.cli import infer as infer_cli
from ovdet.utils.errors import ImageError
from tests.conftest import assert_one_line_error


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--fps", "nan"], "--fps must be 0 (every frame) or positive, got nan"),
        (["--fps", "inf"], "--fps must be 0 (every frame) or positive, got inf"),
        (["--score-thresh", "nan"], "--score-thresh must be a number in [0, 1], got nan"),
        (["--score-thresh", "2"], "--score-thresh must be a number in [0, 1], got 2.0"),
        (["--label-thresh", "nan"], "--label-thresh must be a number in [0, 1], got nan"),
    ],
)
def test_infer_refuses_meaningless_numbers_before_the_model_loads(
    extra, message, tmp_path, capsys, no_model
):
    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    out = tmp_path / "out"
    argv = ["--checkpoint", str(tmp_path / "x.pt"), "--classes", "red square", "--input",
            str(tmp_path / "x.png"), "--output", str(out), *extra]  # fmt: skip
    assert infer_cli.main(argv) == 2
    assert assert_one_line_error(capsys.readouterr().err) == f"error: {message}"
    assert not (out / "log.txt").exists()


@pytest.mark.parametrize("fps", [float("nan"), float("inf"), 0.0, -1.0])
def test_video_reader_refuses_a_sampling_rate_that_is_not_a_positive_number(fps, tmp_path):
    from ovdet.video.io import VideoReader

    with pytest.raises(ImageError, match="the sampling rate must be a positive number"):
        VideoReader(tmp_path / "clip.mp4", fps)


@pytest.mark.parametrize(
    "value, message",
    [
        ("nan", "--score-thresh must be a number in [0, 1], got nan"),
        ("2", "--score-thresh must be a number in [0, 1], got 2.0"),
        ("-0.5", "--score-thresh must be a number in [0, 1], got -0.5"),
    ],
)
def test_evaluate_refuses_a_meaningless_score_threshold(value, message, tmp_path, capsys):
    argv = ["--gt", str(tmp_path / "gt.json"), "--checkpoint", str(tmp_path / "x.pt"),
            "--image-root", str(tmp_path), "--score-thresh", value]  # fmt: skip
    assert evaluate_cli.main(argv) == 2
    assert assert_one_line_error(capsys.readouterr().err) == f"error: {message}"


@pytest.mark.parametrize(
    "value, message",
    [
        ("2", "--iou must be a number in (0, 1], got 2.0"),
        ("0", "--iou must be a number in (0, 1], got 0.0"),
        ("nan", "--iou must be a number in (0, 1], got nan"),
    ],
)
def test_search_evaluate_refuses_an_iou_outside_0_1(value, message, tmp_path, capsys):
    pytest.importorskip("faiss", reason="faiss-cpu is not installed")
    from ovdet.cli.search import main

    argv = ["evaluate", "--index", str(tmp_path / "i.index"), "--gt", str(tmp_path / "gt.json"),
            "--images", str(tmp_path), "--iou", value]  # fmt: skip
    assert main(argv) == 2
    assert assert_one_line_error(capsys.readouterr().err) == f"error: {message}"

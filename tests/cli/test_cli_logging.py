"""Logging that speaks: INFO lines by default, --verbose / --quiet, log.txt, --no-progress."""

from __future__ import annotations

import importlib
import logging
import subprocess
import sys

import pytest

from ovdet.cli.common import close_log_file, log_to_file, setup_logging
from ovdet.utils.progress import format_eta, progress_line
from tests.conftest import REPO, TINY_CONFIG, toy_overrides

TOOLS = [
    "benchmark_synthetic",
    "convert_checkpoint",
    "demo",
    "evaluate",
    "export_onnx",
    "infer",
    "make_synthetic",
    "precompute_clip_embeddings",
    "pretrain_clip",
    "search",
    "train",
]
# No bar at the top level: convert_checkpoint has no long loop; search has --no-progress on index.
NO_PROGRESS_BAR = {"convert_checkpoint", "search"}


@pytest.fixture
def restore_logging():
    yield
    close_log_file()
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_ovdet_cli_console", False):
            root.removeHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("ovdet").setLevel(logging.NOTSET)


@pytest.mark.parametrize("tool", TOOLS)
def test_every_tool_has_the_logging_and_progress_flags(tool):
    parser = importlib.import_module(f"ovdet.cli.{tool}").build_parser()
    flags = {flag for action in parser._actions for flag in action.option_strings}
    expected = {"--verbose", "--quiet"}
    if tool not in NO_PROGRESS_BAR:
        expected.add("--no-progress")
    assert expected <= flags, tool


def test_levels_and_log_file(tmp_path, restore_logging, capsys):
    setup_logging(quiet=True)
    logging.getLogger("ovdet.x").info("hidden info")
    logging.getLogger("ovdet.x").warning("shown warning")
    err = capsys.readouterr().err
    assert "shown warning" in err and "hidden info" not in err

    setup_logging(verbose=True, log_dir=tmp_path)
    logging.getLogger("ovdet.x").debug("debug line")
    logging.getLogger("ovdet.x").info("info line")
    close_log_file()
    logging.getLogger("ovdet.x").info("after close")
    err = capsys.readouterr().err
    text = (tmp_path / "log.txt").read_text()
    for line in ("debug line", "info line"):
        assert line in err and line in text
    assert "after close" in err and "after close" not in text
    # One set-up at a time: a second call replaces the console handler (no doubled lines).
    setup_logging()
    logging.getLogger("ovdet.x").info("once")
    assert capsys.readouterr().err.count("once") == 1
    assert log_to_file(tmp_path / "new").name == "log.txt"


def test_the_console_tells_ovdets_story_and_log_txt_keeps_every_line(
    tmp_path, restore_logging, capsys, tiny_clip
):
    """At the default level the console shows ovdet's lines and the libraries' warnings, each
    once; the libraries' INFO lines (open_clip's loader, open_clip_train's model printout) and
    the repeats go to log.txt only. --verbose shows everything."""
    import open_clip

    from ovdet.clip.spec import ClipSpec

    setup_logging(log_dir=tmp_path)
    stages = logging.getLogger("ovdet.ovbench.stages")
    stages.info("==== stage 1: CLIP zero-shot accuracy")
    open_clip.create_model(ClipSpec.parse(tiny_clip).model)  # its loader logs on the root logger
    logging.getLogger("open_clip_train").info("  (visual): ModifiedResNet(")
    logging.getLogger("some.library").warning("a library's warning")
    for task in ("vild", "vild_text", "vild_weak"):  # the same line from three worker tasks
        logging.getLogger("ovdet.data.coco").warning("[%s] train.json: 2 images dropped", task)
        stages.info("[%s] ==== stage 2: training %s", task, task)
    close_log_file()
    err = capsys.readouterr().err
    log = (tmp_path / "log.txt").read_text()
    for line in ("==== stage 1: CLIP zero-shot accuracy", "a library's warning",
                 "[vild_weak] ==== stage 2: training vild_weak"):  # fmt: skip
        assert line in err and line in log
    for chatter in ("Parsing model identifier", "ModifiedResNet"):
        assert chatter not in err and chatter in log
    assert " INFO root: " not in err and " INFO open_clip_train: " not in err
    assert err.count("2 images dropped") == 1 and log.count("2 images dropped") == 3

    setup_logging(verbose=True)
    logging.getLogger().info("Parsing model identifier. Schema: local-dir")
    assert "Parsing model identifier" in capsys.readouterr().err


def test_progress_line():
    metrics = {"iteration": 20, "total_loss": 1.5, "loss_cls": 1.0, "loss_box": 0.5, "lr": 0.002}
    line = progress_line(metrics, total=200, elapsed=10.0, done=20)
    assert line.startswith("iter 20/200  total_loss 1.5  loss_cls 1  loss_box 0.5  lr 0.002")
    assert line.endswith("0.50 s/it  ETA 0:01:30")  # 180 iterations left at 0.5 s
    assert format_eta(3725.4) == "1:02:05"


@pytest.mark.slow
def test_train_without_progress_bar_logs_losses_to_console_and_log_file(
    toy_dataset, tiny_clip, tmp_path
):
    out = tmp_path / "run"
    overrides = toy_overrides(toy_dataset, tiny_clip, out, max_iter=2)
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "train.py"), "--config", TINY_CONFIG,
         "--no-progress", *overrides],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    log = (out / "log.txt").read_text()
    for text in (proc.stderr, log):
        assert "iter 1/2  total_loss" in text and "iter 2/2  total_loss" in text
        assert "  loss_" in text and "ETA" in text
        assert "Loaded instances.json" in text  # the data found

"""A checkpoint written by a run started with a relative CLIP spec (the benchmark's
``local-dir:`` CLIP, relative to the folder it started in) works with ``ovdet-infer
--checkpoint`` from any other folder, without ``--clip``: the trainer saves its config with
absolute paths (:func:`ovdet.tv.engine.config_paths.with_absolute_paths`, which the benchmark's
training stage goes through)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ovdet.cli import infer as infer_cli
from ovdet.clip.spec import ClipSpec
from ovdet.config import load_config
from tests.conftest import TINY_CONFIG, toy_overrides


@pytest.mark.slow
def test_infer_from_another_folder_needs_no_clip(tmp_path, monkeypatch, toy_dataset, tiny_clip):
    from ovdet.tv.engine.trainer import Trainer

    start = tmp_path / "start"
    shutil.copytree(toy_dataset, start / "toy")
    spec = ClipSpec.parse(tiny_clip)
    shutil.copytree(spec.local_dir, start / "clip")
    shutil.copy(spec.weights, start / "clip" / "weights.pt")
    monkeypatch.chdir(start)
    relative = toy_overrides(Path("toy"), "local-dir:clip:clip/weights.pt", Path("run"), 1)
    Trainer(load_config(TINY_CONFIG, relative), progress=False).train()

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    image = next((start / "toy" / "images").iterdir())
    argv = ["--checkpoint", str(start / "run" / "model_final.pt"), "--classes", "red square",
            "--input", str(image), "--output", "out", "--no-draw", "--no-progress"]  # fmt: skip
    assert infer_cli.main(argv) == 0
    results = json.loads((elsewhere / "out" / "results.json").read_text())
    assert [Path(i["file_name"]).name for i in results["images"]] == [image.name]

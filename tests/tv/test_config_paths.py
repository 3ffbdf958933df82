"""Configs written next to a model name their files by absolute paths: a run's config.yaml and
checkpoint work from any folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from PIL import Image

from ovdet.clip.spec import ClipSpec
from ovdet.config import config_from_dict, load_config
from ovdet.tv.engine.config_paths import with_absolute_paths
from tests.conftest import TINY_CONFIG, toy_overrides


def test_paths_become_absolute_and_names_stay(tmp_path, monkeypatch):
    (tmp_path / "data" / "images").mkdir(parents=True)
    (tmp_path / "data" / "split.json").write_text("{}")
    (tmp_path / "clip").mkdir()
    monkeypatch.chdir(tmp_path)
    cfg = load_config(TINY_CONFIG, [
        "MODEL.OVDET.CLIP", "local-dir:clip:clip/weights.pt",
        "DATASETS.TRAIN_JSON", "data/train.json", "DATASETS.TRAIN_IMAGES", "./data/images",
        "DATASETS.SPLIT", "data/split.json", "DATASETS.WEAK_VOCABULARY", "red circle,blue",
        "MODEL.OVDET.TEMPLATES", "vild", "OUTPUT_DIR", "runs/x",
    ])  # fmt: skip
    saved = with_absolute_paths(cfg)
    assert saved.is_frozen() and cfg.DATASETS.TRAIN_JSON == "data/train.json"  # a copy
    clip = ClipSpec.parse(saved.MODEL.OVDET.CLIP)
    assert (clip.local_dir, clip.weights) == (tmp_path / "clip", str(tmp_path / "clip/weights.pt"))
    assert Path(saved.DATASETS.TRAIN_JSON) == tmp_path / "data" / "train.json"
    assert Path(saved.DATASETS.TRAIN_IMAGES) == tmp_path / "data" / "images"
    assert Path(saved.DATASETS.SPLIT) == tmp_path / "data" / "split.json"  # an existing file
    assert Path(saved.OUTPUT_DIR) == tmp_path / "runs" / "x"
    # names: a template set, class names, an empty key, a pretrained tag
    assert saved.MODEL.OVDET.TEMPLATES == "vild" and saved.MODEL.WEIGHTS == ""
    assert saved.DATASETS.WEAK_VOCABULARY == "red circle,blue"
    named = with_absolute_paths(load_config(TINY_CONFIG, ["MODEL.OVDET.CLIP", "ViT-B-32:openai"]))
    assert named.MODEL.OVDET.CLIP == "ViT-B-32:openai"
    # transformers CLIPs: a folder is made absolute, a hub id kept
    assert str(ClipSpec.parse("hf:clip").absolute()) == f"hf:{tmp_path / 'clip'}"
    assert str(ClipSpec.parse("hf:openai/clip-vit").absolute()) == "hf:openai/clip-vit"
    assert with_absolute_paths(saved).dump() == saved.dump()  # absolute paths are kept
    # read back from another folder, the same files
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    loaded = config_from_dict(yaml.safe_load(saved.dump()))
    assert Path(loaded.DATASETS.SPLIT).is_file() and Path(loaded.DATASETS.TRAIN_IMAGES).is_dir()
    assert ClipSpec.parse(loaded.MODEL.OVDET.CLIP).local_dir == tmp_path / "clip"


@pytest.mark.slow
def test_a_run_started_with_relative_paths_trains_and_predicts_from_another_folder(
    tmp_path, monkeypatch, toy_dataset, tiny_clip
):
    """tools/train.py --config RUN/config.yaml and OVDetector.from_checkpoint work from a folder
    other than the one the run was started from, with relative paths on its command line."""
    from ovdet.api import OVDetector
    from ovdet.tv.engine.trainer import Trainer

    start = tmp_path / "start"
    shutil.copytree(toy_dataset, start / "toy")
    spec = ClipSpec.parse(tiny_clip)
    shutil.copytree(spec.local_dir, start / "clip")
    shutil.copy(spec.weights, start / "clip" / "weights.pt")
    monkeypatch.chdir(start)
    overrides = toy_overrides(Path("toy"), "local-dir:clip:clip/weights.pt", Path("run"), 1)
    Trainer(load_config(TINY_CONFIG, overrides), progress=False).train()
    saved = (start / "run" / "config.yaml").read_text()
    assert f"local-dir:{start / 'clip'}:{start / 'clip' / 'weights.pt'}" in saved

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(start / "run" / "config.yaml", ["SOLVER.MAX_ITER", "2", "OUTPUT_DIR", "re"])
    Trainer(cfg, progress=False).train()
    assert (elsewhere / "re" / "model_final.pt").is_file()
    detector = OVDetector.from_checkpoint(start / "run" / "model_final.pt")
    detector.set_classes(["red square", "green square"])
    detector.predict(Image.open(next((start / "toy" / "images").iterdir())))  # its CLIP found

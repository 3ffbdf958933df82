"""Fixtures of the detectron2 plugin tests: a tiny CLIP, generated data, the instant config.

Every test module here starts with ``pytest.importorskip("detectron2", ...)``, so the suite skips
with a clear reason where detectron2 is not installed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ovdet.config.catalog import CONFIG_DIR

CONFIGS = CONFIG_DIR / "d2"
INSTANT_CONFIG = CONFIGS / "instant_test.yaml"

# A tiny open_clip model: 32-px images, width 32, one layer per tower.
TINY_CLIP_CONFIG = {
    "model_cfg": {
        "embed_dim": 32,
        "vision_cfg": {
            "image_size": 32,
            "layers": 1,
            "width": 32,
            "patch_size": 16,
            "head_width": 16,
        },
        "text_cfg": {
            "context_length": 16,
            "vocab_size": 49408,
            "width": 32,
            "heads": 2,
            "layers": 1,
        },
    },
    "preprocess_cfg": {
        "mean": [0.48145466, 0.4578275, 0.40821073],
        "std": [0.26862954, 0.26130258, 0.27577711],
    },
}

# Generated data: coloured boxes. "grey box" is excluded by the split (in neither half).
CATEGORIES = [
    {"id": 1, "name": "red box"},
    {"id": 3, "name": "green box"},
    {"id": 7, "name": "blue box"},
    {"id": 8, "name": "grey box"},
]
COLOURS = {1: (220, 30, 30), 3: (30, 200, 40), 7: (40, 60, 230), 8: (128, 128, 128)}
SPLIT = {"base": ["red box", "green box"], "novel": ["blue box"], "excluded": ["grey box"]}
TRAIN_NAME, VAL_NAME = "ovdet_instant_train", "ovdet_instant_val"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: these tiny models run faster so on a shared machine (no contention).

    Module-scoped, so the setting is restored before tests outside this folder run.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> str:
    """A CLIP spec of a tiny open_clip model with fixed (seeded random) weights."""
    import open_clip

    root = tmp_path_factory.mktemp("tiny_clip")
    model_dir = root / "model"
    model_dir.mkdir()
    (model_dir / "open_clip_config.json").write_text(json.dumps(TINY_CLIP_CONFIG))
    torch.manual_seed(0)
    model = open_clip.create_model(f"local-dir:{model_dir}")
    checkpoint = root / "tiny_clip.pt"
    torch.save(model.state_dict(), checkpoint)
    return f"local-dir:{model_dir}:{checkpoint}"


def _write_split(root: Path, name: str, num_images: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    image_dir = root / name
    image_dir.mkdir()
    images, annotations = [], []
    for i in range(num_images):
        h, w = 64, 80
        pixels = np.full((h, w, 3), 245, dtype=np.uint8)
        image_id = 100 + i
        # Every image holds each of the first three classes once, and sometimes a grey box.
        cats = [1, 3, 7] + ([8] if i % 2 else [])
        for cat in cats:
            bw, bh = (int(v) for v in rng.integers(12, 24, size=2))
            x, y = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
            pixels[y : y + bh, x : x + bw] = COLOURS[cat]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": cat,
                    "bbox": [x, y, bw, bh],
                    "segmentation": [[x, y, x + bw, y, x + bw, y + bh, x, y + bh]],
                    "area": bw * bh,
                    "iscrowd": 0,
                }
            )
        file_name = f"{i:04d}.png"
        Image.fromarray(pixels).save(image_dir / file_name)
        images.append({"id": image_id, "file_name": file_name, "height": h, "width": w})
    json_file = root / f"{name}.json"
    dataset = {"images": images, "annotations": annotations, "categories": CATEGORIES}
    json_file.write_text(json.dumps(dataset))
    return json_file


@pytest.fixture(scope="session")
def instant_data(tmp_path_factory) -> dict:
    """Generated train (6 images) and val (3 images) sets, registered under the instant names."""
    from ovdet.d2 import register_ov_coco_dataset

    root = tmp_path_factory.mktemp("instant_data")
    split_file = root / "split.json"
    split_file.write_text(json.dumps(SPLIT))
    train_json = _write_split(root, "train", 6, seed=1)
    val_json = _write_split(root, "val", 3, seed=2)
    register_ov_coco_dataset(TRAIN_NAME, train_json, root / "train", str(split_file), True)
    register_ov_coco_dataset(VAL_NAME, val_json, root / "val", str(split_file), False)
    return {
        "root": root,
        "split_file": split_file,
        "train_json": train_json,
        "val_json": val_json,
        "train_name": TRAIN_NAME,
        "val_name": VAL_NAME,
    }


@pytest.fixture(scope="session")
def instant_config_file() -> Path:
    return INSTANT_CONFIG


@pytest.fixture(scope="session")
def text_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("text_cache")


@pytest.fixture(scope="session")
def instant_cfg(tiny_clip, instant_data, text_cache, tmp_path_factory):
    """A factory of the instant-test config with the tiny CLIP: ``instant_cfg(*overrides)``."""
    from ovdet.d2 import load_d2_config

    output = tmp_path_factory.mktemp("output")

    def make(*overrides: str):
        cfg = load_d2_config(
            str(INSTANT_CONFIG),
            [
                "MODEL.OVDET.CLIP",
                tiny_clip,
                "MODEL.OVDET.TEXT_CACHE_DIR",
                str(text_cache),
                "OUTPUT_DIR",
                str(output),
                *overrides,
            ],
        )
        return cfg

    return make

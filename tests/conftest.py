"""Shared fixtures: a tiny CLIP, a toy COCO-format dataset, and a briefly trained detector."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from ovdet.utils.allocator import keep_freed_memory

TINY_CLIP_CONFIG = {
    "model_cfg": {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16,
                       "head_width": 16},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2,
                     "layers": 1},
    },
    "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073],
                       "std": [0.26862954, 0.26130258, 0.27577711]},
}  # fmt: skip

# Toy classes: (name, COCO id, colour, shape). Ids are deliberately not positions.
TOY_CLASSES = [
    ("red square", 7, (220, 30, 30), "square"),
    ("blue circle", 3, (30, 60, 220), "circle"),
    ("green square", 11, (30, 200, 60), "square"),
]


def assert_one_line_error(err: str, *fragments: str) -> str:
    """A tool's failure: one ``error:`` line, the last of ``err``, with no traceback.

    Log lines the tool printed before failing (INFO and warnings go to stderr by default) may
    precede it. Returns the error line.
    """
    lines = err.strip().splitlines()
    assert lines and lines[-1].startswith("error: ") and "Traceback" not in err, err
    assert sum(line.startswith("error: ") for line in lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[-1], err
    return lines[-1]


def pytest_configure(config) -> None:
    """Under pytest-xdist (``make test`` runs ``-n auto``), the worker processes share the cores:
    each, and every tool it starts, gets its share of threads instead of all of them. The tests'
    in-process trainings keep freed memory for reuse, as the tools do (ovdet.utils.allocator)."""
    keep_freed_memory()
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        threads = str(max(1, (os.cpu_count() or 1) // workers))
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = threads
        torch.set_num_threads(int(threads))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Keep the text-embedding cache out of the user's home."""
    monkeypatch.setenv("OVDET_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))


def _saved_random_clip(
    root: Path, config: dict, prepare=lambda model: None, weights_dir: Path | None = None
) -> str:
    """A CLIP spec ``local-dir:ROOT:WEIGHTS_DIR/weights.pt`` of a random open_clip model of
    ``config`` (seeded), ``prepare``-d before its weights are saved (``weights_dir``: ``root``)."""
    import open_clip

    (root / "open_clip_config.json").write_text(json.dumps(config))
    weights = (weights_dir or root) / "weights.pt"
    torch.manual_seed(0)
    model = open_clip.create_model(f"local-dir:{root}")
    prepare(model)
    torch.save({"state_dict": model.state_dict()}, weights)
    return f"local-dir:{root}:{weights}"


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> str:
    """A CLIP spec ``local-dir:DIR:weights.pt`` of a tiny random model saved to a file (in a
    folder of its own, beside the config's)."""
    root = tmp_path_factory.mktemp("tiny_clip")
    weights = tmp_path_factory.mktemp("tiny_clip_weights")
    return _saved_random_clip(root, TINY_CLIP_CONFIG, weights_dir=weights)


#: A tiny ResNet CLIP (open_clip's ModifiedResNet, attention pool on 2 x 2 res5 cells): the CLIP
#: backbone of F-VLM (ovdet.core.clip_backbone).
TINY_RESNET_CLIP_CONFIG = {
    "model_cfg": {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 16, "head_width": 16},
        "text_cfg": TINY_CLIP_CONFIG["model_cfg"]["text_cfg"],
    },
    "preprocess_cfg": TINY_CLIP_CONFIG["preprocess_cfg"],
}


@pytest.fixture(scope="session")
def tiny_resnet_clip(tmp_path_factory) -> str:
    """A CLIP spec ``local-dir:DIR:weights.pt`` of a tiny random ResNet CLIP saved to a file."""

    def own_bn_statistics(model) -> None:  # as a trained CLIP's
        for module in model.visual.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)

    root = tmp_path_factory.mktemp("tiny_resnet_clip")
    return _saved_random_clip(root, TINY_RESNET_CLIP_CONFIG, own_bn_statistics)


#: A tiny ViT CLIP (open_clip's VisionTransformer: 4 x 4 patches of 16 px at its own 64 px, 5
#: blocks, so the FPN's stages come after 1, 2, 3 and 4 of them; LayerScale on, so the dense path
#: must apply it): the ViT CLIP backbone of F-VLM (ovdet.core.clip_vit_backbone).
TINY_VIT_CLIP_CONFIG = {
    "model_cfg": {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 64, "layers": 5, "width": 32, "patch_size": 16,
                       "head_width": 16, "ls_init_value": 0.5},
        "text_cfg": TINY_CLIP_CONFIG["model_cfg"]["text_cfg"],
    },
    "preprocess_cfg": TINY_CLIP_CONFIG["preprocess_cfg"],
}  # fmt: skip


@pytest.fixture(scope="session")
def tiny_vit_clip(tmp_path_factory) -> str:
    """A CLIP spec ``local-dir:DIR:weights.pt`` of a tiny random ViT CLIP saved to a file."""
    return _saved_random_clip(tmp_path_factory.mktemp("tiny_vit_clip"), TINY_VIT_CLIP_CONFIG)


def draw_toy_image(rng: np.random.Generator, size: int = 64, classes=TOY_CLASSES):
    """One image with 1-2 toy objects; returns (PIL image, [(class index, xywh box)])."""
    img = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(100, 150, 3)))
    draw = ImageDraw.Draw(img)
    objects = []
    taken = np.zeros((size, size), bool)
    for _ in range(int(rng.integers(1, 3))):
        c = int(rng.integers(len(classes)))
        s = int(rng.integers(14, 26))
        for _ in range(20):
            x, y = (int(v) for v in rng.integers(0, size - s, 2))
            if not taken[y : y + s, x : x + s].any():
                break
        else:
            continue
        taken[y : y + s, x : x + s] = True
        _, _, color, shape = classes[c]
        box = (x, y, x + s - 1, y + s - 1)
        (draw.rectangle if shape == "square" else draw.ellipse)(box, fill=color)
        objects.append((c, [x, y, s, s]))
    return img, objects


def write_toy_dataset(root: Path, num_images: int, seed: int, classes=TOY_CLASSES) -> Path:
    """Images under ``root/images`` and ``root/instances.json``; returns the JSON path."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(num_images):
        img, objects = draw_toy_image(rng, classes=classes)
        name = f"{i:04d}.png"
        img.save(root / "images" / name)
        images.append({"id": 100 + i, "file_name": name, "width": 64, "height": 64})
        for c, box in objects:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": 100 + i,
                    "category_id": classes[c][1],
                    "bbox": box,
                    "area": box[2] * box[3],
                    "iscrowd": 0,
                }  # fmt: skip
            )
    categories = [{"id": cid, "name": name} for name, cid, _, _ in classes]
    path = root / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": categories}))  # fmt: skip
    return path


@pytest.fixture(scope="session")
def toy_dataset(tmp_path_factory) -> Path:
    """A 48-image toy dataset; the split file makes 'green square' novel."""
    root = tmp_path_factory.mktemp("toy")
    write_toy_dataset(root, 48, seed=0)
    (root / "split.json").write_text(
        json.dumps({"base": ["red square", "blue circle"], "novel": ["green square"]})
    )
    return root


def toy_overrides(
    toy: Path, clip: str, out: Path, max_iter: int = 60, train: Path | None = None
) -> list[str]:
    """Config overrides for training the tiny config on the toy dataset (``train``: another
    dataset folder to train on, tested on ``toy``)."""
    train = train or toy
    return [
        "MODEL.OVDET.CLIP", clip,
        "MODEL.OVDET.TEMPLATES", "a",
        "DATASETS.TRAIN_JSON", str(train / "instances.json"),
        "DATASETS.TRAIN_IMAGES", str(train / "images"),
        "DATASETS.TEST_JSON", str(toy / "instances.json"),
        "DATASETS.TEST_IMAGES", str(toy / "images"),
        "DATASETS.SPLIT", str(toy / "split.json"),
        "INPUT.MIN_SIZE_TRAIN", "[64]",
        "INPUT.MAX_SIZE_TRAIN", "64",
        "INPUT.MIN_SIZE_TEST", "64",
        "INPUT.MAX_SIZE_TEST", "64",
        "SOLVER.IMS_PER_BATCH", "4",
        "SOLVER.BASE_LR", "0.002",
        "SOLVER.MAX_ITER", str(max_iter),
        # the final checkpoint only (tests that resume set their own period): each is ~150 MB
        "SOLVER.CHECKPOINT_PERIOD", str(max_iter),
        "SOLVER.WARMUP_ITERS", "5",
        "LOG_PERIOD", "1",
        "OUTPUT_DIR", str(out),
    ]  # fmt: skip


REPO = Path(__file__).resolve().parents[1]
TINY_CONFIG = "tiny"


def build_once(tmp_path_factory, name: str, build: Callable[[Path], Path]) -> Path:
    """``build(folder)`` once per test session, also when pytest-xdist runs it in several worker
    processes: the first worker builds under a file lock, the others reuse what it returned."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        return build(tmp_path_factory.mktemp(name))
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp().parent / name  # the session's, above the workers'
    with FileLock(f"{shared}.lock"):
        done = shared / ".built"
        if not done.is_file():
            shutil.rmtree(shared, ignore_errors=True)
            shared.mkdir()
            done.write_text(str(build(shared)))
        return Path(done.read_text())


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory, toy_dataset, tiny_clip) -> Path:
    """The tiny detector trained briefly on the toy base classes (real learning, no mocks)."""
    from ovdet.config import load_config
    from ovdet.tv.engine.trainer import Trainer

    def train(out: Path) -> Path:
        cfg = load_config(TINY_CONFIG, toy_overrides(toy_dataset, tiny_clip, out, max_iter=150))
        Trainer(cfg, progress=False).train()
        return out / "model_final.pt"

    return build_once(tmp_path_factory, "trained", train)

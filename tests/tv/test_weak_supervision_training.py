"""Mixed box / image-labelled training: learning a class from image labels only, exact resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torchvision.ops import box_convert, box_iou

from tests.conftest import (
    REPO,
    TINY_CONFIG,
    TOY_CLASSES,
    draw_toy_image,
    toy_overrides,
    write_toy_dataset,
)

pytestmark = pytest.mark.slow

NOVEL = TOY_CLASSES[2]  # "green square": never a box in training (the split holds it out)


@pytest.fixture(scope="module")
def weak_toy(tmp_path_factory):
    """Image-labelled images (no boxes): green squares, labelled "green square" by
    ``pos_category_ids``, in Detic's image-label JSON."""
    root = tmp_path_factory.mktemp("weak_toy")
    (root / "images").mkdir()
    rng = np.random.default_rng(1)
    images = []
    for i in range(24):
        img, objects = draw_toy_image(rng, classes=[NOVEL])
        img.save(root / "images" / f"{i}.png")
        images.append({"id": i + 1, "file_name": f"{i}.png", "width": 64, "height": 64,
                       "pos_category_ids": [NOVEL[1]]})  # fmt: skip
    categories = [{"id": cid, "name": name} for name, cid, _, _ in TOY_CLASSES]
    (root / "labels.json").write_text(json.dumps({"images": images, "categories": categories}))
    return root


def weak_overrides(weak_toy) -> list[str]:
    return [
        "DATASETS.WEAK_TRAIN", str(weak_toy / "labels.json"),
        "DATASETS.WEAK_TRAIN_IMAGES", str(weak_toy / "images"),
        "DATALOADER.DATASET_RATIO", "[1, 2]",
        "DATALOADER.WEAK_IMS_PER_BATCH", "4",
        "INPUT.WEAK_MIN_SIZE_TRAIN", "[48, 56]",
        "INPUT.WEAK_MAX_SIZE_TRAIN", "64",
        "MODEL.OVDET.WEAK.NUM_PROPOSALS", "32",
    ]  # fmt: skip


def _train(overrides, *extra):
    cmd = [sys.executable, str(REPO / "tools" / "train.py"), "--config", str(TINY_CONFIG),
           "--no-progress", *extra, *overrides]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _losses(out):
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return {m["iteration"]: m for m in map(json.loads, lines) if "total_loss" in m}


def test_sigkill_then_resume_with_mixed_batches_logs_the_same_losses(
    toy_dataset, tiny_clip, weak_toy, tmp_path
):
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    extra = ["SOLVER.CHECKPOINT_PERIOD", "4", "DATALOADER.NUM_WORKERS", "0",
             *weak_overrides(weak_toy)]  # fmt: skip

    def overrides(out):
        return toy_overrides(toy_dataset, tiny_clip, out, max_iter=9) + extra

    ref = _train(overrides(ref_dir))
    assert ref.wait(timeout=600) == 0, ref.stderr.read()
    expected = _losses(ref_dir)
    # Both kinds of batches ran, each with its own losses: 1 box batch, then 2 image-labelled.
    assert [("loss_text" in expected[i], "loss_image_label" in expected[i]) for i in (1, 2, 3)] == [
        (True, False), (False, True), (False, True)
    ]  # fmt: skip

    run = _train(overrides(run_dir))
    deadline = time.time() + 600
    while time.time() < deadline:  # kill once a checkpoint exists and training went past it
        if (run_dir / "model_0000004.pt").exists() and len(_losses(run_dir)) >= 6:
            break
        assert run.poll() is None, run.stderr.read()
        time.sleep(0.05)
    os.kill(run.pid, signal.SIGKILL)
    run.wait()
    assert not (run_dir / "model_final.pt").exists()

    resumed = _train(overrides(run_dir), "--resume")
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()
    got = _losses(run_dir)
    assert sorted(got) == list(range(1, 10))
    for it in range(1, 10):
        assert set(got[it]) == set(expected[it]), it
        for key, value in expected[it].items():
            if key.startswith(("loss", "total")):
                assert got[it][key] == pytest.approx(value, rel=1e-5, abs=1e-6), (it, key)


@pytest.fixture(scope="module")
def labelled_toy(tmp_path_factory):
    """Image-labelled images as ImageNet's are: one object of any toy class (base or novel)
    filling most of the image, labelled by ``pos_category_ids``, no boxes."""
    root = tmp_path_factory.mktemp("labelled_toy")
    (root / "images").mkdir()
    rng = np.random.default_rng(1)
    images = []
    for i in range(36):
        name, cid, color, shape = TOY_CLASSES[i % 3]
        img = Image.new("RGB", (64, 64), tuple(int(v) for v in rng.integers(100, 150, 3)))
        s = int(rng.integers(48, 60))
        x, y = (int(v) for v in rng.integers(0, 64 - s + 1, 2))
        draw = ImageDraw.Draw(img)
        (draw.rectangle if shape == "square" else draw.ellipse)((x, y, x + s - 1, y + s - 1),
                                                                fill=color)  # fmt: skip
        img.save(root / "images" / f"{i}.png")
        images.append({"id": i + 1, "file_name": f"{i}.png", "width": 64, "height": 64,
                       "pos_category_ids": [cid]})  # fmt: skip
    categories = [{"id": cid, "name": name} for name, cid, _, _ in TOY_CLASSES]
    (root / "labels.json").write_text(json.dumps({"images": images, "categories": categories}))
    return root


@pytest.fixture(scope="module")
def distinct_clip(tiny_clip, tmp_path_factory) -> str:
    """The session's tiny CLIP with one change: the token embedding of "green" moved until
    "a green square." is at least as far from either base prompt as the two are apart (random,
    the two square prompts are at cosine 0.96, which the image-label loss can hardly tell
    apart). The base prompts do not hold the token, so their embeddings, and the base-trained
    checkpoint, stay as they were."""
    from ovdet.clip import load_clip

    clip = load_clip(tiny_clip)
    model, tokenizer = clip.model, clip.tokenizer
    base = F.normalize(clip.encode_text([f"a {TOY_CLASSES[i][0]}." for i in (0, 1)]), dim=-1)
    prompt = tokenizer([f"a {NOVEL[0]}."])
    green = int(tokenizer(["green"])[0, 1])  # the token after the start token
    assert green in prompt[0].tolist()
    table = model.token_embedding.weight
    original = table.detach().clone()
    table.requires_grad_(True)
    optimizer = torch.optim.Adam([table], lr=0.005)
    apart = float(base[0] @ base[1])  # as far from either base prompt as they are apart
    with torch.enable_grad():
        for _ in range(200):
            loss = (F.normalize(model.encode_text(prompt), dim=-1) @ base.T).max()
            if loss.item() <= apart:
                break
            optimizer.zero_grad()
            loss.backward()
            table.grad[torch.arange(len(table)) != green] = 0  # "green" alone moves
            optimizer.step()
    moved = original.clone()
    moved[green] = table.detach()[green]
    weights = tmp_path_factory.mktemp("distinct_clip") / "weights.pt"
    torch.save({"state_dict": dict(model.state_dict(), **{"token_embedding.weight": moved})},
               weights)  # fmt: skip
    return tiny_clip.rsplit(":", 1)[0] + f":{weights}"


def _novel_results(toy_dataset, overrides) -> tuple[dict, float]:
    """Train, evaluate; returns the metrics and the novel class's recall at IoU 0.5: the
    fraction of its objects in the test images that a detection of it covers."""
    from ovdet.api import OVDetector
    from ovdet.config import load_config
    from ovdet.tv.engine.trainer import Trainer

    trainer = Trainer(load_config(TINY_CONFIG, overrides), progress=False)
    trainer.train()
    metrics = trainer.evaluate()
    detector = OVDetector.from_checkpoint(trainer.output_dir / "model_final.pt")
    names = [name for name, _, _, _ in TOY_CLASSES]
    dataset = json.loads((toy_dataset / "instances.json").read_text())
    files = {im["id"]: im["file_name"] for im in dataset["images"]}
    found = []
    for image_id, file_name in files.items():
        objects = [a["bbox"] for a in dataset["annotations"]
                   if a["image_id"] == image_id and a["category_id"] == NOVEL[1]]  # fmt: skip
        if not objects:
            continue
        result = detector.predict(str(toy_dataset / "images" / file_name), names)[0]
        boxes = torch.as_tensor(result.boxes[result.labels == names.index(NOVEL[0])])
        truth = box_convert(torch.tensor(objects, dtype=torch.float), "xywh", "xyxy")
        found += (box_iou(truth, boxes).ge(0.5).any(dim=1) if len(boxes) else
                  torch.zeros(len(truth), dtype=torch.bool)).tolist()  # fmt: skip
    return metrics, sum(found) / len(found)


@pytest.fixture(scope="module")
def base_only_toy(tmp_path_factory) -> Path:
    """Box images of the two base classes alone: no green square anywhere in the box data, as
    most of LVIS's rare classes are in no box image at all."""
    root = tmp_path_factory.mktemp("base_only_toy")
    write_toy_dataset(root, 48, seed=5, classes=TOY_CLASSES[:2])
    return root


@pytest.fixture(scope="module")
def base_only_checkpoint(toy_dataset, base_only_toy, distinct_clip, tmp_path_factory) -> Path:
    """The tiny detector trained 150 steps on the base-only box images."""
    from ovdet.config import load_config
    from ovdet.tv.engine.trainer import Trainer

    out = tmp_path_factory.mktemp("base_only_trained")
    overrides = toy_overrides(toy_dataset, distinct_clip, out, 150, train=base_only_toy)
    Trainer(load_config(TINY_CONFIG, overrides), progress=False).train()
    return out / "model_final.pt"


def test_image_labels_teach_a_class_that_has_no_box(
    toy_dataset, base_only_toy, distinct_clip, base_only_checkpoint, labelled_toy, tmp_path
):
    """From the same base-trained detector, the same 60 steps with and without image-labelled
    batches (mixed into each step by accumulation); no CLIP distillation. Only image labels name
    the novel class, and no box image shows one."""
    common = ["MODEL.WEIGHTS", str(base_only_checkpoint), "SOLVER.WARMUP_ITERS", "1",
              "SOLVER.ACCUMULATE_STEPS", "2",
              "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.01",
              # The labelled object fills its image: the whole-image box is its region, the
              # same in every run. Chosen by the model instead (max-score, max-size), the
              # region was often part of the object or of the background, and the result
              # swung with float rounding alone (one or two torch threads): novel AP50 0.0-0.4.
              "MODEL.OVDET.WEAK.IMAGE_LABEL_LOSS", "image",
              "MODEL.OVDET.WEAK.IMAGE_LOSS_WEIGHT", "0.3"]  # fmt: skip
    boxes_only, boxes_only_recall = _novel_results(
        toy_dataset,
        toy_overrides(toy_dataset, distinct_clip, tmp_path / "boxes", 60, train=base_only_toy)
        + common,
    )
    with_labels, with_labels_recall = _novel_results(
        toy_dataset,
        toy_overrides(toy_dataset, distinct_clip, tmp_path / "weak", 60, train=base_only_toy)
        + common + weak_overrides(labelled_toy)
        + ["DATALOADER.DATASET_RATIO", "[1, 1]", "DATALOADER.WEAK_IMS_PER_BATCH", "8",
           # Detic's lower resolution for image-labelled data, here to the scale of the box
           # images' objects (14-26 px): a labelled object of 48-60 px in its 64 px image
           # shrinks to 15-26 px. At full size the whole-image region taught "a large region
           # around something green" and the tight box of a green square stayed unnamed
           # (recall 0.08 and 0.64 in two probes).
           "INPUT.WEAK_MIN_SIZE_TRAIN", "[20, 24, 28]", "INPUT.WEAK_MAX_SIZE_TRAIN", "28"],
    )  # fmt: skip
    # Without image labels the detector never names the novel class's objects; with them it
    # finds most of them, and base detection still works. In probes (box-data seed 5, one and
    # two torch threads; seeds 7 and 8, one thread): recall 0.80 / 0.72 / 0.76 / 0.60, novel
    # AP50 0.39 / 0.08 / 0.07 / 0.07, base AP50 0.81 / 0.99 / 0.97 / 0.54. Novel AP50 stays low
    # because parts of a green square are never a negative (no box image shows one) and some
    # score as high as the whole. The seed matters through the RPN, which only box images train:
    # from seed 5's base checkpoint a proposal covers 96% of the green squares at IoU 0.5, from
    # seed 6's 28% (recall 0.16 there); seed 8's checkpoint is weak on the base classes too
    # (base AP50 0.84 without image labels, against 0.996 for seed 5).
    assert boxes_only_recall == 0.0 and boxes_only["novel/AP50"] == 0.0, boxes_only
    assert with_labels_recall >= 0.5, (with_labels_recall, with_labels)
    assert with_labels["novel/AP50"] >= 0.03, with_labels
    assert with_labels["base/AP50"] >= 0.7, with_labels


@pytest.mark.parametrize("box_batch_classes, scored", [("all", [3, 3]), ("box", [2, 2])])
def test_box_batches_score_the_image_label_classes(
    toy_dataset, tiny_clip, weak_toy, tmp_path, box_batch_classes, scored
):
    """With image-labelled data, box batches score its classes too ("all": the novel class is a
    negative of every box region, as in Detic), or the box classes alone ("box")."""
    from ovdet.config import load_config
    from ovdet.core.head import get_head
    from ovdet.tv.engine.trainer import Trainer

    overrides = (
        toy_overrides(toy_dataset, tiny_clip, tmp_path, max_iter=6)
        + weak_overrides(weak_toy)
        + ["DATALOADER.NUM_WORKERS", "0", "MODEL.OVDET.WEAK.BOX_BATCH_CLASSES", box_batch_classes]
    )
    trainer = Trainer(load_config(TINY_CONFIG, overrides), progress=False)
    head = get_head(trainer.model)
    seen = []  # the classes of each box batch's ViLD-text loss
    text_loss = head.text_loss
    head.text_loss = lambda logits, gt: seen.append(logits.shape[1] - 1) or text_loss(logits, gt)
    trainer.train()
    assert seen == scored  # 6 steps at [1, 2]: box, weak, weak, box, weak, weak

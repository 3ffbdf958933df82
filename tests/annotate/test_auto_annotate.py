"""Auto-annotation: tools/infer.py writes a COCO dataset, YOLO labels and region embeddings, and
a closed-set Faster R-CNN trained with tools/train.py on the auto-labels alone detects the
labelled classes on ground truth it never saw.

The labeller is the session's briefly trained tiny open-vocabulary model. Its CLIP is a random
tiny one, so it cannot name classes it has no boxes for; it labels the classes it was trained on
(red squares, blue circles) on fresh, unlabelled images. Labelling *novel* classes zero-shot needs
a pre-trained CLIP (the synthetic benchmark's, see docs/benchmark.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ovdet.cli.infer import main as infer_main
from ovdet.cli.train import main as train_main
from tests.conftest import TOY_CLASSES, toy_overrides, write_toy_dataset

pytestmark = pytest.mark.slow

LABELLED = ["red square", "blue circle"]


def _iou(a, b) -> float:
    """IoU of two COCO xywh boxes."""
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = max(0.0, min(ax2, bx2) - max(a[0], b[0]))
    ih = max(0.0, min(ay2, by2) - max(a[1], b[1]))
    inter = iw * ih
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


@pytest.fixture(scope="module")
def auto_labelled(trained_checkpoint, tmp_path_factory):
    """48 fresh toy images labelled by the trained tiny model; returns (root, output folder)."""
    root = tmp_path_factory.mktemp("unlabelled")
    write_toy_dataset(root, 48, seed=5)
    out = root / "out"
    code = infer_main([
        "--checkpoint", str(trained_checkpoint), "--classes", ",".join(LABELLED),
        "--input", str(root / "images"), "--output", str(out), "--no-progress", "--no-draw",
        "--coco-out", str(out / "auto.json"), "--yolo-out", str(out / "labels"),
        "--label-thresh", "0.5", "--save-embeddings",
    ])  # fmt: skip
    assert code == 0
    return root, out


def test_coco_dataset_is_complete_and_matches_the_hidden_truth(auto_labelled):
    root, out = auto_labelled
    auto = json.loads((out / "auto.json").read_text())
    truth = json.loads((root / "instances.json").read_text())
    assert [c["name"] for c in auto["categories"]] == LABELLED
    assert len(auto["images"]) == 48
    assert all((img["width"], img["height"]) == (64, 64) for img in auto["images"])
    image_root = Path(auto["info"]["image_root"])
    assert all((image_root / img["file_name"]).is_file() for img in auto["images"])
    assert auto["annotations"] and all(a["score"] >= 0.5 for a in auto["annotations"])
    # Precision of the auto-labels against the (hidden) ground truth of those images.
    gt_id = {name: cid for name, cid, _, _ in TOY_CLASSES}
    name_of = {c["id"]: c["name"] for c in auto["categories"]}
    truth_image = {img["file_name"]: img["id"] for img in truth["images"]}
    auto_file = {img["id"]: img["file_name"] for img in auto["images"]}
    correct = 0
    for a in auto["annotations"]:
        tid = truth_image[auto_file[a["image_id"]]]
        cid = gt_id[name_of[a["category_id"]]]
        correct += any(
            t["image_id"] == tid and t["category_id"] == cid and _iou(a["bbox"], t["bbox"]) >= 0.5
            for t in truth["annotations"]
        )
    assert correct / len(auto["annotations"]) > 0.5, (correct, len(auto["annotations"]))


def test_yolo_labels_and_embeddings_follow_the_detections(auto_labelled):
    _, out = auto_labelled
    auto = json.loads((out / "auto.json").read_text())
    labels = out / "labels"
    assert (labels / "classes.txt").read_text().splitlines() == LABELLED
    files = {img["id"]: Path(img["file_name"]).stem for img in auto["images"]}
    for image_id, stem in files.items():
        lines = (labels / f"{stem}.txt").read_text().splitlines()
        anns = [a for a in auto["annotations"] if a["image_id"] == image_id]
        assert len(lines) == len(anns)
        for line, a in zip(lines, anns):
            cls, cx, cy, w, h = line.split()
            x, y, bw, bh = a["bbox"]
            assert int(cls) == a["category_id"] - 1
            np.testing.assert_allclose(
                [float(cx), float(cy), float(w), float(h)],
                [(x + bw / 2) / 64, (y + bh / 2) / 64, bw / 64, bh / 64], atol=1e-3,
            )  # fmt: skip
    results = json.loads((out / "results.json").read_text())
    embeddings = np.load(out / results["embeddings"])
    dets = results["detections"]
    assert embeddings.shape == (len(dets), 32)
    assert sorted(d["embedding_index"] for d in dets) == list(range(len(dets)))
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-4)


def test_closed_set_detector_trained_on_auto_labels_detects_on_ground_truth(
    auto_labelled, toy_dataset, tiny_clip, tmp_path
):
    import yaml

    from ovdet.config import config_from_dict
    from ovdet.evaluation import evaluate_coco
    from ovdet.tv.engine.build import build_model
    from ovdet.tv.engine.checkpoint import load_checkpoint, load_model_weights

    _, out = auto_labelled
    auto = json.loads((out / "auto.json").read_text())
    run = tmp_path / "closed"
    overrides = toy_overrides(toy_dataset, tiny_clip, run, max_iter=150) + [
        "MODEL.META_ARCHITECTURE", "FasterRCNN",
        "DATASETS.TRAIN_JSON", str(out / "auto.json"),
        "DATASETS.TRAIN_IMAGES", auto["info"]["image_root"],
        "DATASETS.SPLIT", "", "DATASETS.TEST_JSON", "",
    ]  # fmt: skip
    assert train_main(["--config", "tiny", "--no-progress", *overrides]) == 0

    state = load_checkpoint(run / "model_final.pt")
    cfg = config_from_dict(yaml.safe_load(state["config"]), "closed-set")
    names = list(state["class_names"])
    assert names == LABELLED
    model = build_model(cfg, num_classes=len(names))
    load_model_weights(model, state["model"], "closed-set")
    model.eval()
    truth = json.loads((toy_dataset / "instances.json").read_text())
    gt_id = {name: cid for name, cid, _, _ in TOY_CLASSES}
    results = []
    from PIL import Image

    with torch.no_grad():
        for img in truth["images"]:
            array = np.asarray(Image.open(toy_dataset / "images" / img["file_name"]).convert("RGB"))
            tensor = torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255
            [det] = model([tensor])
            for (x1, y1, x2, y2), s, label in zip(
                det["boxes"].tolist(), det["scores"].tolist(), det["labels"].tolist()
            ):
                results.append({"image_id": img["id"], "category_id": gt_id[names[label - 1]],
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "score": s})  # fmt: skip
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"base": ["green square"], "novel": LABELLED}))
    metrics = evaluate_coco(toy_dataset / "instances.json", results, str(split))
    # Classes the closed-set detector had no ground-truth box of: found from auto-labels only.
    assert metrics["novel"]["AP50"] > 0.3, metrics

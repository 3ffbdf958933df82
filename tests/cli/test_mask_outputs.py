"""``ovdet-infer`` with a mask model: drawn masks, RLE in results.json and --coco-out, YOLO
segmentation polygons."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from ovdet.cli.infer import main
from ovdet.utils.visualizer import MASK_ALPHA, color_for, draw_detections

H, W = 150, 220


@pytest.fixture(scope="module")
def mask_checkpoint(tiny_clip, tmp_path_factory):
    """A tiny config checkpoint with ``MODEL.MASK_ON`` whose masks fill most of their boxes."""
    from ovdet.config import load_config
    from ovdet.tv.engine.build import build_model
    from ovdet.tv.engine.checkpoint import save_checkpoint

    cfg = load_config("tiny", ["MODEL.OVDET.CLIP", tiny_clip, "MODEL.OVDET.TEMPLATES", "a",
                               "MODEL.MASK_ON", "True"])  # fmt: skip
    torch.manual_seed(0)
    model = build_model(cfg)
    logits = model.roi_heads.mask_predictor.mask_fcn_logits
    torch.nn.init.normal_(logits.weight, std=1e-3)  # masks near their boxes' whole area
    torch.nn.init.constant_(logits.bias, 3.0)
    state = {"model": model.state_dict(), "config": cfg.dump(), "class_names": ["red square"],
             "embed_dim": 32}  # fmt: skip
    return save_checkpoint(state, tmp_path_factory.mktemp("masks"), "model.pt")


def test_draw_detections_paints_translucent_masks():
    image = np.full((40, 60, 3), 200, np.uint8)
    masks = np.zeros((1, 40, 60), bool)
    masks[0, 10:20, 10:30] = True
    drawn = np.asarray(
        draw_detections(image, [[5, 5, 50, 35]], [0.9], ["cat"], line_width=1, masks=masks)
    )
    expected = np.rint((1 - MASK_ALPHA) * 200 + MASK_ALPHA * np.array(color_for("cat")))
    assert np.array_equal(drawn[15, 20], expected)
    assert np.array_equal(drawn[30, 40], [200, 200, 200])  # inside the box, outside the mask
    with pytest.raises(ValueError, match="masks of shape"):
        draw_detections(image, [[5, 5, 50, 35]], [0.9], ["cat"], masks=masks[:, :20])


def test_infer_writes_masks_everywhere(mask_checkpoint, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(inputs / "a.png")
    out, yolo = tmp_path / "out", tmp_path / "yolo"
    code = main(["--checkpoint", str(mask_checkpoint), "--classes", "red square,blue circle",
                 "--input", str(inputs), "--output", str(out), "--score-thresh", "0.0",
                 "--coco-out", str(tmp_path / "auto.json"), "--yolo-out", str(yolo),
                 "--label-thresh", "0.0", "--no-progress"])  # fmt: skip
    assert code == 0
    assert (out / "a_det.jpg").is_file()
    detections = json.loads((out / "results.json").read_text())["detections"]
    assert detections
    for det in detections:
        mask = mask_utils.decode(det["segmentation"])
        x, y, w, h = det["bbox"]
        ys, xs = np.nonzero(mask)
        assert mask.shape == (H, W) and len(xs)
        assert xs.min() >= x - 1 and xs.max() <= x + w and ys.max() <= y + h
    dataset = json.loads((tmp_path / "auto.json").read_text())
    annotations = dataset["annotations"]
    assert len(annotations) == len(detections)
    for ann in annotations:
        assert ann["area"] == mask_utils.decode(ann["segmentation"]).sum() > 0
    lines = (yolo / "a.txt").read_text().splitlines()
    assert len(lines) == len(detections)
    for line in lines:
        values = [float(v) for v in line.split()[1:]]
        assert len(values) >= 6 and len(values) % 2 == 0
        assert all(0.0 <= v <= 1.0 for v in values)

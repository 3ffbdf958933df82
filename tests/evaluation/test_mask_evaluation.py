"""Mask AP (``iou_type="segm"``) on hand-made masks whose AP is known."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from ovdet.data.splits import OpenVocabularySplit
from ovdet.evaluation import evaluate_coco, evaluate_lvis
from ovdet.utils.errors import DataError, ResultsError

W = H = 100
SPLIT = OpenVocabularySplit(("apple",), ("dog",), name="hand")


def _rle(x1: int, y1: int, x2: int, y2: int) -> dict:
    mask = np.zeros((H, W), np.uint8)
    mask[y1:y2, x1:x2] = 1
    rle = mask_utils.encode(np.asfortranarray(mask))
    return {"size": [H, W], "counts": rle["counts"].decode("ascii")}


def _gt(**image_fields) -> dict:
    """One image, an apple (base) and a dog (novel), each a 40x40 square."""
    return {
        "images": [{"id": 1, "file_name": "1.jpg", "width": W, "height": H, **image_fields}],
        "categories": [
            {"id": 1, "name": "apple", "frequency": "f"},
            {"id": 2, "name": "dog", "frequency": "r"},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 40],
             "segmentation": _rle(10, 10, 50, 50), "area": 1600, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [50, 50, 40, 40],
             "segmentation": _rle(50, 50, 90, 90), "area": 1600, "iscrowd": 0},
        ],
    }  # fmt: skip


def _detections() -> list[dict]:
    """Perfect boxes; the apple's mask is exact, the dog's covers 25 of its 40 rows
    (mask IoU 1000 / 1600 = 0.625: a match at IoU 0.50, 0.55 and 0.60 only)."""
    return [
        {"image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 40], "score": 0.9,
         "segmentation": _rle(10, 10, 50, 50)},
        {"image_id": 1, "category_id": 2, "bbox": [50, 50, 40, 40], "score": 0.8,
         "segmentation": _rle(50, 50, 90, 75)},
    ]  # fmt: skip


def test_mask_ap_of_hand_made_masks():
    boxes = evaluate_coco(_gt(), _detections(), SPLIT)
    masks = evaluate_coco(_gt(), _detections(), SPLIT, iou_type="segm")
    assert boxes["iou_type"] == "bbox" and masks["iou_type"] == "segm"
    assert boxes["novel"]["AP"] == pytest.approx(1.0)  # the boxes are perfect
    assert masks["base"]["AP"] == pytest.approx(1.0)
    assert masks["novel"]["AP50"] == pytest.approx(1.0)
    assert masks["novel"]["AP"] == pytest.approx(0.3)  # 3 of the 10 IoU thresholds
    assert masks["all"]["AP"] == pytest.approx(0.65)


def test_lvis_mask_apr():
    gt = _gt(neg_category_ids=[], not_exhaustive_category_ids=[])
    masks = evaluate_lvis(gt, _detections(), iou_type="segm")
    assert masks["APr"] == pytest.approx(0.3) and masks["APf"] == pytest.approx(1.0)
    assert evaluate_lvis(gt, _detections())["APr"] == pytest.approx(1.0)


def test_mask_ap_needs_masks():
    no_mask = [{k: v for k, v in d.items() if k != "segmentation"} for d in _detections()]
    with pytest.raises(ResultsError, match="entry 0: missing key segmentation"):
        evaluate_coco(_gt(), no_mask, SPLIT, iou_type="segm")
    wrong_size = _detections()
    wrong_size[1]["segmentation"]["size"] = [H, W + 1]
    with pytest.raises(ResultsError, match="entry 1: .*another size"):
        evaluate_coco(_gt(), wrong_size, SPLIT, iou_type="segm")
    gt = _gt()
    del gt["annotations"][1]["segmentation"]
    with pytest.raises(DataError, match="annotation 2 has none"):
        evaluate_coco(gt, _detections(), SPLIT, iou_type="segm")


def test_evaluate_cli_adds_mask_ap_when_detections_have_masks(tmp_path, capsys):
    import json

    from ovdet.cli.evaluate import main

    gt, split, dets = tmp_path / "gt.json", tmp_path / "split.json", tmp_path / "dets.json"
    coco_gt = _gt()
    for category in coco_gt["categories"]:
        del category["frequency"]  # COCO, not LVIS
    gt.write_text(json.dumps(coco_gt))
    split.write_text(json.dumps({"base": ["apple"], "novel": ["dog"]}))
    dets.write_text(json.dumps(_detections()))
    out = tmp_path / "metrics.json"
    args = ["--gt", str(gt), "--split", str(split), "--output", str(out)]
    assert main([*args, "--results", str(dets)]) == 0
    metrics = json.loads(out.read_text())
    assert metrics["novel"]["AP"] == pytest.approx(1.0)
    assert metrics["segm"]["novel"]["AP"] == pytest.approx(0.3)
    assert "mask AP" in capsys.readouterr().out
    boxes_only = [{k: v for k, v in d.items() if k != "segmentation"} for d in _detections()]
    dets.write_text(json.dumps(boxes_only))
    assert main([*args, "--results", str(dets)]) == 0
    assert "segm" not in json.loads(out.read_text())
    assert "mask AP" not in capsys.readouterr().out

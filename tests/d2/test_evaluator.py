"""OpenVocabularyEvaluator on generated data: base / novel / all AP through ovdet.evaluation."""

from __future__ import annotations

import json
import math

import pytest
import torch

pytest.importorskip(
    "detectron2", reason="detectron2 is not installed; see README (install by its official guide)"
)

from detectron2.structures import Boxes, Instances  # noqa: E402

from ovdet.d2 import OpenVocabularyEvaluator  # noqa: E402


def _outputs(instant_data, keep_category=lambda cat: True, shift: float = 0.0):
    """Predictions equal to the ground truth of the val set, as the model would output them."""
    gt = json.loads(instant_data["val_json"].read_text())
    contiguous = {1: 0, 3: 1, 7: 2}
    inputs, outputs = [], []
    for image in gt["images"]:
        anns = [
            a
            for a in gt["annotations"]
            if a["image_id"] == image["id"] and a["category_id"] in contiguous
        ]
        anns = [a for a in anns if keep_category(a["category_id"])]
        inst = Instances((image["height"], image["width"]))
        boxes = [[x + shift, y, x + w + shift, y + h] for x, y, w, h in (a["bbox"] for a in anns)]
        inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
        inst.scores = torch.linspace(0.9, 0.5, len(anns))
        inst.pred_classes = torch.tensor([contiguous[a["category_id"]] for a in anns])
        inputs.append({"image_id": image["id"]})
        outputs.append({"instances": inst})
    return inputs, outputs


def _evaluate(instant_data, tmp_path, **kwargs):
    evaluator = OpenVocabularyEvaluator(instant_data["val_name"], str(tmp_path), distributed=False)
    evaluator.reset()
    inputs, outputs = _outputs(instant_data, **kwargs)
    evaluator.process(inputs, outputs)
    return evaluator.evaluate()["bbox"]


def test_ground_truth_predictions_score_100(instant_data, tmp_path):
    bbox = _evaluate(instant_data, tmp_path)
    for key in ("AP", "AP50", "base_AP", "base_AP50", "novel_AP", "novel_AP50"):
        assert bbox[key] == pytest.approx(100.0), key
    assert bbox["AP50-blue box"] == pytest.approx(100.0)
    assert "AP50-grey box" not in bbox  # in neither half of the split
    saved = json.loads((tmp_path / "ovdet_instances_results.json").read_text())
    assert {d["category_id"] for d in saved} == {1, 3, 7}  # dataset ids, not contiguous ones


def test_base_only_predictions_score_zero_on_novel(instant_data, tmp_path):
    bbox = _evaluate(instant_data, tmp_path, keep_category=lambda cat: cat != 7)
    assert bbox["base_AP50"] == pytest.approx(100.0)
    assert bbox["novel_AP50"] == pytest.approx(0.0)
    assert bbox["AP50"] == pytest.approx(200.0 / 3)


def test_shifted_boxes_lower_ap(instant_data, tmp_path):
    bbox = _evaluate(instant_data, tmp_path, shift=4.0)
    assert bbox["AP"] < 90.0
    assert not math.isnan(bbox["novel_AP"])


def test_subset_of_images_is_scored_on_that_subset(instant_data, tmp_path):
    evaluator = OpenVocabularyEvaluator(instant_data["val_name"], None, distributed=False)
    evaluator.reset()
    inputs, outputs = _outputs(instant_data)
    evaluator.process(inputs[:1], outputs[:1])  # only the first image was run
    assert evaluator.evaluate()["bbox"]["AP"] == pytest.approx(100.0)


def test_lvis_dataset_reports_apr(instant_data, tmp_path):
    from ovdet.d2 import register_ov_lvis_dataset

    gt = json.loads(instant_data["val_json"].read_text())
    frequency = {1: "f", 3: "c", 7: "r", 8: "f"}
    for cat in gt["categories"]:
        cat["frequency"] = frequency[cat["id"]]
        cat["synonyms"] = [cat["name"].replace(" ", "_")]
    for image in gt["images"]:
        image["coco_url"] = f"http://images.cocodataset.org/val2017/{image.pop('file_name')}"
        image["neg_category_ids"] = []
        image["not_exhaustive_category_ids"] = []
    for ann in gt["annotations"]:  # LVIS annotations always have polygons
        x, y, w, h = ann["bbox"]
        ann["segmentation"] = [[x, y, x + w, y, x + w, y + h, x, y + h]]
    path = tmp_path / "lvis_val.json"
    path.write_text(json.dumps(gt))
    register_ov_lvis_dataset("ovdet_test_lvis_val", path, f"{tmp_path}/", base_only=False)
    register_ov_lvis_dataset("ovdet_test_lvis_train", path, f"{tmp_path}/", base_only=True)
    from detectron2.data import DatasetCatalog, MetadataCatalog

    train_classes = MetadataCatalog.get("ovdet_test_lvis_train").thing_classes
    assert train_classes == ["red box", "green box", "grey box"]  # rare "blue box" dropped
    meta = MetadataCatalog.get("ovdet_test_lvis_val")
    assert meta.thing_classes == ["red box", "green box", "blue box", "grey box"]
    assert meta.novel_classes == ["blue box"]
    records = DatasetCatalog.get("ovdet_test_lvis_val")
    assert records[0]["file_name"] == f"{tmp_path}/val2017/0000.png"
    assert {a["category_id"] for r in records for a in r["annotations"]} == {0, 1, 2, 3}

    evaluator = OpenVocabularyEvaluator("ovdet_test_lvis_val", None, distributed=False)
    evaluator.reset()
    inputs, outputs = _outputs(instant_data)
    evaluator.process(inputs, outputs)
    bbox = evaluator.evaluate()["bbox"]
    assert bbox["APr"] == pytest.approx(100.0)
    assert bbox["novel_AP"] == pytest.approx(100.0)
    assert bbox["APc"] == pytest.approx(100.0)
    assert bbox["APf"] < 100.0  # the grey boxes were not predicted

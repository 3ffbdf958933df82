"""Registering open-vocabulary datasets: base-only training sets, base + novel evaluation sets."""

from __future__ import annotations

import json
import uuid

import pytest

pytest.importorskip(
    "detectron2", reason="detectron2 is not installed; see README (install by its official guide)"
)

from detectron2.data import DatasetCatalog, MetadataCatalog  # noqa: E402

from ovdet.d2 import get_dataset_split, register_ov_coco_dataset  # noqa: E402
from ovdet.data.splits import OVCOCO_BASE, OVCOCO_NOVEL  # noqa: E402
from ovdet.utils.errors import DataError  # noqa: E402


def test_training_set_keeps_base_annotations_only(instant_data):
    meta = MetadataCatalog.get(instant_data["train_name"])
    assert meta.thing_classes == ["red box", "green box"]
    assert meta.thing_dataset_id_to_contiguous_id == {1: 0, 3: 1}
    assert meta.base_classes == ["red box", "green box"] and meta.novel_classes == ["blue box"]
    dicts = DatasetCatalog.get(instant_data["train_name"])
    assert len(dicts) == 6
    raw = json.loads(instant_data["train_json"].read_text())
    for record in dicts:
        anns = [a for a in raw["annotations"] if a["image_id"] == record["image_id"]]
        expected = sorted(
            ({1: 0, 3: 1}[a["category_id"]], tuple(a["bbox"]))
            for a in anns
            if a["category_id"] in (1, 3)
        )
        got = sorted((a["category_id"], tuple(a["bbox"])) for a in record["annotations"])
        assert got == expected


def test_evaluation_set_keeps_base_and_novel(instant_data):
    name = instant_data["val_name"]
    meta = MetadataCatalog.get(name)
    assert meta.thing_classes == ["red box", "green box", "blue box"]  # grey box: in neither
    assert meta.thing_dataset_id_to_contiguous_id == {1: 0, 3: 1, 7: 2}
    assert meta.json_file == str(instant_data["val_json"])
    assert meta.evaluator_type == "ovdet_coco"
    categories = {a["category_id"] for r in DatasetCatalog.get(name) for a in r["annotations"]}
    assert categories == {0, 1, 2}
    split = get_dataset_split(name)
    assert split.base == ("red box", "green box") and split.novel == ("blue box",)


def test_unknown_category_and_taken_name_raise(instant_data, tmp_path):
    data = json.loads(instant_data["train_json"].read_text())
    data["annotations"][0]["category_id"] = 99
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    name = f"bad_{uuid.uuid4().hex}"
    register_ov_coco_dataset(
        name, bad, instant_data["root"] / "train", str(instant_data["split_file"]), True
    )
    with pytest.raises(DataError, match="category id 99"):
        DatasetCatalog.get(name)
    with pytest.raises(DataError, match="already registered"):
        register_ov_coco_dataset(name, bad, tmp_path, str(instant_data["split_file"]), True)


def test_builtin_ovcoco_and_ovlvis_metadata():
    train = MetadataCatalog.get("ovcoco_2017_train")
    val = MetadataCatalog.get("ovcoco_2017_val")
    assert sorted(train.thing_classes) == sorted(OVCOCO_BASE)
    assert sorted(val.thing_classes) == sorted(OVCOCO_BASE + OVCOCO_NOVEL)
    assert val.thing_dataset_id_to_contiguous_id[5] == val.thing_classes.index("airplane")
    lvis_train = MetadataCatalog.get("ovlvis_v1_train")
    lvis_val = MetadataCatalog.get("ovlvis_v1_val")
    assert len(lvis_train.thing_classes) == 866 and len(lvis_val.thing_classes) == 1203
    assert len(lvis_val.novel_classes) == 337
    assert lvis_val.evaluator_type == "ovdet_lvis"

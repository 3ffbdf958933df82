"""A split must agree with the annotations' categories: a name of a split file that is no
category, or a category the split does not list, is one error naming them (or, asked for, one
counted warning), wherever a split meets categories: training data, evaluation, the benchmark."""

from __future__ import annotations

import json
import logging

import pytest
from PIL import Image

from ovdet.data.coco import load_coco_detection
from ovdet.data.splits import (
    OVCOCO_BASE,
    OVCOCO_EXCLUDED,
    OVCOCO_NOVEL,
    OpenVocabularySplit,
    check_split_categories,
    load_split,
)
from ovdet.evaluation import evaluate_coco
from ovdet.ovbench.data import BenchmarkData
from ovdet.utils.errors import DataError

NAMES = ["red square", "blue star", "blue square", "green circle"]
CATEGORIES = [{"id": i + 1, "name": n} for i, n in enumerate(NAMES)]
# "blue sta" is a typo of "blue star": the class would otherwise be in neither list.
TYPO = {"base": ["red square", "blue sta", "blue square"], "novel": ["green circle"]}
TYPO_MESSAGE = (
    "1 name matches no category of the annotations: 'blue sta' (did you mean 'blue star'?); "
    "1 category is neither base, novel nor excluded: 'blue star' "
    "(list a category under 'excluded' to leave it out on purpose)"
)


def _split_file(tmp_path, data: dict, name: str = "split.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def _coco(tmp_path, categories=CATEGORIES):
    """A one-image COCO file with one box of each category; returns its path."""
    Image.new("RGB", (40, 40)).save(tmp_path / "a.png")
    annotations = [
        {"id": c["id"], "image_id": 1, "category_id": c["id"], "bbox": [2, 2, 10, 10],
         "area": 100, "iscrowd": 0}
        for c in categories
    ]  # fmt: skip
    path = tmp_path / "instances.json"
    path.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.png", "width": 40, "height": 40}],
        "annotations": annotations, "categories": categories,
    }))  # fmt: skip
    return path


def test_a_typo_is_one_error_naming_it_and_the_closest_category(tmp_path):
    path = _split_file(tmp_path, TYPO)
    with pytest.raises(DataError) as info:
        load_split(str(path), CATEGORIES)
    assert str(info.value) == f"split file {path}: {TYPO_MESSAGE}"


def test_the_typo_is_found_where_training_evaluation_and_the_benchmark_load_the_split(tmp_path):
    split = str(_split_file(tmp_path, TYPO))
    gt = _coco(tmp_path)
    with pytest.raises(DataError, match="did you mean 'blue star'"):  # training data
        load_coco_detection(gt, tmp_path, split=split)
    with pytest.raises(DataError, match="did you mean 'blue star'"):  # evaluation
        evaluate_coco(str(gt), [], split)

    # The benchmark on own data: before any work, with the other files all there.
    for folder in ("train", "val"):
        (tmp_path / folder).mkdir()
    (tmp_path / "captions.csv").write_text("filepath\ttitle\na.png\ta red square\n")
    data = BenchmarkData(
        tmp_path, train_json="instances.json", train_images="train", val_json="instances.json",
        val_images="val", split="split.json", captions="captions.csv",
    )  # fmt: skip
    with pytest.raises(DataError, match="did you mean 'blue star'"):
        data.check()
    _split_file(tmp_path, {"base": NAMES[:3], "novel": NAMES[3:]})
    data.check()  # the corrected split passes


def test_mismatch_allowed_is_one_counted_warning(tmp_path, caplog):
    path = _split_file(tmp_path, TYPO)
    with caplog.at_level(logging.WARNING, logger="ovdet.data.splits"):
        split = load_split(str(path), CATEGORIES, allow_mismatch=True)
    assert split.base == ("red square", "blue square") and split.novel == ("green circle",)
    assert split.kind("blue star") is None
    [record] = caplog.records
    assert "1 name matches no category" in record.message
    assert "1 category is neither base, novel nor excluded: 'blue star'" in record.message

    counts = check_split_categories(load_split(str(path)), CATEGORIES, "split", allow_mismatch=True)
    assert counts == {"unknown_names": 1, "unlisted_categories": 1}


def test_excluded_categories_are_left_out_on_purpose(tmp_path):
    data = {
        "base": ["red square"],
        "novel": ["green circle"],
        "excluded": ["Blue_Star", "blue square"],
    }
    split = load_split(str(_split_file(tmp_path, data)), CATEGORIES)
    assert split.base == ("red square",) and split.novel == ("green circle",)
    assert split.excluded == ("blue star", "blue square")  # the annotations' spelling
    assert split.kind("blue star") is None and split.lists("blue star")
    assert split.to_dict()["excluded"] == ["blue star", "blue square"]

    both = {"base": ["red square", "blue star"], "novel": [], "excluded": ["blue star"]}
    with pytest.raises(DataError, match="'blue star' is listed twice"):
        load_split(str(_split_file(tmp_path, both, "both.json")))
    with pytest.raises(DataError, match="'excluded' must be lists of names"):
        load_split(str(_split_file(tmp_path, {"base": [], "excluded": "x"}, "bad.json")))


def test_many_names_are_counted_and_a_name_with_no_close_category_gets_no_guess(tmp_path):
    data = {"base": [*NAMES[:3], *(f"zebra {i}" for i in range(10))], "novel": NAMES[3:]}
    with pytest.raises(DataError) as info:
        load_split(str(_split_file(tmp_path, data)), CATEGORIES)
    message = str(info.value)
    assert "10 names match no category" in message and "(10 in all)" in message
    assert "did you mean" not in message and "\n" not in message


def test_ovcoco_leaves_out_its_15_classes_and_refuses_foreign_ones():
    coco = [
        {"id": i, "name": n} for i, n in enumerate(OVCOCO_BASE + OVCOCO_NOVEL + OVCOCO_EXCLUDED)
    ]
    assert len(coco) == 80
    split = load_split("ovcoco", coco)
    assert (len(split.base), len(split.novel), len(split.excluded)) == (48, 17, 15)
    # A subset of COCO's classes is fine; a class COCO does not have is not.
    assert load_split("ovcoco", coco[:3]).base == OVCOCO_BASE[:3]
    with pytest.raises(DataError, match="split 'ovcoco': 1 category is neither .*'red square'"):
        load_split("ovcoco", [*coco[:3], {"id": 99, "name": "red square"}])


def test_split_objects_built_in_code_are_restricted_without_the_check():
    split = OpenVocabularySplit(("red square", "yellow moon"), ("green circle",))
    restricted = split.restrict_to(CATEGORIES)
    assert restricted.base == ("red square",) and restricted.novel == ("green circle",)


def test_a_file_of_base_classes_only_loads_and_its_base_typo_is_still_found(tmp_path):
    """Training data holds no novel class: its novel names are rightly absent, not typos."""
    split = {"base": ["red square", "blue star", "blue square"], "novel": ["green circle"]}
    base_only = CATEGORIES[:3]
    loaded = load_split(str(_split_file(tmp_path, split)), base_only)
    assert loaded.base == ("red square", "blue star", "blue square")
    assert loaded.novel == ()
    # a typo of a base name is still one error, naming the category it leaves unlisted
    typo = {"base": ["red square", "blue sta", "blue square"], "novel": ["green circle"]}
    with pytest.raises(DataError, match="'blue sta' \\(did you mean 'blue star'\\?\\)"):
        load_split(str(_split_file(tmp_path, typo, "typo.json")), base_only)
    # and a typo of a novel name where the file holds novel classes
    novel_typo = {"base": ["red square", "blue square"], "novel": ["green circl", "blue star"]}
    with pytest.raises(DataError, match="'green circl' \\(did you mean 'green circle'\\?\\)"):
        load_split(str(_split_file(tmp_path, novel_typo, "novel.json")), CATEGORIES)

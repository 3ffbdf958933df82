"""Tests of ovdet.evaluation: results validation, base/novel/all COCO AP, LVIS AP, the table."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import random

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ovdet.data.splits import OpenVocabularySplit
from ovdet.evaluation import (
    evaluate_coco,
    evaluate_lvis,
    format_table,
    load_ground_truth,
    load_results,
)
from ovdet.utils.errors import DataError, ResultsError

# Non-contiguous ids, so that an id/index mix-up shows.
BASE = {11: "apple", 12: "banana", 13: "carrot"}
NOVEL = {21: "dog", 22: "elephant"}
NEITHER = {31: "zebra"}
# (image_id, category_id, [x, y, w, h]) of every ground-truth box.
GT_BOXES = [
    (1, 11, [10, 10, 50, 40]),
    (1, 21, [100, 100, 60, 80]),
    (1, 31, [20, 120, 40, 40]),
    (2, 12, [30, 30, 70, 50]),
    (2, 13, [120, 20, 40, 60]),
    (2, 22, [10, 100, 90, 90]),
    (3, 11, [50, 60, 40, 40]),
    (3, 12, [5, 5, 30, 30]),
    (3, 21, [110, 110, 80, 70]),
    (4, 13, [60, 60, 50, 50]),
    (4, 22, [120, 10, 70, 60]),
    (4, 31, [10, 10, 30, 30]),
    (4, 11, [140, 140, 40, 40]),
]


def make_gt() -> dict:
    categories = {**BASE, **NOVEL, **NEITHER}
    return {
        "images": [
            {"id": i, "file_name": f"{i}.jpg", "height": 200, "width": 200} for i in (1, 2, 3, 4)
        ],
        "categories": [{"id": cid, "name": name} for cid, name in categories.items()],
        "annotations": [
            {
                "id": n + 1,
                "image_id": image_id,
                "category_id": cat_id,
                "bbox": box,
                "area": box[2] * box[3],
                "iscrowd": 0,
            }
            for n, (image_id, cat_id, box) in enumerate(GT_BOXES)
        ],
    }


def perfect_detections(score: float = 0.9) -> list[dict]:
    return [
        {"image_id": image_id, "category_id": cat_id, "bbox": list(box), "score": score}
        for image_id, cat_id, box in GT_BOXES
    ]


def mixed_detections(seed: int = 0) -> list[dict]:
    """Jittered boxes, some misses, and false positives (some of the ignored category)."""
    rng = random.Random(seed)
    dets = []
    for n, (image_id, cat_id, box) in enumerate(GT_BOXES):
        if n % 4 == 3:
            continue  # a miss
        x, y, w, h = box
        jitter = [rng.uniform(-0.2, 0.2) * s for s in (w, h, w, h)]
        dets.append(
            {
                "image_id": image_id,
                "category_id": cat_id,
                "bbox": [x + jitter[0], y + jitter[1], max(1.0, w + jitter[2]), h + jitter[3]],
                "score": rng.uniform(0.3, 1.0),
            }
        )
    cat_ids = [*BASE, *NOVEL, *NEITHER]
    for _ in range(12):
        dets.append(
            {
                "image_id": rng.randint(1, 4),
                "category_id": rng.choice(cat_ids),
                "bbox": [rng.uniform(0, 150), rng.uniform(0, 150), 40.0, 40.0],
                "score": rng.uniform(0.0, 1.0),
            }
        )
    return dets


@pytest.fixture
def split_file(tmp_path):
    path = tmp_path / "split.json"
    # Names differ in case / underscores from the annotations': categories match by name.
    split = {"base": ["Apple", "banana", "carrot"], "novel": ["dog", "ELEPHANT"]}
    path.write_text(json.dumps({**split, "excluded": ["zebra"]}))  # zebra left out on purpose
    return str(path)


def direct_cocoeval(gt: dict, dets: list[dict], cat_ids) -> tuple[float, float]:
    """stats[0] and stats[1] of a plain COCOeval run limited to ``cat_ids``."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(gt)
        coco.createIndex()
        coco_dt = coco.loadRes(copy.deepcopy(dets))
        coco_eval = COCOeval(coco, coco_dt, "bbox")
        coco_eval.params.catIds = sorted(cat_ids)
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval.stats[0], coco_eval.stats[1]


# --- COCO: base / novel / all -------------------------------------------------------------------


def test_perfect_detections_score_one(split_file):
    metrics = evaluate_coco(make_gt(), perfect_detections(), split_file)
    for group in ("all", "base", "novel"):
        assert metrics[group]["AP"] == pytest.approx(1.0)
        assert metrics[group]["AP50"] == pytest.approx(1.0)
    assert metrics["all"]["num_categories"] == 5
    assert metrics["base"]["num_categories"] == 3
    assert metrics["novel"]["num_categories"] == 2
    assert metrics["num_detections"] == len(GT_BOXES)
    assert metrics["split"] == "split"


def test_removing_novel_detections_zeroes_novel_only(split_file):
    dets = [d for d in perfect_detections() if d["category_id"] not in NOVEL]
    metrics = evaluate_coco(make_gt(), dets, split_file)
    assert metrics["novel"]["AP"] == 0.0
    assert metrics["novel"]["AP50"] == 0.0
    assert metrics["base"]["AP"] == pytest.approx(1.0)
    assert metrics["all"]["AP"] == pytest.approx(3 / 5)
    assert metrics["per_category"]["dog"]["AP"] == 0.0


def test_mixed_case_matches_direct_cocoeval(split_file):
    gt, dets = make_gt(), mixed_detections()
    metrics = evaluate_coco(gt, dets, split_file)
    assert 0.1 < metrics["all"]["AP"] < 0.9  # a non-trivial case
    for group, cat_ids in (
        ("all", [*BASE, *NOVEL]),
        ("base", list(BASE)),
        ("novel", list(NOVEL)),
    ):
        ap, ap50 = direct_cocoeval(gt, dets, cat_ids)
        assert metrics[group]["AP"] == ap, group
        assert metrics[group]["AP50"] == ap50, group
    ap, ap50 = direct_cocoeval(gt, dets, [22])
    assert metrics["per_category"]["elephant"]["AP"] == pytest.approx(ap, abs=1e-12)
    assert metrics["per_category"]["elephant"]["AP50"] == pytest.approx(ap50, abs=1e-12)


def test_category_in_neither_half_is_ignored(split_file):
    gt, dets = make_gt(), mixed_detections()
    metrics = evaluate_coco(gt, dets, split_file)
    assert "zebra" not in metrics["per_category"]

    # Without the zebra ground truth and detections nothing changes...
    gt_no_zebra = make_gt()
    gt_no_zebra["annotations"] = [a for a in gt["annotations"] if a["category_id"] not in NEITHER]
    no_zebra = [d for d in dets if d["category_id"] not in NEITHER]
    assert any(d["category_id"] in NEITHER for d in dets)
    other = evaluate_coco(gt_no_zebra, no_zebra, split_file)
    for group in ("all", "base", "novel"):
        assert other[group] == metrics[group]

    # ...and perfect zebra detections do not lift "all" either.
    zebra_hits = [d for d in perfect_detections(score=1.0) if d["category_id"] in NEITHER]
    assert evaluate_coco(gt, dets + zebra_hits, split_file)["all"] == metrics["all"]


def test_per_category_kinds(split_file):
    metrics = evaluate_coco(make_gt(), perfect_detections(), split_file)
    kinds = {name: row["kind"] for name, row in metrics["per_category"].items()}
    assert kinds == {
        "apple": "base",
        "banana": "base",
        "carrot": "base",
        "dog": "novel",
        "elephant": "novel",
    }


def test_split_object_and_no_split():
    gt = make_gt()
    split = OpenVocabularySplit(("apple", "banana", "carrot"), ("dog", "elephant"))
    dets = [d for d in perfect_detections() if d["category_id"] != 31]
    assert evaluate_coco(gt, dets, split)["all"]["AP"] == pytest.approx(1.0)

    # Without a split every category is base, the zebra included (and missed here).
    metrics = evaluate_coco(gt, dets, None)
    assert metrics["all"]["num_categories"] == 6
    assert metrics["base"]["AP"] == pytest.approx(5 / 6)
    assert metrics["novel"] == {"AP": None, "AP50": None, "num_categories": 0}
    assert metrics["per_category"]["zebra"] == {"AP": 0.0, "AP50": 0.0, "kind": "base"}


def test_split_matching_no_category_is_an_error():
    with pytest.raises(DataError, match="none of the dataset"):
        evaluate_coco(make_gt(), [], OpenVocabularySplit(("airplane",), ("bus",)))


@pytest.mark.parametrize("as_file", [False, True])
def test_empty_results_score_zero(split_file, tmp_path, as_file):
    results = []
    if as_file:
        results = tmp_path / "empty.json"
        results.write_text("[]")
    metrics = evaluate_coco(make_gt(), results, split_file)
    for group in ("all", "base", "novel"):
        assert metrics[group]["AP"] == 0.0
        assert metrics[group]["AP50"] == 0.0
    assert metrics["num_detections"] == 0
    assert len(metrics["per_category"]) == 5


def test_only_ignored_category_detections_score_zero(split_file):
    dets = [d for d in perfect_detections() if d["category_id"] in NEITHER]
    metrics = evaluate_coco(make_gt(), dets, split_file)
    assert metrics["all"]["AP"] == 0.0
    assert metrics["num_detections"] == 2


def test_inputs_are_not_modified(split_file, tmp_path):
    gt, dets = make_gt(), mixed_detections()
    gt_copy, dets_copy = copy.deepcopy(gt), copy.deepcopy(dets)
    from_memory = evaluate_coco(gt, dets, split_file)
    assert gt == gt_copy
    assert dets == dets_copy
    gt_path, dets_path = tmp_path / "gt.json", tmp_path / "dets.json"
    gt_path.write_text(json.dumps(gt))
    dets_path.write_text(json.dumps(dets))
    assert evaluate_coco(gt_path, str(dets_path), split_file) == from_memory


# --- results validation -------------------------------------------------------------------------

GOOD = {"image_id": 1, "category_id": 11, "bbox": [1, 2, 3, 4], "score": 0.5}


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"image_id": 1, "category_id": 11, "bbox": [1, 2, 3, 4]}, "missing key.*score"),
        ({"category_id": 11, "bbox": [1, 2, 3, 4], "score": 0.5}, "missing key.*image_id"),
        ({**GOOD, "category_id": 99}, "unknown category_id 99"),
        ({**GOOD, "image_id": 99}, "unknown image_id 99"),
        ({**GOOD, "image_id": "1"}, "image_id must be an integer"),
        ({**GOOD, "bbox": [1, 2, 3]}, "bbox must be 4 numbers"),
        ({**GOOD, "bbox": [1, 2, "3", 4]}, "bbox must be 4 numbers"),
        ({**GOOD, "bbox": [1, 2, -3, 4]}, "negative width or height"),
        ({**GOOD, "bbox": [1, 2, 3, -0.5]}, "negative width or height"),
        ({**GOOD, "bbox": [1, math.nan, 3, 4]}, "non-finite"),
        ({**GOOD, "bbox": [1, 2, math.inf, 4]}, "non-finite"),
        ({**GOOD, "score": math.nan}, "score is not finite"),
        ({**GOOD, "score": -math.inf}, "score is not finite"),
        ({**GOOD, "score": "high"}, "score must be a number"),
        ([1, 2, 3, 4], "expected an object"),
    ],
)
@pytest.mark.parametrize("as_file", [False, True])
def test_bad_results_entry(tmp_path, bad, message, as_file):
    results = [GOOD, bad]
    if as_file:
        results = tmp_path / "results.json"
        results.write_text(json.dumps([GOOD, bad]))  # NaN / Infinity round-trip through json
    with pytest.raises(ResultsError, match=f"entry 1: .*{message}"):
        load_results(results, make_gt())
    with pytest.raises(ResultsError, match="entry 1"):
        evaluate_coco(make_gt(), results)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"image_id": 1}', "must be a JSON list"),
        ('"detections"', "must be a JSON list"),
        ("[{", "not valid JSON"),
    ],
)
def test_bad_results_file(tmp_path, text, message):
    path = tmp_path / "results.json"
    path.write_text(text)
    with pytest.raises(ResultsError, match=message):
        load_results(path, make_gt())


def test_missing_results_file(tmp_path):
    with pytest.raises(ResultsError, match="cannot read results file"):
        load_results(tmp_path / "nope.json", make_gt())


def test_load_results_cleans_entries():
    det = {**GOOD, "bbox": (1, 2, 3, 4), "segmentation": [[0, 0]], "extra": 1}
    (clean,) = load_results([det], make_gt())
    assert clean == {"image_id": 1, "category_id": 11, "bbox": [1.0, 2.0, 3.0, 4.0], "score": 0.5}
    assert load_results([], make_gt()) == []
    # numpy scalars, as a model's outputs often are, are accepted and turned into Python numbers.
    (clean,) = load_results(
        [{**GOOD, "image_id": np.int64(1), "score": np.float32(0.25)}], make_gt()
    )
    assert clean["score"] == 0.25 and type(clean["score"]) is float
    assert type(clean["image_id"]) is int
    # A detection of a category in neither half of a split is still a valid detection.
    assert len(load_results([{**GOOD, "category_id": 31}], make_gt())) == 1


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda gt: gt.pop("images"), "images"),
        (lambda gt: gt["annotations"][2].pop("bbox"), r"annotations\[2\] has no 'bbox'"),
        (lambda gt: gt["annotations"][0].update(category_id=5), "unknown category_id 5"),
        (lambda gt: gt["categories"][1].update(name="Apple"), "duplicate category names"),
    ],
)
def test_bad_ground_truth(mutate, message):
    gt = make_gt()
    mutate(gt)
    with pytest.raises(DataError, match=message):
        load_ground_truth(gt)


def test_missing_ground_truth_file(tmp_path):
    with pytest.raises(DataError, match="cannot read annotation file"):
        evaluate_coco(tmp_path / "nope.json", [])


# --- table ----------------------------------------------------------------------------------------


def test_format_table(split_file):
    metrics = evaluate_coco(make_gt(), mixed_detections(), split_file)
    lines = format_table(metrics).splitlines()
    assert lines[0] == f"split: split, {metrics['num_detections']} detections"
    assert lines[1].split() == ["group", "AP", "AP50", "#categories"]
    for line, group in zip(lines[2:], ("all", "base", "novel")):
        row = metrics[group]
        assert line.split() == [
            group,
            f"{100 * row['AP']:.1f}",
            f"{100 * row['AP50']:.1f}",
            str(row["num_categories"]),
        ]
    assert len({len(line) for line in lines[1:]}) == 1  # fixed width


def test_format_table_group_without_ground_truth():
    metrics = evaluate_coco(make_gt(), perfect_detections(), None)
    novel = format_table(metrics).splitlines()[-1]
    assert novel.split() == ["novel", "-", "-", "0"]


# --- LVIS -----------------------------------------------------------------------------------------

LVIS_CATS = [(1, "apple", "f"), (2, "banana", "c"), (3, "cherry", "r")]
# (image_id, category_id, box)
LVIS_BOXES = [
    (1, 1, [10, 10, 50, 40]),
    (1, 3, [100, 100, 60, 80]),
    (2, 2, [30, 30, 70, 50]),
    (2, 1, [120, 20, 40, 60]),
    (3, 3, [50, 60, 40, 40]),
    (3, 2, [110, 110, 80, 70]),
]


def make_lvis_gt() -> dict:
    def polygon(x, y, w, h):
        return [[x, y, x + w, y, x + w, y + h, x, y + h]]

    gt = {
        "images": [
            # Image 1 is verified to hold no banana; image 2 says nothing of cherries.
            {"id": 1, "neg_category_ids": [2], "not_exhaustive_category_ids": []},
            {"id": 2, "neg_category_ids": [], "not_exhaustive_category_ids": []},
            {"id": 3, "neg_category_ids": [1], "not_exhaustive_category_ids": []},
        ],
        "categories": [
            {
                "id": cid,
                "name": name,
                "synset": f"{name}.n.01",
                "frequency": freq,
                "image_count": 2,
                "instance_count": 2,
            }
            for cid, name, freq in LVIS_CATS
        ],
        "annotations": [
            {
                "id": n + 1,
                "image_id": image_id,
                "category_id": cat_id,
                "bbox": box,
                "area": box[2] * box[3],
                "segmentation": polygon(*box),
            }
            for n, (image_id, cat_id, box) in enumerate(LVIS_BOXES)
        ],
    }
    for img in gt["images"]:
        img.update(height=200, width=200, file_name=f"{img['id']}.jpg")
    return gt


def lvis_perfect() -> list[dict]:
    return [
        {"image_id": i, "category_id": c, "bbox": list(box), "score": 0.9}
        for i, c, box in LVIS_BOXES
    ]


def test_lvis_perfect_and_rare_removed():
    metrics = evaluate_lvis(make_lvis_gt(), lvis_perfect())
    for key in ("AP", "AP50", "APr", "APc", "APf"):
        assert metrics[key] == pytest.approx(1.0)
    assert metrics["split"] == "lvis"

    metrics = evaluate_lvis(make_lvis_gt(), [d for d in lvis_perfect() if d["category_id"] != 3])
    assert metrics["APr"] == 0.0
    assert metrics["APc"] == pytest.approx(1.0)
    assert metrics["APf"] == pytest.approx(1.0)
    assert metrics["AP"] == pytest.approx(2 / 3)
    # The default split makes rare categories novel.
    assert metrics["all"]["AP"] == metrics["AP"]
    assert metrics["novel"]["AP"] == metrics["APr"]
    assert metrics["novel"]["num_categories"] == 1
    assert metrics["base"]["AP"] == pytest.approx(1.0)
    assert metrics["per_category"]["cherry"]["kind"] == "novel"


def test_lvis_is_federated():
    # A false positive of a category an image is not verified for is not penalised...
    unverified = {"image_id": 2, "category_id": 3, "bbox": [0, 0, 20, 20], "score": 1.0}
    metrics = evaluate_lvis(make_lvis_gt(), lvis_perfect() + [unverified])
    assert metrics["APr"] == pytest.approx(1.0)
    # ...one of a category verified absent is.
    negative = {"image_id": 1, "category_id": 2, "bbox": [0, 0, 20, 20], "score": 1.0}
    metrics = evaluate_lvis(make_lvis_gt(), lvis_perfect() + [negative])
    assert metrics["APc"] < 1.0
    assert metrics["APf"] == pytest.approx(1.0)


def test_lvis_empty_results_and_file_input(tmp_path):
    gt_path = tmp_path / "lvis.json"
    gt_path.write_text(json.dumps(make_lvis_gt()))
    metrics = evaluate_lvis(gt_path, [])
    for key in ("AP", "AP50", "APr", "APc", "APf"):
        assert metrics[key] == 0.0
    assert metrics["num_detections"] == 0
    assert "APr" in format_table(metrics)


def test_lvis_rejects_coco_ground_truth():
    with pytest.raises(DataError, match="LVIS annotation file"):
        evaluate_lvis(make_gt(), [])


def test_lvis_bad_results():
    with pytest.raises(ResultsError, match="entry 0: unknown category_id 7"):
        evaluate_lvis(make_lvis_gt(), [{**GOOD, "category_id": 7}])

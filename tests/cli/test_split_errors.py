"""``ovdet-evaluate`` with a split file holding a typo: one ``error:`` line naming the name and the
closest category, exit status 2, instead of a run that leaves the class out silently."""

from __future__ import annotations

import json

import pytest

from ovdet.cli.evaluate import main
from tests.conftest import assert_one_line_error

CATEGORIES = [{"id": 1, "name": "red square"}, {"id": 2, "name": "blue star"}]


def test_typo_in_split_file_is_a_one_line_error(tmp_path, capsys):
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.png", "width": 40, "height": 40}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 2, "bbox": [2, 2, 9, 9],
                         "area": 81, "iscrowd": 0}],
        "categories": CATEGORIES,
    }))  # fmt: skip
    results = tmp_path / "results.json"
    results.write_text(json.dumps([{"image_id": 1, "category_id": 2, "bbox": [2, 2, 9, 9],
                                    "score": 0.9}]))  # fmt: skip
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"base": ["red square"], "novel": ["blue sta"]}))
    out = tmp_path / "out" / "metrics.json"
    argv = ["--gt", str(gt), "--results", str(results), "--split", str(split)]
    assert main([*argv, "--output", str(out)]) == 2
    line = assert_one_line_error(capsys.readouterr().err)
    assert line == (
        f"error: split file {split}: 1 name matches no category of the annotations: 'blue sta' "
        "(did you mean 'blue star'?); 1 category is neither base, novel nor excluded: "
        "'blue star' (list a category under 'excluded' to leave it out on purpose)"
    )
    assert not out.exists()

    split.write_text(json.dumps({"base": ["red square"], "novel": ["blue star"]}))
    assert main([*argv, "--output", str(out)]) == 0
    assert json.loads(out.read_text())["novel"]["AP"] == pytest.approx(1.0)

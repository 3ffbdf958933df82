"""The web demo's exemplar classes without a browser: a box drawn on an image's editor layer
(or typed) becomes a class of the next requests; bad boxes are one-line messages."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ovdet.demo import detect_files
from ovdet.demo.classes import parse_class_box
from ovdet.demo.exemplars import add_exemplar_class, drawn_box
from ovdet.utils.errors import VocabularyError
from tests.demo.test_demo import demo_checkpoint, demo_model, red_square_image  # noqa: F401


def _editor(height: int = 40, width: int = 60, stroke=None) -> dict:
    """An image editor's value: a grey background and one layer with a drawn stroke."""
    background = np.full((height, width, 3), 120, np.uint8)
    layer = np.zeros((height, width, 4), np.uint8)
    if stroke is not None:
        x1, y1, x2, y2 = stroke
        layer[y1:y2, x1:x2] = (255, 0, 0, 255)
    return {"background": background, "layers": [layer], "composite": background}


def test_the_box_around_the_drawn_pixels():
    assert drawn_box(_editor(stroke=(10, 5, 30, 25))) == (10.0, 5.0, 20.0, 20.0)
    assert drawn_box(_editor()) is None  # nothing drawn: the whole image


def test_exemplar_classes_are_added_and_bad_ones_are_messages():
    specs, status = add_exemplar_class([], "logo", _editor(stroke=(10, 5, 30, 25)), "", False)
    assert status == "exemplar classes: logo: 1 box(es)"
    assert specs[0].exemplars[0].box == (10.0, 5.0, 20.0, 20.0)
    specs, status = add_exemplar_class(specs, "logo", _editor(), "0,0,8,8", False)  # typed box
    assert status == "exemplar classes: logo: 2 box(es)" and specs[1].exemplars[0].box[2] == 8
    for name, editor, box, message in [
        ("", _editor(), "", "error: name the exemplar class"),
        ("mug", None, "", "error: upload an image"),
        ("mug", _editor(), "50,0,20,5", "error: exemplar box <array 40x60>:50,0,20,5 is not"),
        ("mug", _editor(), "1,2,3", "error: the box '1,2,3' is not four numbers"),
        ("logo", _editor(), "", "error: class 'logo' is given both by exemplars alone"),
    ]:
        kept, status = add_exemplar_class(specs, name, editor, box, name == "logo")
        assert kept == specs and status.startswith(message), status
        assert "\n" not in status


def test_the_class_box_does_not_read_exemplar_files():
    with pytest.raises(VocabularyError, match="cannot give exemplar classes"):
        parse_class_box("red square\nlogo=/etc/hostname\n")


def test_a_request_with_an_exemplar_class(demo_model, tmp_path):  # noqa: F811
    image = red_square_image(tmp_path / "photo.png")
    editor = _editor(64, 64)
    editor["background"] = np.asarray(Image.open(image).convert("RGB"))
    specs, _ = add_exemplar_class([], "my thing", editor, "16,20,25,25", False)
    result = detect_files(demo_model, [image], "red square", "a", 0.0, False, exemplars=specs)
    assert result.messages == []
    assert result.results["categories"] == [
        {"id": 1, "name": "red square", "novel": False},
        {"id": 2, "name": "my thing", "novel": True, "query": "exemplar"},
    ]
    kinds = {row[1]: row[4] for row in result.rows}
    assert kinds.get("my thing", "novel, exemplar") == "novel, exemplar"
    assert any(d.get("query") == "exemplar" for d in result.results["detections"])

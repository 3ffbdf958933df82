"""Readable pictures: label layout, stable colours, novel marking, legend
(ovdet.utils.visualizer)."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from ovdet.utils.visualizer import (
    NOVEL_MARK,
    color_for,
    draw_detections,
    label_text,
    layout_labels,
)


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _crowded_scene(seed: int, n: int, width: int = 320, height: int = 240):
    """n boxes piled on each other, many touching or crossing the image border."""
    rng = np.random.default_rng(seed)
    x1 = rng.uniform(-20, width - 10, n)
    y1 = rng.uniform(-20, height - 10, n)
    boxes = np.stack(
        [x1, y1, x1 + rng.uniform(8, 120, n), y1 + rng.uniform(8, 90, n)], axis=1
    ).clip(0, [width, height, width, height])
    sizes = [(int(w), int(h)) for w, h in zip(rng.integers(20, 110, n), rng.integers(9, 18, n))]
    scores = rng.uniform(0, 1, n).tolist()
    return boxes, sizes, scores, (width, height)


@pytest.mark.parametrize("seed", range(5))
def test_crowded_labels_never_overlap_and_stay_inside(seed):
    boxes, sizes, scores, (width, height) = _crowded_scene(seed, n=60)
    rects = layout_labels(boxes, sizes, scores, (width, height))
    placed = [r for r in rects if r is not None]
    assert len(placed) >= 10  # the layout does place labels, it does not just drop them
    assert len(placed) < len(rects)  # crowded enough that some had to give way
    for rect, size in zip(rects, sizes):
        if rect is not None:
            x1, y1, x2, y2 = rect
            assert min(x1, y1) >= 0 and x2 <= width and y2 <= height
            assert (x2 - x1, y2 - y1) == size  # labels are moved, never squeezed
    for a, b in itertools.combinations(placed, 2):
        assert not _overlap(a, b)


def test_lower_scored_label_gives_way():
    # Two identical boxes filling the image: one place each side is not enough for both
    # labels... only the best one keeps its label.
    boxes = [[0, 0, 100, 20], [0, 0, 100, 20]]
    rects = layout_labels(boxes, [(100, 20), (100, 20)], [0.3, 0.9], (100, 20))
    assert rects[1] == (0, 0, 100, 20)
    assert rects[0] is None


def test_label_moves_instead_of_leaving_the_image():
    # A box in the top-right corner: "above" and "left-aligned" would leave the image.
    rects = layout_labels([[90, 0, 100, 10]], [(40, 12)], [0.5], (100, 80))
    assert rects == [(60, 0, 100, 12)]
    # A second label on the same box goes inside or below it, not over the first.
    rects = layout_labels([[60, 0, 100, 30]] * 2, [(40, 12)] * 2, [0.9, 0.5], (100, 80))
    assert rects[0] == (60, 0, 100, 12) and rects[1] is not None
    assert not _overlap(rects[0], rects[1])


def test_label_larger_than_the_image_is_dropped():
    assert layout_labels([[0, 0, 5, 5]], [(50, 10)], [1.0], (20, 20)) == [None]


def test_a_box_whose_label_gives_way_is_still_drawn():
    # Two boxes side by side; the picture is too small for both labels (each wider than half
    # of it, two rows do not fit): the better-scored one keeps its label, both keep their box.
    image = np.zeros((30, 160, 3), np.uint8)
    boxes = [[5, 3, 75, 27], [85, 3, 155, 27]]
    names = ["long_class_a", "long_class_b"]
    drawn = np.asarray(draw_detections(image, boxes, [0.4, 0.9], names, line_width=1, font_size=14))
    assert drawn.shape == image.shape
    low, high = ((drawn == color_for(n)).all(axis=2) for n in names)
    assert low[27, 6:75].all()  # the lower-scored box's bottom edge is drawn ...
    assert low.sum() <= 2 * (70 + 24)  # ... and nothing else of its colour: no label
    assert high.sum() > 2 * (70 + 24) + 500  # the better one has its label (a filled patch)


def test_colours_are_stable_per_class_and_across_processes():
    assert color_for("red circle") == color_for("red circle")
    names = ["person", "dog", "red circle", "umbrella", "kite"]
    assert len({color_for(n) for n in names}) == len(names)
    # hash() would differ between processes; the colour must not.
    code = f"from ovdet.utils.visualizer import color_for; print([color_for(n) for n in {names!r}])"
    env = dict(os.environ, PYTHONHASHSEED="123")
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == str([color_for(n) for n in names])
    # Two boxes of one class are drawn in that class's colour.
    image = np.zeros((100, 200, 3), np.uint8)
    drawn = np.asarray(
        draw_detections(image, [[10, 50, 60, 90], [120, 50, 190, 90]], [0.9, 0.8], ["dog"] * 2)
    )
    assert tuple(drawn[70, 10]) == tuple(drawn[70, 120]) == color_for("dog")


def _edge_coloured_fraction(drawn: np.ndarray, y: int, x1: int, x2: int, color) -> float:
    return float((drawn[y, x1:x2] == color).all(axis=1).mean())


def test_novel_classes_are_marked():
    assert label_text("cat", 0.5, novel=True) == f"cat{NOVEL_MARK} 0.50"
    assert NOVEL_MARK not in label_text("cat", 0.5, novel=False)
    image = np.zeros((200, 300, 3), np.uint8)
    boxes = [[20, 60, 130, 180], [160, 60, 280, 180]]
    drawn = np.asarray(
        draw_detections(image, boxes, [0.9, 0.9], ["cat", "cat"], line_width=2, novel=[False, True])
    )
    color = color_for("cat")
    # The bottom edge: solid for the base detection, dashed (gaps) for the novel one.
    assert _edge_coloured_fraction(drawn, 180, 20, 130, color) == 1.0
    assert 0.3 < _edge_coloured_fraction(drawn, 180, 160, 280, color) < 0.8


def test_legend_lists_the_classes_drawn():
    image = np.zeros((120, 160, 3), np.uint8)
    names = ["dog", "kite", "dog"]
    plain = draw_detections(image, [[5, 20, 50, 60]] * 3, [0.9, 0.8, 0.7], names)
    with_legend = draw_detections(
        image, [[5, 20, 50, 60]] * 3, [0.9, 0.8, 0.7], names, novel=[False, True, False],
        legend=True,
    )  # fmt: skip
    assert plain.size == (160, 120)
    assert with_legend.width > 160 and with_legend.height >= 120
    panel = np.asarray(with_legend)[:, 160:]
    for name in ("dog", "kite"):  # a swatch in each class's colour
        assert (panel == color_for(name)).all(axis=2).sum() >= 20, name
    # The picture itself is unchanged by the legend.
    assert np.array_equal(np.asarray(with_legend)[:120, :160], np.asarray(
        draw_detections(image, [[5, 20, 50, 60]] * 3, [0.9, 0.8, 0.7], names,
                        novel=[False, True, False])
    ))  # fmt: skip


def test_mismatched_inputs_are_an_error():
    with pytest.raises(ValueError, match="differ"):
        draw_detections(np.zeros((10, 10, 3), np.uint8), [[0, 0, 5, 5]], [0.5], ["a", "b"])
    with pytest.raises(ValueError, match="differ"):
        layout_labels([[0, 0, 5, 5]], [(3, 3)], [0.5, 0.2], (10, 10))


def test_empty_detections_leave_the_image_alone():
    image = np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8)
    drawn = draw_detections(image, np.zeros((0, 4)), [], [], legend=True)
    assert isinstance(drawn, Image.Image)
    assert np.array_equal(np.asarray(drawn), image)

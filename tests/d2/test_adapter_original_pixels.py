"""``ovdet-infer --d2-config``'s adapter reports boxes in the original image's pixels when a file
above its load limit is downscaled on load (docs/RELIABILITY.md), as the default engine does."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("detectron2", reason="detectron2 is not installed")

from ovdet.d2.predictor import D2DetectorAdapter  # noqa: E402
from tests.cli.test_huge_images import FACTOR, LOAD_LIMIT, SMALL, write_scene  # noqa: E402


class _WholeImagePredictor:
    """Stands in for OpenVocabularyD2Predictor: one box around the whole array it is given, in
    that array's pixels (as detectron2 reports them)."""

    def __init__(self) -> None:
        self.classes = ["red square"]
        self.class_kinds = ["text"]
        self.batch_size = 1
        self.seen: list[tuple[int, ...]] = []

    def predict(self, images, score_thresh=None) -> list[dict]:
        out = []
        for image in images:
            self.seen.append(image.shape)
            height, width = image.shape[:2]
            out.append(
                {"boxes": torch.tensor([[0.0, 0.0, width, height]]), "scores": torch.ones(1),
                 "labels": torch.zeros(1, dtype=torch.long), "embeddings": torch.zeros(1, 4)}
            )  # fmt: skip
        return out


def test_boxes_of_a_file_downscaled_on_load_are_in_its_pixels(tmp_path):
    small, big = write_scene(tmp_path)
    predictor = _WholeImagePredictor()
    adapter = D2DetectorAdapter(predictor, max_load_pixels=LOAD_LIMIT)
    on_small, on_big = adapter.predict([small, big])
    assert predictor.seen == [(SMALL[1], SMALL[0], 3)] * 2  # the big one downscaled on load
    np.testing.assert_allclose(on_small.boxes, [[0, 0, *SMALL]])
    np.testing.assert_allclose(on_big.boxes, [[0, 0, SMALL[0] * FACTOR, SMALL[1] * FACTOR]])
    [on_array] = adapter.predict(np.zeros((5, 7, 3), np.uint8))  # an array is its own original
    np.testing.assert_allclose(on_array.boxes, [[0, 0, 7, 5]])

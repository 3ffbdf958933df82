"""COCO segmentations through the loader (``with_masks``) and the augmentation pipeline."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from ovdet.config import load_config
from ovdet.data.coco import load_coco_detection
from ovdet.data.dataset import DetectionDataset
from ovdet.data.segmentation import (
    BAD_RLE,
    NO_MASK,
    OTHER_SIZE,
    SHORT_POLYGON,
    decode_masks,
    rle_run_lengths,
)
from ovdet.data.transforms import build_augmentation

W, H = 40, 30


def _mask(x1: int, y1: int, x2: int, y2: int) -> np.ndarray:
    m = np.zeros((H, W), np.uint8)
    m[y1:y2, x1:x2] = 1
    return m


def _rle(mask: np.ndarray, compressed: bool = True) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask))
    if compressed:
        return {"size": [H, W], "counts": rle["counts"].decode("ascii")}
    flat = mask.flatten(order="F")
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    return {"size": [H, W], "counts": np.diff(np.concatenate([[0], edges])).tolist()}


def _ann(i: int, box, segmentation, **extra) -> dict:
    return {"id": i, "image_id": 1, "category_id": 1, "bbox": box, "segmentation": segmentation,
            **extra}  # fmt: skip


def _write(tmp_path, annotations) -> tuple:
    Image.new("RGB", (W, H), (90, 90, 90)).save(tmp_path / "a.png")
    path = tmp_path / "ann.json"
    data = {"images": [{"id": 1, "file_name": "a.png", "width": W, "height": H}],
            "annotations": annotations, "categories": [{"id": 1, "name": "thing"}]}  # fmt: skip
    path.write_text(json.dumps(data))
    return path, tmp_path


def test_run_lengths_of_compressed_rle_are_pycocotools():
    rng = np.random.default_rng(0)
    for density in (0.0, 0.1, 0.5, 0.97):
        mask = (rng.random((H, W)) < density).astype(np.uint8)
        runs = rle_run_lengths(_rle(mask)["counts"])
        assert runs == _rle(mask, compressed=False)["counts"]
        assert sum(runs) == H * W
    assert rle_run_lengths("\x01") is None
    assert rle_run_lengths("`") is None  # a group announcing another that never comes


def test_polygons_and_rle_load_as_their_masks_and_crowds_are_ignored(tmp_path):
    square = [5.0, 5.0, 15.0, 5.0, 15.0, 15.0, 5.0, 15.0]
    annotations = [
        _ann(1, [5, 5, 10, 10], [square]),
        _ann(2, [20, 10, 10, 8], _rle(_mask(20, 10, 30, 18))),
        _ann(3, [2, 20, 6, 5], _rle(_mask(2, 20, 8, 25), compressed=False)),
        _ann(4, [0, 0, 40, 30], _rle(_mask(0, 0, 40, 30)), iscrowd=1),
    ]
    records = load_coco_detection(*_write(tmp_path, annotations), with_masks=True)
    (rec,) = records.images
    masks = decode_masks(rec.segmentations, W, H)
    assert masks.shape == (3, H, W) and masks.dtype == np.uint8
    assert masks[0, 6:14, 6:14].all() and masks[0].sum() < 12 * 12
    assert np.array_equal(masks[1], _mask(20, 10, 30, 18))
    assert np.array_equal(masks[2], _mask(2, 20, 8, 25))
    assert records.counts["crowd annotations ignored"] == 1
    # Without masks the segmentations are not read.
    assert load_coco_detection(*_write(tmp_path, annotations)).images[0].segmentations is None


def test_every_bad_mask_gets_its_counted_warning(tmp_path, caplog):
    good = [1.0, 1.0, 9.0, 1.0, 9.0, 9.0]
    rle = _rle(_mask(0, 0, 10, 10))
    annotations = [
        _ann(1, [1, 1, 8, 8], [good, [1.0, 1.0, 5.0, 5.0]]),  # one short polygon: kept
        _ann(2, [1, 1, 8, 8], [[1.0, 1.0, 5.0, 5.0]]),  # no polygon left: dropped
        _ann(3, [1, 1, 8, 8], {"size": [W, H], "counts": rle["counts"]}),  # transposed size
        _ann(4, [1, 1, 8, 8], {"size": [H, W], "counts": rle["counts"][:-3]}),  # truncated
        _ann(5, [1, 1, 8, 8], {"size": [H, W], "counts": [5, 7]}),  # runs don't cover the image
        _ann(6, [1, 1, 8, 8], None),  # no mask at all
        _ann(7, [1, 1, 8, 8], {"size": [H, W], "counts": "\x07bad"}),
    ]
    with caplog.at_level(logging.WARNING, logger="ovdet.data.coco"):
        records = load_coco_detection(*_write(tmp_path, annotations), with_masks=True)
    assert len(records.images[0].labels) == 1
    assert records.counts[SHORT_POLYGON] == 2
    assert records.counts[OTHER_SIZE] == 1
    assert records.counts[BAD_RLE] == 3
    assert records.counts[NO_MASK] == 6
    for what in (SHORT_POLYGON, OTHER_SIZE, BAD_RLE, NO_MASK):
        assert sum(what in r.getMessage() for r in caplog.records) == 1, what


@pytest.mark.parametrize("flip", [0.0, 1.0])
def test_augmentation_moves_masks_with_boxes(tmp_path, flip):
    annotations = [
        _ann(1, [4, 6, 10, 8], _rle(_mask(4, 6, 14, 14))),
        _ann(2, [20, 2, 16, 20], _rle(_mask(20, 2, 36, 22))),
    ]
    records = load_coco_detection(*_write(tmp_path, annotations), with_masks=True)
    cfg = load_config("tiny", ["INPUT.MIN_SIZE_TRAIN", "[60]", "INPUT.HFLIP_PROB", str(flip)])
    dataset = DetectionDataset(records, build_augmentation(cfg, is_train=True))
    image, target = dataset[(0, 3)]
    masks = target["masks"]
    assert masks.shape == (2, *image.shape[1:]) and image.shape[1] == 60
    for box, mask in zip(target["boxes"].tolist(), masks.numpy()):
        ys, xs = np.nonzero(mask)
        got = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        assert np.allclose(got, box, atol=1), (got, box)
    assert (target["boxes"][0, 0] > 30) == (flip == 1.0)  # the first object moved right

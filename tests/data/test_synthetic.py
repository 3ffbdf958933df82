"""Tests of the synthetic colour x shape dataset generator."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from ovdet.cli.make_synthetic import main as make_synthetic_main
from ovdet.data.splits import load_split
from ovdet.data.synthetic import (
    CLASS_NAMES,
    COLORS,
    SHAPES,
    generate_synthetic_dataset,
    make_caption,
    render_scene,
    synthetic_categories,
    synthetic_split,
)
from ovdet.utils.errors import DataError

SIZES = {
    "num_train_images": 12,
    "num_val_images": 6,
    "num_caption_crops": 80,
    "num_val_caption_crops": 70,
}


def _generate(path: Path, **kwargs):
    options = {**SIZES, "progress": False, **kwargs}
    return generate_synthetic_dataset(path, **options)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return _generate(tmp_path_factory.mktemp("synthetic") / "data")


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _read_csv(path: Path) -> list[dict]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def test_classes_and_categories():
    assert len(CLASS_NAMES) == len(set(CLASS_NAMES)) == 64
    cats = synthetic_categories()
    assert [c["name"] for c in cats] == list(CLASS_NAMES)
    ids = [c["id"] for c in cats]
    assert len(set(ids)) == 64 and min(ids) >= 1
    assert ids != list(range(len(ids))) and ids != list(range(1, len(ids) + 1))


def test_split_is_a_compositional_latin_square():
    split = synthetic_split()
    assert len(split.base) == 48 and len(split.novel) == 16
    assert not set(split.base) & set(split.novel)
    assert set(split.base) | set(split.novel) == set(CLASS_NAMES)
    base_colors = {n.split()[0] for n in split.base}
    base_shapes = {n.split()[1] for n in split.base}
    for name in split.novel:
        color, shape = name.split()
        assert color in base_colors and shape in base_shapes
    for color in COLORS:
        assert sum(n.split()[0] == color for n in split.novel) == 2
    for shape in SHAPES:
        assert sum(n.split()[1] == shape for n in split.novel) == 2


def test_split_file(dataset):
    data = json.loads(dataset.split_file.read_text())
    assert set(data) == {"base", "novel"}
    loaded = load_split(str(dataset.split_file))
    assert loaded.base == synthetic_split().base and loaded.novel == synthetic_split().novel


def test_same_seed_gives_identical_files(dataset, tmp_path):
    again = _generate(tmp_path / "again")
    first, second = _files(dataset.root), _files(again.root)
    assert first.keys() == second.keys()
    assert all(first[k] == second[k] for k in first)


def test_different_seed_differs(dataset, tmp_path):
    other = _generate(tmp_path / "other", seed=1)
    assert other.train_annotations.read_bytes() != dataset.train_annotations.read_bytes()
    image = "000001.png"
    assert (other.train_images / image).read_bytes() != (dataset.train_images / image).read_bytes()


def test_items_do_not_depend_on_counts(dataset, tmp_path):
    fewer = _generate(
        tmp_path / "fewer",
        num_train_images=3,
        num_val_images=0,
        num_caption_crops=5,
        num_val_caption_crops=0,
    )
    for i in range(1, 4):
        name = f"{i:06d}.png"
        assert (fewer.train_images / name).read_bytes() == (
            dataset.train_images / name
        ).read_bytes()


@pytest.mark.parametrize("split", ["train", "val"])
def test_coco_files_are_valid(dataset, split):
    path = dataset.train_annotations if split == "train" else dataset.val_annotations
    image_dir = dataset.train_images if split == "train" else dataset.val_images
    coco = COCO(str(path))
    n_images = SIZES[f"num_{split}_images"]
    assert len(coco.getImgIds()) == n_images
    by_name = {c["name"]: c["id"] for c in coco.loadCats(coco.getCatIds())}
    assert set(by_name) == set(CLASS_NAMES)
    for image in coco.loadImgs(coco.getImgIds()):
        with Image.open(image_dir / image["file_name"]) as im:
            assert im.size == (image["width"], image["height"]) == (128, 128)
            assert im.mode == "RGB"
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image["id"]))
        assert 1 <= len(anns) <= 5
        for ann in anns:
            x, y, w, h = ann["bbox"]
            assert x >= 0 and y >= 0 and w > 0 and h > 0
            assert x + w <= image["width"] and y + h <= image["height"]
            assert 0.1 * w * h < ann["area"] <= w * h
            assert ann["iscrowd"] == 0
            assert ann["category_id"] in by_name.values()
    ann_ids = coco.getAnnIds()
    assert len(set(ann_ids)) == len(ann_ids) and min(ann_ids) >= 1


@pytest.mark.parametrize("split", ["train", "val"])
def test_masks_are_the_visible_pixels_of_each_object(dataset, split):
    """Each annotation's RLE is its object's exact visible mask: its pixel count is the area,
    its extent the box, and the objects of an image do not overlap."""
    coco = COCO(str(dataset.train_annotations if split == "train" else dataset.val_annotations))
    for image_id in coco.getImgIds():
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
        masks = np.stack([coco.annToMask(a) for a in anns]).astype(bool)
        assert masks.sum(0).max() == 1  # each pixel shows one object at most
        for ann, mask in zip(anns, masks):
            ys, xs = np.nonzero(mask)
            assert mask.sum() == ann["area"]
            assert [xs.min(), ys.min(), np.ptp(xs) + 1, np.ptp(ys) + 1] == ann["bbox"]


def test_render_scene_owner_map_is_the_objects_mask():
    rng = np.random.default_rng(3)
    scene = render_scene(rng, [CLASS_NAMES.index("red circle")], min_visible=1.0)
    (x, y, w, h) = scene.boxes[0]
    mask = scene.owner == 0
    assert mask.sum() == scene.areas[0] and not mask[:y].any() and not mask[:, x + w :].any()
    # The drawn colour is where the mask is, and not around it.
    red = (scene.image[..., 0] > 150) & (scene.image[..., 1] < 100)
    assert red[mask].mean() > 0.9 and red[~mask].mean() < 0.05


def test_train_annotations_keep_novel_classes(dataset):
    coco = COCO(str(dataset.train_annotations))
    names = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    split = synthetic_split()
    kinds = {split.kind(names[a["category_id"]]) for a in coco.loadAnns(coco.getAnnIds())}
    assert kinds == {"base", "novel"}


def test_render_scene_boxes_are_tight_and_inside():
    rng = np.random.default_rng(0)
    scene = render_scene(rng, [CLASS_NAMES.index("red square")], min_visible=1.0)
    (x, y, w, h), area = scene.boxes[0], scene.areas[0]
    assert scene.image.shape == (128, 128, 3) and scene.image.dtype == np.uint8
    assert 14 * 0.8 <= max(w, h) <= 56 * 1.5
    # A nearly axis-aligned filled square fills most of its box.
    assert area > 0.7 * w * h
    # The object's colour dominates inside the box.
    inside = scene.image[y : y + h, x : x + w].reshape(-1, 3).astype(int)
    assert np.mean((inside[:, 0] > 150) & (inside[:, 1] < 100)) > 0.7


def test_every_class_appears_in_captions(dataset):
    rows = _read_csv(dataset.train_captions)
    assert len(rows) == SIZES["num_caption_crops"]
    assert {r["label"] for r in rows} == set(CLASS_NAMES)
    for row in rows:
        assert row["label"] in row["title"]
        crop = dataset.train_captions.parent / row["filepath"]
        with Image.open(crop) as im:
            assert im.size == (48, 48) and im.mode == "RGB"
    val_rows = _read_csv(dataset.val_captions)
    assert {r["label"] for r in val_rows} == set(CLASS_NAMES)
    assert all((dataset.val_captions.parent / r["filepath"]).is_file() for r in val_rows)


def test_no_novel_captions(tmp_path):
    info = _generate(
        tmp_path / "nonovel",
        num_train_images=1,
        num_val_images=1,
        num_caption_crops=60,
        num_val_caption_crops=64,
        novel_captions=False,
    )
    split = synthetic_split()
    rows = _read_csv(info.train_captions)
    assert {r["label"] for r in rows} == set(split.base)
    assert not any(novel in r["title"] for r in rows for novel in split.novel)
    # The held-out crops, for evaluating CLIP, still cover every class.
    assert {r["label"] for r in _read_csv(info.val_captions)} == set(CLASS_NAMES)


def test_captions_fit_the_tiny_clip_context():
    from open_clip.tokenizer import SimpleTokenizer

    tokenizer = SimpleTokenizer(context_length=77)
    rng = np.random.default_rng(0)
    captions = [
        make_caption(rng, name, relative_size=rng.uniform(), background_level=level)
        for name in ("purple hexagon", "yellow triangle", "orange diamond", "red star")
        for level in (90.0, 128.0, 160.0)
        for _ in range(40)
    ]
    lengths = (tokenizer(captions) != 0).sum(dim=1)
    assert int(lengths.max()) <= 16  # tiny CLIP's context, start and end tokens included


def test_bad_arguments(tmp_path):
    with pytest.raises(DataError):
        _generate(tmp_path / "a", num_train_images=-1)
    with pytest.raises(DataError):
        _generate(tmp_path / "b", image_size=64, max_object_size=56)
    with pytest.raises(DataError):
        _generate(tmp_path / "c", min_visible=0.0)


def test_non_empty_output_needs_overwrite(tmp_path):
    root = tmp_path / "out"
    small = {"num_train_images": 1, "num_val_images": 1, "num_caption_crops": 2}
    _generate(root, **small, num_val_caption_crops=0)
    with pytest.raises(DataError, match="not empty"):
        _generate(root, **small, num_val_caption_crops=0)
    (root / "captions" / "crops" / "train" / "stale.png").write_bytes(b"")
    _generate(root, **small, num_val_caption_crops=0, overwrite=True)
    assert not (root / "captions" / "crops" / "train" / "stale.png").exists()


def test_cli(tmp_path):
    out = tmp_path / "cli"
    argv = [
        "--output", str(out), "--preset", "small", "--num-train-images", "2",
        "--num-val-images", "1", "--num-caption-crops", "3", "--num-val-caption-crops", "0",
        "--no-progress",
    ]  # fmt: skip
    assert make_synthetic_main(argv) == 0
    assert len(json.loads((out / "annotations" / "instances_train.json").read_text())["images"])
    assert len(_read_csv(out / "captions" / "train.csv")) == 3
    assert make_synthetic_main(argv) == 2  # not empty, no --overwrite: one-line error


def test_cli_object_sizes(tmp_path):
    out = tmp_path / "sizes"
    argv = [
        "--output", str(out), "--num-train-images", "6", "--num-val-images", "1",
        "--num-caption-crops", "0", "--num-val-caption-crops", "0", "--max-objects", "3",
        "--min-object-size", "40", "--max-object-size", "60", "--min-visible", "1.0",
        "--no-progress",
    ]  # fmt: skip
    assert make_synthetic_main(argv) == 0
    train = json.loads((out / "annotations" / "instances_train.json").read_text())
    boxes = [a["bbox"] for a in train["annotations"]]
    assert boxes and all(max(w, h) >= 20 for _, _, w, h in boxes)  # no object under 40 px across
    bad = [*argv[:-1], "--overwrite", "--min-object-size", "70", "--no-progress"]
    assert make_synthetic_main(bad) == 2  # min > max: one-line error


@pytest.mark.slow
def test_workers_give_identical_files(dataset, tmp_path):
    parallel = _generate(tmp_path / "parallel", workers=2)
    first, second = _files(dataset.root), _files(parallel.root)
    assert first.keys() == second.keys()
    assert all(first[k] == second[k] for k in first)

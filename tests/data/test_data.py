import json

import numpy as np
import pytest
from PIL import Image

from ovdet.data.coco import load_coco_detection
from ovdet.data.image_io import read_image
from ovdet.data.splits import load_split
from ovdet.utils.errors import DataError, ImageError


def test_split_filter_keeps_exactly_the_base_annotations_by_name(toy_dataset):
    data = json.loads((toy_dataset / "instances.json").read_text())
    id_to_name = {c["id"]: c["name"] for c in data["categories"]}
    records = load_coco_detection(
        toy_dataset / "instances.json",
        toy_dataset / "images",
        split=str(toy_dataset / "split.json"),
    )
    assert records.class_names == ["red square", "blue circle"]
    assert records.category_ids == [7, 3]
    expected = sorted(
        (a["image_id"], id_to_name[a["category_id"]])
        for a in data["annotations"]
        if id_to_name[a["category_id"]] in ("red square", "blue circle")
    )
    got = sorted(
        (r.image_id, records.class_names[label - 1]) for r in records.images for label in r.labels
    )
    assert got == expected
    assert records.counts["annotations of other split kinds removed"] == sum(
        id_to_name[a["category_id"]] == "green square" for a in data["annotations"]
    )


def test_ovcoco_split_matches_by_name_not_position():
    cats = [{"id": 90, "name": "cat"}, {"id": 1, "name": "person"}, {"id": 5, "name": "hair drier"}]
    split = load_split("ovcoco", cats)
    assert split.base == ("person",) and split.novel == ("cat",)
    assert split.kind("hair drier") is None


def _write(tmp_path, annotations, images=None, categories=None):
    images = images or [{"id": 1, "file_name": "a.png", "width": 20, "height": 20}]
    Image.new("RGB", (20, 20)).save(tmp_path / "a.png")
    path = tmp_path / "ann.json"
    path.write_text(
        json.dumps(
            {
                "images": images,
                "annotations": annotations,
                "categories": categories or [{"id": 1, "name": "thing"}],
            }
        )
    )
    return path


def test_bad_annotations_are_fixed_or_dropped_and_counted(tmp_path):
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 5, 5]},
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [2, 2, 0, 5]},  # degenerate
        {"id": 3, "image_id": 1, "category_id": 1, "bbox": [15, 15, 10, 10]},  # clipped
        {"id": 4, "image_id": 1, "category_id": 1, "bbox": [30, 30, 5, 5]},  # outside
        {"id": 5, "image_id": 1, "category_id": 1, "bbox": [1, 1, float("nan"), 3]},
    ]
    images = [{"id": 1, "file_name": "a.png", "width": 20, "height": 20},
              {"id": 2, "file_name": "missing.png", "width": 20, "height": 20},
              {"id": 3, "file_name": "a.png", "width": 20, "height": 20}]  # fmt: skip
    anns.append({"id": 6, "image_id": 2, "category_id": 1, "bbox": [1, 1, 4, 4]})
    rec = load_coco_detection(_write(tmp_path, anns, images), tmp_path)
    assert rec.counts["degenerate boxes dropped"] == 2
    assert rec.counts["boxes clipped to the image"] == 1
    assert rec.counts["boxes outside the image dropped"] == 1
    assert rec.counts["images with a missing file dropped"] == 1
    assert rec.counts["images without annotations dropped"] == 1
    assert [r.image_id for r in rec.images] == [1]
    np.testing.assert_allclose(rec.images[0].boxes, [[2, 2, 7, 7], [15, 15, 20, 20]])
    kept = load_coco_detection(_write(tmp_path, anns, images), tmp_path, filter_empty=False)
    assert sorted(r.image_id for r in kept.images) == [1, 3]


def test_unknown_category_and_malformed_files_are_errors(tmp_path):
    with pytest.raises(DataError, match="unknown category id 9"):
        load_coco_detection(_write(tmp_path, [{"id": 1, "image_id": 1, "category_id": 9,
                                               "bbox": [1, 1, 2, 2]}]), tmp_path)  # fmt: skip
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="cannot read"):
        load_coco_detection(bad, tmp_path)
    bad.write_text('{"images": []}')
    with pytest.raises(DataError, match="no 'annotations' list"):
        load_coco_detection(bad, tmp_path)


@pytest.mark.parametrize(
    "mode,value", [("L", 128), ("RGBA", (10, 20, 30, 255)), ("CMYK", (0, 0, 0, 0)), ("I;16", 4000)]
)
def test_image_modes_are_converted_to_rgb(tmp_path, mode, value):
    path = tmp_path / ("x.tif" if mode in ("CMYK", "I;16") else "x.png")
    Image.new(mode, (7, 5), value).save(path)
    arr = read_image(path)
    assert arr.shape == (5, 7, 3) and arr.dtype == np.uint8


def test_exif_rotation_is_honoured(tmp_path):
    img = Image.new("RGB", (30, 10), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees
    img.save(tmp_path / "r.jpg", exif=exif)
    assert read_image(tmp_path / "r.jpg").shape == (30, 10, 3)


def test_bad_image_files_raise_image_error(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "junk.jpg").write_bytes(b"not an image at all")
    Image.new("RGB", (64, 64)).save(tmp_path / "full.png")
    (tmp_path / "trunc.png").write_bytes((tmp_path / "full.png").read_bytes()[:60])
    for name, msg in [("missing.jpg", "does not exist"), ("empty.jpg", "empty file"),
                      ("junk.jpg", "cannot read"), ("trunc.png", "cannot read")]:  # fmt: skip
        with pytest.raises(ImageError, match=msg):
            read_image(tmp_path / name)


def test_huge_images_are_downscaled_on_load(tmp_path):
    Image.new("RGB", (4000, 3000), (1, 2, 3)).save(tmp_path / "big.jpg", quality=50)
    arr = read_image(tmp_path / "big.jpg", max_pixels=1_000_000)
    assert arr.shape[0] * arr.shape[1] <= 1_000_000
    assert abs(arr.shape[1] / arr.shape[0] - 4 / 3) < 0.02


def _loaders():
    """Every loader of a JSON input file: (what its errors call the file, the error, a call)."""
    from ovdet.data.image_labels import load_coco_image_labels
    from ovdet.evaluation.ground_truth import load_ground_truth
    from ovdet.evaluation.results import load_results
    from ovdet.utils.errors import ResultsError

    gt = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}]}
    return [
        ("annotation file", DataError, lambda p: load_coco_detection(p, p.parent)),
        ("image-label file", DataError, lambda p: load_coco_image_labels(p, p.parent)),
        ("annotation file", DataError, load_ground_truth),
        ("results file", ResultsError, lambda p: load_results(p, gt)),
    ]


@pytest.mark.parametrize("index", range(4))
@pytest.mark.parametrize(
    "make, detail",
    [
        (lambda p: None, "it does not exist"),
        (lambda p: p.mkdir(), "Is a directory"),
        (lambda p: p.write_text("[{"), "not valid JSON"),
        (lambda p: p.write_bytes(b'{"images": "\xff"}'), "not valid JSON"),
        (lambda p: p.write_text("[" * 100_000 + "]" * 100_000), "not valid JSON"),
    ],
)
def test_every_json_loader_reports_an_unreadable_file_alike(tmp_path, index, make, detail):
    what, error, load = _loaders()[index]
    path = tmp_path / "input.json"
    make(path)
    with pytest.raises(error, match=f"^cannot read {what} {path}: .*{detail}"):
        load(path)

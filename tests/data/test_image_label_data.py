"""Image-labelled data: the three formats load, caption tagging, and bad inputs' clear errors."""

import json
import logging

import numpy as np
import pytest
from PIL import Image

from ovdet.clip.text_classifier import Vocabulary
from ovdet.data.caption_tagger import CaptionTagger
from ovdet.data.image_labels import (
    load_caption_csv,
    load_coco_captions,
    load_coco_image_labels,
    load_image_labels,
)
from ovdet.utils.errors import DataError

CATEGORIES = [{"id": 5, "name": "red circle"}, {"id": 9, "name": "green square"},
              {"id": 2, "name": "blue star"}]  # fmt: skip


def _images(root, n=3):
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (16, 16)).save(root / f"{i}.png")
    return [{"id": i + 1, "file_name": f"{i}.png", "width": 16, "height": 16} for i in range(n)]


def _write(path, data):
    path.write_text(json.dumps(data))
    return path


def test_caption_tagger_words_case_plurals_synonyms():
    vocab = Vocabulary(
        ("dog", "hot dog", "box", "berry", "teddy_bear", "person"), ((), (), (), (), (), ("man",))
    )
    tag = CaptionTagger(vocab)
    names = lambda caption: [vocab.names[i] for i in tag(caption)]  # noqa: E731
    assert names("Two DOGS and a Box.") == ["dog", "box"]
    assert names("boxes of berries") == ["box", "berry"]
    assert names("a hot  dog stand") == ["hot dog"]  # the longest spelling wins
    assert names("a teddy bear next to a man") == ["teddy_bear", "person"]
    assert names("hotdogs, doghouse, boxer, manhattan") == []  # whole words only


def test_image_label_json_loads_labels_and_negatives(tmp_path, caplog):
    images = _images(tmp_path / "img", 4)
    images[0]["pos_category_ids"] = [9, 9, 2]
    images[0]["neg_category_ids"] = [5, 2]
    images[1]["pos_category_ids"] = [5]
    images[2]["pos_category_ids"] = []
    images[3]["pos_category_ids"] = [2]
    images[3]["file_name"] = "missing.png"
    path = _write(tmp_path / "labels.json",
                  {"images": images, "annotations": [], "categories": CATEGORIES})  # fmt: skip
    with caplog.at_level(logging.WARNING):
        records = load_coco_image_labels(path, tmp_path / "img")
    assert records.class_names == ["red circle", "green square", "blue star"]
    assert [r.image_id for r in records.images] == [1, 2]
    assert records.images[0].labels.tolist() == [1, 2]
    assert records.images[0].neg_labels.tolist() == [0]  # "blue star" is also positive
    assert records.images[1].labels.tolist() == [0] and not records.has_captions
    assert records.counts == {
        "repeated ids in pos_category_ids merged": 1,
        "neg_category_ids that are also positive dropped": 1,
        "images without pos_category_ids dropped": 1,
        "images with a missing file dropped": 1,
    }
    assert "1 images without pos_category_ids dropped" in caplog.text
    np.testing.assert_array_equal(records.image_counts(), [1, 1, 1])
    # The dispatcher recognises the format.
    assert len(load_image_labels(path, tmp_path / "img").images) == 2


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.pop("categories"), "no 'categories' list"),
        (lambda d: d["images"][0].update(pos_category_ids=[77]), "unknown category id 77"),
        (lambda d: d["images"][0].update(pos_category_ids="5"), "must be a list of integer ids"),
        (lambda d: d["images"][1].update(id=1), "image id 1 is used twice"),
        (lambda d: d["categories"][1].update(id=5), "category id 5 is used twice"),
        (  # as in box files (ovdet.data.coco.check_categories)
            lambda d: d["categories"][1].update(name=d["categories"][0]["name"]),
            "category name .* is used twice",
        ),
        (lambda d: d["categories"].append({"id": True, "name": "x"}), "integer 'id' and a 'name'"),
        (lambda d: d["images"][0].pop("file_name"), "needs an integer id and a file_name"),
        (lambda d: [i.update(pos_category_ids=[]) for i in d["images"]], "no usable image left"),
    ],
)
def test_image_label_json_bad_inputs(tmp_path, change, message):
    images = _images(tmp_path / "img", 2)
    for img in images:
        img["pos_category_ids"] = [5]
    data = {"images": images, "categories": [dict(c) for c in CATEGORIES]}
    change(data)
    path = _write(tmp_path / "labels.json", data)
    with pytest.raises(DataError, match=message):
        load_coco_image_labels(path, tmp_path / "img")


def test_coco_captions_tag_the_vocabulary_and_keep_captions(tmp_path):
    images = _images(tmp_path / "img", 3)
    annotations = [
        {"id": 1, "image_id": 1, "caption": "Two red circles  next to a green square."},
        {"id": 2, "image_id": 1, "caption": "A Blue Star."},
        {"id": 3, "image_id": 2, "caption": "an empty grey picture"},
        {"id": 4, "image_id": 2, "caption": "   "},
    ]
    path = _write(tmp_path / "captions.json", {"images": images, "annotations": annotations})
    vocab = Vocabulary.from_names([c["name"] for c in CATEGORIES])
    records = load_coco_captions(path, tmp_path / "img", vocab)
    assert [r.image_id for r in records.images] == [1, 2]
    assert records.images[0].labels.tolist() == [0, 1, 2]
    assert records.images[0].captions == (
        "Two red circles next to a green square.", "A Blue Star."
    )  # fmt: skip
    assert records.images[1].labels.tolist() == [] and records.has_captions
    assert records.counts == {
        "empty or missing captions dropped": 1,
        "images without a caption dropped": 1,
        "images whose captions name no class (caption loss only)": 1,
    }
    assert load_image_labels(path, tmp_path / "img", vocab).images[0].labels.tolist() == [0, 1, 2]
    with pytest.raises(DataError, match="give the vocabulary"):
        load_image_labels(path, tmp_path / "img")
    bad = _write(tmp_path / "bad.json",
                 {"images": images, "annotations": [{"image_id": 42, "caption": "x"}]})  # fmt: skip
    with pytest.raises(DataError, match="unknown image id 42"):
        load_coco_captions(bad, tmp_path / "img", vocab)


def test_caption_csv_of_open_clip_train(tmp_path):
    _images(tmp_path / "crops", 3)
    csv = tmp_path / "train.csv"
    csv.write_text(
        "filepath\ttitle\tlabel\n"
        "crops/0.png\ta photo of a green square\tgreen square\n"
        "crops/0.png\tgreen squares on grey\tgreen square\n"
        "crops/1.png\tred circle, blue star\tx\n"
        "crops/2.png\t\tx\n"
        "crops/9.png\ta blue star\tx\n"
    )
    vocab = Vocabulary.from_names([c["name"] for c in CATEGORIES])
    records = load_caption_csv(csv, None, vocab)  # paths relative to the CSV's folder
    assert [r.image_id for r in records.images] == ["crops/0.png", "crops/1.png"]
    assert records.images[0].captions == ("a photo of a green square", "green squares on grey")
    assert records.images[0].labels.tolist() == [1]
    assert records.images[1].labels.tolist() == [0, 2]
    assert records.counts == {
        "rows without an image path or caption dropped": 1,
        "images with a missing file dropped": 1,
    }
    assert len(load_image_labels(csv, "", vocab).images) == 2
    # Other column names and separators, as open_clip_train's flags.
    csv2 = tmp_path / "other.csv"
    csv2.write_text("image,text\ncrops/0.png,a red circle\n")
    records = load_caption_csv(csv2, None, vocab, image_key="image", caption_key="text",
                               separator=",")  # fmt: skip
    assert records.images[0].labels.tolist() == [0]
    with pytest.raises(DataError, match="no column 'filepath'"):
        load_caption_csv(csv2, None, vocab)
    with pytest.raises(DataError, match="does not exist"):
        load_caption_csv(tmp_path / "nope.csv", None, vocab)


def test_unrecognised_or_unreadable_files(tmp_path):
    images = _images(tmp_path / "img", 1)
    plain = _write(tmp_path / "plain.json", {"images": images, "annotations": []})
    with pytest.raises(DataError, match="neither an image-label JSON"):
        load_image_labels(plain, tmp_path / "img", ["red circle"])
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(DataError, match="cannot read image-label file"):
        load_image_labels(broken, tmp_path / "img")
    with pytest.raises(DataError, match="has no 'images' list"):
        load_image_labels(_write(tmp_path / "list.json", [1, 2]), tmp_path / "img")


def test_synthetic_image_labelled_split_labels_match_captions(tmp_path):
    from ovdet.data.synthetic import CLASS_NAMES, generate_synthetic_dataset, synthetic_split

    info = generate_synthetic_dataset(
        tmp_path / "syn", num_train_images=1, num_val_images=1, num_caption_crops=0,
        num_weak_images=12, image_size=64, max_object_size=40, novel_captions=False,
        progress=False,
    )  # fmt: skip
    labelled = load_image_labels(info.weak_labels, info.weak_images)
    captioned = load_image_labels(info.weak_captions, info.weak_images, CLASS_NAMES)
    assert len(labelled.images) == len(captioned.images) == 12
    assert labelled.class_names == list(CLASS_NAMES)
    for a, b in zip(labelled.images, captioned.images):
        assert a.path == b.path and a.path.is_file()
        assert a.labels.tolist() == b.labels.tolist()  # the caption names exactly the labels
        assert len(b.captions) == 1
    # Web-like: novel classes are named too, though CLIP's captions (novel_captions=False) never
    # name them.
    novel = set(synthetic_split().novel)
    assert any(CLASS_NAMES[c] in novel for r in labelled.images for c in r.labels)
    assert json.loads(info.weak_labels.read_text())["annotations"] == []
    # The hidden boxes (for analysis; training never reads them): the same images, and the
    # classes of each image's boxes are its labels.
    hidden = json.loads(info.weak_boxes.read_text())
    assert [i["file_name"] for i in hidden["images"]] == [r.path.name for r in labelled.images]
    by_image = {}
    for a in hidden["annotations"]:
        by_image.setdefault(a["image_id"], set()).add(a["category_id"])
        x, y, w, h = a["bbox"]
        assert w > 0 and h > 0 and x + w <= 64 and y + h <= 64 and a["area"] > 0
    assert [sorted(by_image[i["id"]]) for i in hidden["images"]] == [
        i["pos_category_ids"] for i in json.loads(info.weak_labels.read_text())["images"]
    ]
    assert len({a["id"] for a in hidden["annotations"]}) == len(hidden["annotations"])
    # The other files do not change with the new split (their random streams are their own).
    again = generate_synthetic_dataset(
        tmp_path / "again", num_train_images=1, num_val_images=1, num_caption_crops=0,
        image_size=64, max_object_size=40, progress=False,
    )  # fmt: skip
    assert again.weak_labels is None
    assert again.train_annotations.read_bytes() == info.train_annotations.read_bytes()

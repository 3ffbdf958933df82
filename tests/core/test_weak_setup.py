"""The weak-supervision set-up both engines share: data, vocabulary, counts, captions, switch."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from ovdet.config import get_default_config
from ovdet.core.head import OpenVocabularyHead
from ovdet.core.weak_setup import (
    BatchVocabularySwitch,
    add_caption_embeddings,
    build_weak_training,
    load_weak_data,
    weak_class_counts,
    weak_tag_vocabulary,
    weak_training_vocabulary,
)
from ovdet.core.weak_supervision import TrainingVocabulary, WeakSupervisionSettings
from ovdet.data.image_labels import ImageLabelRecord, ImageLabelRecords
from ovdet.utils.errors import ConfigError

BOX_CLASSES = ["red box", "green box"]
# The box data's base and novel classes: what captions are searched for by default.
DEFAULT_TAGS = ["red box", "green box", "blue box"]


def _images(root: Path, n: int) -> list[dict]:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (16, 16)).save(root / f"{i}.png")
    return [{"id": i + 1, "file_name": f"{i}.png", "width": 16, "height": 16} for i in range(n)]


@pytest.fixture
def image_label_file(tmp_path) -> Path:
    """Detic's image-label JSON: a box class spelt otherwise ("Green_Box") and two classes no
    box names, one of them on no image."""
    images = _images(tmp_path / "images", 3)
    for image, labels in zip(images, [[4], [4, 6], [6]]):
        image["pos_category_ids"] = labels
    categories = [{"id": 4, "name": "Green_Box"}, {"id": 6, "name": "kite"},
                  {"id": 9, "name": "zebra"}]  # fmt: skip
    path = tmp_path / "labels.json"
    path.write_text(json.dumps({"images": images, "categories": categories}))
    return path


@pytest.fixture
def captions_file(tmp_path) -> Path:
    images = _images(tmp_path / "images", 2)
    captions = [{"id": 1, "image_id": 1, "caption": "Two blue boxes and a kite"},
                {"id": 2, "image_id": 2, "caption": "a red box"}]  # fmt: skip
    path = tmp_path / "captions.json"
    path.write_text(json.dumps({"images": images, "annotations": captions}))
    return path


def _cfg(path: Path, *overrides):
    cfg = get_default_config()
    cfg.merge_from_list(["DATASETS.WEAK_TRAIN", str(path),
                         "DATASETS.WEAK_TRAIN_IMAGES", str(path.parent / "images"),
                         *overrides])  # fmt: skip
    return cfg


def test_weak_vocabulary_is_the_box_classes_then_the_new_ones():
    names, index = weak_training_vocabulary(["cat", "dog"], ["Dog", "kite", "hot_dog"])
    # "Dog" is the box class "dog" (one name-matching rule); "_" reads as a space.
    assert names == ["cat", "dog", "kite", "hot dog"] and index.tolist() == [1, 2, 3]


def test_weak_class_counts_count_images_not_objects():
    names, index = weak_training_vocabulary(["cat", "dog"], ["dog", "kite"])
    records = ImageLabelRecords(
        [ImageLabelRecord(1, Path("a.jpg"), np.array([0, 1, 1])),  # dog (twice), kite
         ImageLabelRecord(2, Path("b.jpg"), np.array([1]))],  # kite
        ["dog", "kite"],
    )  # fmt: skip
    # Box images: two cats and a dog; one cat; none.
    counts = weak_class_counts(len(names), index, records, [[0, 0, 1], [0], []])
    assert counts.tolist() == [2.0, 2.0, 2.0]


def test_tag_vocabulary_is_the_config_s_or_the_box_data_s():
    assert weak_tag_vocabulary("", DEFAULT_TAGS).names == tuple(DEFAULT_TAGS)
    assert weak_tag_vocabulary("kite, zebra", DEFAULT_TAGS).names == ("kite", "zebra")


def test_load_image_label_data(image_label_file):
    data = load_weak_data(_cfg(image_label_file), BOX_CLASSES, DEFAULT_TAGS)
    assert data.class_names == ["red box", "green box", "kite", "zebra"]
    assert data.class_index.tolist() == [1, 2, 3]  # Green_Box, kite, zebra
    assert data.is_novel.tolist() == [False, False, True, True]
    assert data.num_box_classes == 2 and len(data.records.images) == 3


def test_captions_are_tagged_with_the_box_data_s_classes_by_default(captions_file):
    data = load_weak_data(_cfg(captions_file), BOX_CLASSES, DEFAULT_TAGS)
    assert data.records.class_names == DEFAULT_TAGS  # "kite" is not looked for
    assert data.class_names == DEFAULT_TAGS
    labels = [data.class_index[r.labels].tolist() for r in data.records.images]
    assert labels == [[2], [0]]
    # DATASETS.WEAK_VOCABULARY names the classes looked for instead.
    data = load_weak_data(
        _cfg(captions_file, "DATASETS.WEAK_VOCABULARY", "kite, red box"), BOX_CLASSES, DEFAULT_TAGS
    )
    assert data.class_names == ["red box", "green box", "kite"]
    assert [data.class_index[r.labels].tolist() for r in data.records.images] == [[2], [0]]


def test_the_config_is_checked(image_label_file, captions_file):
    with pytest.raises(ConfigError, match="DATASET_RATIO"):
        load_weak_data(
            _cfg(captions_file, "DATALOADER.DATASET_RATIO", "[0, 0]"), BOX_CLASSES, DEFAULT_TAGS
        )
    caption_loss = ("MODEL.OVDET.WEAK.CAPTION_LOSS", "True")
    with pytest.raises(ConfigError, match="CAPTION_LOSS needs captions"):
        load_weak_data(_cfg(image_label_file, *caption_loss), BOX_CLASSES, DEFAULT_TAGS)
    assert load_weak_data(_cfg(captions_file, *caption_loss), BOX_CLASSES, DEFAULT_TAGS)


class _Calls:
    """Records the calls of a stand-in for an engine's callable."""

    def __init__(self, result=None) -> None:
        self.calls, self.result = [], result

    def __call__(self, *args):
        self.calls.append(args)
        return self.result(*args) if callable(self.result) else self.result


def _embed(names: list[str]) -> torch.Tensor:
    """A text classifier stand-in: a deterministic unit vector per name."""
    seeds = [sum(map(ord, n)) for n in names]
    rows = [torch.randn(4, generator=torch.Generator().manual_seed(s)) for s in seeds]
    return F.normalize(torch.stack(rows), dim=-1)


@pytest.mark.parametrize("fed_loss", [False, True])
def test_build_weak_training(image_label_file, fed_loss):
    cfg = _cfg(image_label_file, "MODEL.OVDET.WEAK.FED_LOSS", str(fed_loss),
               "DATALOADER.DATASET_RATIO", "[1, 3]")  # fmt: skip
    data = load_weak_data(cfg, BOX_CLASSES, DEFAULT_TAGS)
    box_text = _embed(BOX_CLASSES)
    embed, box_images, load_clip = _Calls(_embed), _Calls([[0, 0], [1], []]), _Calls("clip")
    weak = build_weak_training(cfg, data, box_text, embed, box_images, load_clip)
    # The weak vocabulary (box classes first) is embedded in one batch, as its own classifier.
    assert embed.calls == [(list(data.class_names),)]
    assert list(data.class_names[:2]) == list(BOX_CLASSES)
    torch.testing.assert_close(weak.weak.text, _embed(data.class_names))
    assert weak.weak.is_novel.tolist() == [False, False, True, True]
    assert weak.box.text is box_text and weak.box.is_novel is None
    assert weak.box.class_counts is None
    # Class counts, from both kinds of data, only for the federated loss (their one user).
    if fed_loss:
        assert weak.weak.class_counts.tolist() == [1.0, 3.0, 2.0, 0.0]
    else:
        assert weak.weak.class_counts is None and box_images.calls == []
    # CLIP is loaded only for the caption loss.
    assert weak.clip is None and load_clip.calls == []
    assert weak.ratio == (1, 3) and weak.batch_kinds(2, 4) == [1, 1, 0, 1]
    assert weak.vocabularies == (weak.box, weak.weak)


def test_caption_loss_loads_clip(captions_file):
    cfg = _cfg(captions_file, "MODEL.OVDET.WEAK.CAPTION_LOSS", "True")
    data = load_weak_data(cfg, BOX_CLASSES, DEFAULT_TAGS)
    load_clip = _Calls("the clip")
    weak = build_weak_training(cfg, data, _embed(BOX_CLASSES), _embed, list, load_clip)
    assert weak.clip == "the clip" and len(load_clip.calls) == 1
    with pytest.raises(ValueError, match="3 rows for 2 box classes"):
        build_weak_training(cfg, data, _embed(DEFAULT_TAGS), _embed, list, load_clip)


def _vocabularies() -> tuple[TrainingVocabulary, TrainingVocabulary]:
    box = TrainingVocabulary(_embed(BOX_CLASSES))
    weak = TrainingVocabulary(
        _embed([*BOX_CLASSES, "kite"]), torch.tensor([False, False, True]),
        torch.tensor([4.0, 9.0, 1.0]),
    )  # fmt: skip
    return box, weak


@pytest.mark.parametrize("box_batch_classes", ["all", "box"])
def test_switch_sets_each_kind_s_classifier_when_the_kind_changes(box_batch_classes):
    settings = WeakSupervisionSettings(fed_loss=True, box_batch_classes=box_batch_classes)
    head = OpenVocabularyHead(8, 4, weak=settings)
    box, weak = _vocabularies()
    sets = []

    def set_vocabulary(text, is_novel):
        sets.append(text.shape[0])
        head.set_vocabulary(text, is_novel)

    switch = BatchVocabularySwitch(head, (box, weak), set_vocabulary)
    box_classes = 3 if box_batch_classes == "all" else 2
    switch(1)
    torch.testing.assert_close(head.text_embeddings, weak.text)
    assert head.is_novel_class.tolist() == [False, False, True]
    assert head.class_sampling_weights.tolist() == [2.0, 3.0, 1.0]  # counts ^ 0.5
    switch(1)
    switch(0)
    assert head.num_classes == box_classes and head.class_sampling_weights is None
    switch(0)
    assert sets == [3, box_classes]  # set when the kind changed, not per batch
    head.set_vocabulary(_embed(["x", "y", "z", "w"]))  # e.g. an evaluation's vocabulary
    switch.reset()
    switch(0)
    assert sets == [3, box_classes, box_classes] and head.num_classes == box_classes


class _FakeClip:
    def encode_text(self, texts):
        return torch.stack([torch.full((4,), float(len(t))) for t in texts])


def test_caption_embeddings_are_normalised_clip_text_embeddings():
    samples = [{"caption": "a kite"}, {"caption": "two blue boxes"}]
    add_caption_embeddings(_FakeClip(), samples, "cpu")
    for sample in samples:
        expected = F.normalize(torch.full((4,), float(len(sample["caption"]))), dim=0)
        torch.testing.assert_close(sample["caption_embedding"], expected)


def test_prepare_batch_embeds_captions_of_image_labelled_batches_only(image_label_file):
    cfg = _cfg(image_label_file, "MODEL.OVDET.WEAK.FED_LOSS", "True")
    data = load_weak_data(cfg, BOX_CLASSES, DEFAULT_TAGS)
    weak = build_weak_training(cfg, data, _embed(BOX_CLASSES), _embed, list, _FakeClip)
    assert weak.clip is None  # no caption loss
    head = OpenVocabularyHead(8, 4, weak=WeakSupervisionSettings(fed_loss=True))
    switch = weak.vocabulary_switch(head)
    samples = [{"caption": "a kite"}]
    weak.prepare_batch(1, samples, switch)
    assert head.num_classes == 4 and "caption_embedding" not in samples[0]
    weak = dataclasses.replace(weak, clip=_FakeClip())  # as built with the caption loss
    weak.prepare_batch(0, samples, switch)
    assert "caption_embedding" not in samples[0]
    weak.prepare_batch(1, samples, switch, "cpu")
    assert samples[0]["caption_embedding"].shape == (4,)

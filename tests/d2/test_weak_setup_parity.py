"""Parity of the weak-supervision set-up: from the same box data and image-labelled files, both
engines build the same weak vocabulary (names, text embeddings, novelty), the same class counts
and the same caption set-up (ovdet.core.weak_setup, adapted by each engine)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip(
    "detectron2", reason="detectron2 is not installed; see README (install by its official guide)"
)

from PIL import Image  # noqa: E402

from ovdet.config import load_config  # noqa: E402
from ovdet.core.weak_setup import WeakTraining, add_caption_embeddings  # noqa: E402
from ovdet.d2.weak import weak_training  # noqa: E402
from tests.d2.conftest import COLOURS  # noqa: E402

NUM_BOX_IMAGES = 6  # conftest's generated train set: each image shows every base class once


@pytest.fixture(scope="module")
def weak_files(tmp_path_factory) -> dict:
    """Four images of blue boxes, in Detic's image-label format and in COCO captions format."""
    root = tmp_path_factory.mktemp("weak_parity")
    images = []
    for i in range(4):
        pixels = np.full((64, 80, 3), 245, dtype=np.uint8)
        pixels[10 + 4 * i : 30 + 4 * i, 20:44] = COLOURS[7]
        Image.fromarray(pixels).save(root / f"{i}.png")
        images.append({"id": i + 1, "file_name": f"{i}.png", "height": 64, "width": 80})
    # Labels: a box class spelt otherwise ("Green_Box"), the novel class and one no box names.
    categories = [{"id": 2, "name": "Green_Box"}, {"id": 5, "name": "blue box"},
                  {"id": 8, "name": "kite"}]  # fmt: skip
    labels = [[5], [5, 8], [2, 5], [8]]
    labelled = [dict(im, pos_category_ids=ids) for im, ids in zip(images, labels)]
    (root / "labels.json").write_text(json.dumps({"images": labelled, "categories": categories}))
    texts = ["Blue Boxes", "a blue box beside a red box", "a green box", "nothing to see"]
    captions = [{"id": i + 1, "image_id": i + 1, "caption": t} for i, t in enumerate(texts)]
    (root / "captions.json").write_text(json.dumps({"images": images, "annotations": captions}))
    return {"root": root, "labels": root / "labels.json", "captions": root / "captions.json"}


# (file, extra keys, the weak vocabulary, its class counts). The box images count for the box
# classes (6 each); "grey box", in the box data but in neither half of the split, is nowhere.
CASES = {
    "image labels": (
        "labels", ["MODEL.OVDET.WEAK.FED_LOSS", "True"],
        ["red box", "green box", "blue box", "kite"], [6.0, 7.0, 3.0, 2.0],
    ),
    "captions": (
        "captions", ["MODEL.OVDET.WEAK.FED_LOSS", "True", "MODEL.OVDET.WEAK.CAPTION_LOSS", "True"],
        ["red box", "green box", "blue box"], [7.0, 7.0, 2.0],
    ),
}  # fmt: skip


def _tv_weak(cfg_d2, instant_data, tmp_path, keys) -> WeakTraining:
    """The torchvision engine's set-up, as its Trainer builds it, on the same files and keys."""
    from ovdet.tv.engine.trainer import Trainer

    ov = cfg_d2.MODEL.OVDET
    overrides = [
        "MODEL.OVDET.CLIP", ov.CLIP, "MODEL.OVDET.TEXT_CACHE_DIR", ov.TEXT_CACHE_DIR,
        "MODEL.OVDET.TEMPLATES", ov.TEMPLATES, "MODEL.OVDET.DISTILL.MODE", "none",
        "DATASETS.TRAIN_JSON", str(instant_data["train_json"]),
        "DATASETS.TRAIN_IMAGES", str(instant_data["root"] / "train"),
        "DATASETS.SPLIT", str(instant_data["split_file"]),
        "OUTPUT_DIR", str(tmp_path / "tv"), *keys,
    ]  # fmt: skip
    trainer = Trainer(load_config("tiny", overrides), progress=False)
    assert trainer.weak is not None
    return trainer.weak


@pytest.mark.parametrize("case", sorted(CASES))
def test_both_engines_build_the_same_weak_set_up(
    instant_cfg, instant_data, weak_files, tmp_path, case
):
    file, extra, names, counts = CASES[case]
    keys = ["DATASETS.WEAK_TRAIN", str(weak_files[file]),
            "DATASETS.WEAK_TRAIN_IMAGES", str(weak_files["root"]),
            "DATALOADER.DATASET_RATIO", "[1, 3]", *extra]  # fmt: skip
    cfg = instant_cfg(*keys, "MODEL.OVDET.DISTILL.MODE", "none")
    d2 = weak_training(cfg)
    tv = _tv_weak(cfg, instant_data, tmp_path, keys)

    assert tv.data.class_names == d2.data.class_names == names
    assert tv.data.class_index.tolist() == d2.data.class_index.tolist()
    assert [(r.image_id, r.labels.tolist()) for r in tv.data.records.images] == [
        (r.image_id, r.labels.tolist()) for r in d2.data.records.images
    ]
    assert tv.weak.is_novel.tolist() == d2.weak.is_novel.tolist() == [n not in (
        "red box", "green box") for n in names]  # fmt: skip
    assert tv.weak.class_counts.tolist() == d2.weak.class_counts.tolist() == counts
    torch.testing.assert_close(tv.weak.text.cpu(), d2.weak.text)
    torch.testing.assert_close(tv.box.text.cpu(), d2.box.text)
    assert tv.box.class_counts is None and d2.box.class_counts is None
    assert tv.ratio == d2.ratio == (1, 3)
    assert tv.batch_kinds(0, 8) == d2.batch_kinds(0, 8)
    # The caption set-up: CLIP only with the caption loss, and the same caption embeddings.
    assert (tv.clip is None) == (d2.clip is None) == (file != "captions")
    if tv.clip is not None:
        captions = [{"caption": c} for c in ("Blue Boxes", "a green box")]
        tv_samples, d2_samples = [dict(c) for c in captions], [dict(c) for c in captions]
        add_caption_embeddings(tv.clip, tv_samples, "cpu")
        add_caption_embeddings(d2.clip, d2_samples, "cpu")
        for a, b in zip(tv_samples, d2_samples):
            torch.testing.assert_close(a["caption_embedding"], b["caption_embedding"])

"""The detectron2 plugin trains with image-labelled batches, with the same keys as the default
engine (DATASETS.WEAK_TRAIN, DATALOADER.DATASET_RATIO, MODEL.OVDET.WEAK.*)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip(
    "detectron2", reason="detectron2 is not installed; see README (install by its official guide)"
)

from detectron2.data import DatasetCatalog  # noqa: E402
from detectron2.utils.env import seed_all_rng  # noqa: E402
from PIL import Image  # noqa: E402

from ovdet.d2 import OpenVocabularyTrainer  # noqa: E402
from ovdet.d2.model_vocabulary import get_roi_heads  # noqa: E402
from tests.d2.conftest import COLOURS  # noqa: E402


@pytest.fixture(scope="module")
def weak_data(tmp_path_factory):
    """Image-labelled images of blue boxes (the novel class) in COCO captions format."""
    root = tmp_path_factory.mktemp("weak")
    rng = np.random.default_rng(3)
    images, captions = [], []
    for i in range(4):
        pixels = np.full((64, 80, 3), 245, dtype=np.uint8)
        x, y = (int(v) for v in rng.integers(0, 40, size=2))
        pixels[y : y + 20, x : x + 24] = COLOURS[7]
        Image.fromarray(pixels).save(root / f"{i}.png")
        images.append({"id": i + 1, "file_name": f"{i}.png", "height": 64, "width": 80})
        captions.append({"id": i + 1, "image_id": i + 1, "caption": f"{i + 1} Blue Boxes"})
    (root / "captions.json").write_text(json.dumps({"images": images, "annotations": captions}))
    return root


def test_d2_trains_with_image_labels_and_captions(instant_cfg, weak_data):
    cfg = instant_cfg(
        "DATASETS.WEAK_TRAIN", str(weak_data / "captions.json"),
        "DATALOADER.DATASET_RATIO", "[1, 2]",
        "DATALOADER.WEAK_IMS_PER_BATCH", "2",
        "INPUT.WEAK_MIN_SIZE_TRAIN", "[48]",
        "INPUT.WEAK_MAX_SIZE_TRAIN", "96",
        "MODEL.OVDET.WEAK.NUM_PROPOSALS", "16",
        "MODEL.OVDET.WEAK.CAPTION_LOSS", "True",
        "MODEL.OVDET.WEAK.FED_LOSS", "True",
        "MODEL.OVDET.WEAK.FED_LOSS_NUM_CLASSES", "2",
        "MODEL.OVDET.DISTILL.MODE", "none",
        "SOLVER.MAX_ITER", "6",
        "TEST.EVAL_PERIOD", "0",
    )  # fmt: skip
    cfg.DATASETS.TEST = ()
    cfg.freeze()
    seed_all_rng(0)
    trainer = OpenVocabularyTrainer(cfg)
    trainer.resume_or_load(resume=False)
    # The weak vocabulary: the box classes, then "blue box" found in the captions.
    box, weak = trainer._trainer.data_loader.weak.vocabularies
    assert box.text.shape[0] == 2
    assert weak.text.shape[0] == 3 and weak.is_novel.tolist() == [False, False, True]
    # Federated-loss counts as in the default engine: box images by their boxes' classes, then
    # the image-labelled ones by their labels.
    box_images = [{a["category_id"] for a in r["annotations"]} for r in DatasetCatalog.get(
        cfg.DATASETS.TRAIN[0])]  # fmt: skip
    assert weak.class_counts.tolist() == [
        sum(0 in c for c in box_images), sum(1 in c for c in box_images), 4.0
    ]  # fmt: skip
    assert min(weak.class_counts[:2]) > 0
    heads = get_roi_heads(trainer.model)
    scored = []  # the classes each batch's classifier holds, as the head's ViLD-text sees them
    text_loss = heads.head.text_loss
    heads.head.text_loss = lambda logits, gt: (
        scored.append(logits.shape[1] - 1) or text_loss(logits, gt)
    )
    trainer.train()
    # BOX_BATCH_CLASSES "all" (the default): box batches score "blue box" too.
    assert scored == [3, 3]
    history = trainer.storage.history
    image_label = [v for v, _ in history("loss_image_label").values()]
    caption = [v for v, _ in history("loss_caption").values()]
    text = [v for v, _ in history("loss_text").values()]
    # 6 steps at [1, 2]: box, weak, weak, box, weak, weak.
    assert len(text) == 2 and len(image_label) == 4 and len(caption) == 4
    assert np.isfinite(image_label).all() and min(image_label) > 0 and min(caption) > 0
    assert get_roi_heads(trainer.model).head.weak.image_label_loss == "max_size"
    assert torch.isfinite(next(trainer.model.parameters())).all()


@pytest.mark.parametrize("name", ["ovcoco_detic_captions_R50_FPN", "ovlvis_detic_in21k_R50_FPN"])
def test_recipes_set_the_same_weak_supervision_as_the_default_engine(name):
    from ovdet.config import load_config
    from ovdet.d2 import load_d2_config

    tv, d2 = load_config(name, []), load_d2_config(f"d2/{name}.yaml")
    assert dict(d2.MODEL.OVDET.WEAK) == dict(tv.MODEL.OVDET.WEAK)
    assert list(d2.DATALOADER.DATASET_RATIO) == list(tv.DATALOADER.DATASET_RATIO)
    assert d2.DATALOADER.WEAK_IMS_PER_BATCH == tv.DATALOADER.WEAK_IMS_PER_BATCH
    assert d2.DATASETS.WEAK_TRAIN == tv.DATASETS.WEAK_TRAIN

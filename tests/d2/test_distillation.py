"""ViLD-image distillation (online and offline), the teacher's input images, CLIP rescoring
and its refusal on a model with an image head (the ViLD-ensemble)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip(
    "detectron2", reason="detectron2 is not installed; see README (install by its official guide)"
)

from detectron2.data import DatasetCatalog  # noqa: E402
from detectron2.data import transforms as T  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402
from detectron2.structures import Boxes  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402
from PIL import Image  # noqa: E402

from ovdet.core.losses import vild_image_loss  # noqa: E402
from ovdet.d2 import ClipRescoringSettings, OfflineDistillationMapper  # noqa: E402
from ovdet.utils.errors import ConfigError  # noqa: E402


def _record(instant_data) -> dict:
    return DatasetCatalog.get(instant_data["train_name"])[0]


def _store(instant_data, dim: int = 32) -> dict:
    torch.manual_seed(3)
    store = {}
    for record in DatasetCatalog.get(instant_data["train_name"]):
        boxes = torch.tensor([[10.0, 10.0, 30.0, 20.0], [40.0, 5.0, 70.0, 50.0], [0, 0, 0.3, 0.3]])
        store[record["image_id"]] = (boxes, torch.nn.functional.normalize(torch.randn(3, dim)))
    return store


def test_mapper_transforms_the_stored_boxes_like_the_image(instant_data):
    store = _store(instant_data)
    mapper = OfflineDistillationMapper(
        True,
        augmentations=[T.Resize((128, 160)), T.RandomFlip(prob=1.0)],  # 2x, then mirrored
        image_format="BGR",
        store=store,
    )
    record = _record(instant_data)
    out = mapper(record)
    assert tuple(out["image"].shape) == (3, 128, 160)
    expected = torch.tensor([[100.0, 20.0, 140.0, 40.0], [20.0, 10.0, 80.0, 100.0]])
    assert torch.allclose(out["distill_boxes"], expected)
    # The degenerate third box is dropped together with its embedding.
    assert torch.equal(out["distill_embeddings"], store[record["image_id"]][1][:2])
    # The ground truth went through the same transform.
    assert out["instances"].gt_boxes.tensor[:, 2].max() <= 160


def test_offline_loss_uses_the_stored_embeddings(instant_cfg, instant_data):
    cfg = instant_cfg("MODEL.OVDET.DISTILL.MODE", "offline")
    model = build_model(cfg)
    model.train()
    mapper = OfflineDistillationMapper(cfg, True, store=_store(instant_data))
    batch = [mapper(r) for r in DatasetCatalog.get(instant_data["train_name"])[:2]]
    assert model.roi_heads.clip_teacher is None  # offline: no CLIP at training time
    with EventStorage(0):
        losses = model(batch)
        images = model.preprocess_image(batch)
        features = model.backbone(images.tensor)
        student = model.roi_heads.head.distilled_embeddings(
            model.roi_heads.box_features(features, [Boxes(x["distill_boxes"]) for x in batch])
        )
    teacher = torch.cat([x["distill_embeddings"] for x in batch])
    expected = cfg.MODEL.OVDET.DISTILL.WEIGHT * vild_image_loss(student, teacher).detach()
    assert float(losses["loss_image"].detach()) == pytest.approx(float(expected), rel=1e-5)
    with pytest.raises(Exception, match="distill_boxes"), EventStorage(0):
        model([{k: v for k, v in x.items() if not k.startswith("distill")} for x in batch])


def test_teacher_images_are_rgb_in_unit_range(instant_cfg, instant_data):
    model = build_model(instant_cfg())
    rgb = np.asarray(Image.open(_record(instant_data)["file_name"]).convert("RGB"))
    bgr = torch.as_tensor(rgb[:, :, ::-1].transpose(2, 0, 1).copy()).float()
    images = model.preprocess_image([{"image": bgr}])
    out = model.roi_heads.teacher_images(images)
    h, w = rgb.shape[:2]
    expected = torch.as_tensor(rgb.transpose(2, 0, 1).copy()).float() / 255
    assert torch.allclose(out[0, :, :h, :w], expected, atol=1e-5)


def test_online_loss_distils_the_top_proposals(instant_cfg, instant_data):
    cfg = instant_cfg("MODEL.OVDET.DISTILL.NUM_PROPOSALS", "5")
    model = build_model(cfg)
    model.train()
    mapper = OfflineDistillationMapper(cfg, True, store=_store(instant_data))  # no flip noise
    batch = [mapper(r) for r in DatasetCatalog.get(instant_data["train_name"])[:2]]
    heads = model.roi_heads
    with EventStorage(0):
        images = model.preprocess_image(batch)
        features = model.backbone(images.tensor)
        targets = [x["instances"] for x in batch]
        proposals, _ = model.proposal_generator(images, features, targets)
        boxes = [p.proposal_boxes[:5] for p in proposals]
        rgb = heads.teacher_images(images)
        teacher = heads.clip_teacher(rgb, [b.tensor for b in boxes])
        student = heads.head.distilled_embeddings(heads.box_features(features, boxes))
        expected = vild_image_loss(student, teacher).detach()
        got = heads.head.distillation_loss(
            lambda b: heads.box_features(features, [Boxes(x) for x in b]),
            proposals=[p.proposal_boxes.tensor for p in proposals],
            images=rgb,
        )["loss_image"].detach()
        _, losses = heads(images, features, proposals, targets)
    assert teacher.shape == (10, 32)
    assert float(got) == pytest.approx(cfg.MODEL.OVDET.DISTILL.WEIGHT * float(expected), rel=1e-5)
    assert float(losses["loss_image"].detach()) == pytest.approx(
        cfg.MODEL.OVDET.DISTILL.WEIGHT * float(expected), rel=1e-5
    )


def test_clip_rescoring_weights_follow_novelty(instant_cfg, instant_data):
    cfg = instant_cfg(
        "MODEL.OVDET.CLIP_RESCORING.ENABLED", "True", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.01"
    )
    model = build_model(cfg)
    model.eval()
    heads = model.roi_heads
    assert isinstance(heads.head.clip_rescoring, ClipRescoringSettings)
    rgb = np.asarray(Image.open(_record(instant_data)["file_name"]))
    image = torch.as_tensor(rgb[:, :, ::-1].transpose(2, 0, 1).copy()).float()
    text, _ = heads.get_vocabulary()

    def detect(settings, is_novel):
        heads.head.clip_rescoring = settings
        heads.set_vocabulary(text, torch.tensor(is_novel))
        with torch.no_grad():
            return model([{"image": image}])[0]["instances"]

    plain = detect(None, [False, False])
    # Base classes trust the detector fully (weight 1), novel ones CLIP fully (weight 0).
    settings = ClipRescoringSettings(1.0, 0.0, 100.0, 10_000)
    base = detect(settings, [False, False])
    assert torch.allclose(plain.scores, base.scores)
    assert torch.equal(plain.pred_classes, base.pred_classes)
    novel = detect(settings, [True, True])
    assert len(novel) > 0 and int(novel.pred_classes.max()) < 2
    assert len(novel) != len(plain) or not torch.allclose(novel.scores, plain.scores)


def test_clip_rescoring_of_a_model_with_an_image_head_is_refused(instant_cfg, instant_data):
    """Its scores are already joined with the image head's (ViLD-ensemble): a second geometric
    mean is refused where the config builds the model and where CLIP rescoring is turned on."""
    image_head = ("MODEL.OVDET.DISTILL.IMAGE_HEAD", "True")
    with pytest.raises(ConfigError, match="IMAGE_HEAD") as error:
        build_model(instant_cfg(*image_head, "MODEL.OVDET.CLIP_RESCORING.ENABLED", "True"))
    assert "\n" not in str(error.value) and "VILD_ENSEMBLE" in str(error.value)
    heads = build_model(instant_cfg(*image_head)).roi_heads  # online distillation: a teacher
    assert heads.head.has_image_head and heads.clip_teacher is not None
    with pytest.raises(ConfigError, match="IMAGE_HEAD"):
        heads.head.enable_clip_rescoring(ClipRescoringSettings())
    assert heads.head.clip_rescoring is None

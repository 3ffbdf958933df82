"""The torchvision engine's class-agnostic mask head (``MODEL.MASK_ON``)."""

from __future__ import annotations

import pytest
import torch
from PIL import Image, ImageDraw

from ovdet.config import load_config
from ovdet.core import get_head
from ovdet.core.masks import mask_targets, paste_masks, torchvision_mask_key
from ovdet.tv import build_open_vocabulary_rcnn
from ovdet.utils.errors import ConfigError

EMBED_DIM, SIZE = 32, 96


def _cfg(*opts: str):
    return load_config("tiny", ["MODEL.OVDET.EMBED_DIM", str(EMBED_DIM), *opts])


def _shape_image(rng: torch.Generator, shape: str, colour: tuple[int, int, int]):
    """(Tensor[3, SIZE, SIZE] in [0, 1], Tensor[1, 4] box, BoolTensor[1, SIZE, SIZE] mask): one
    filled triangle or disc on a grey background, with its exact mask."""
    side = int(torch.randint(28, 48, (1,), generator=rng))
    x, y = (int(v) for v in torch.randint(0, SIZE - side, (2,), generator=rng))
    box = (x, y, x + side - 1, y + side - 1)
    image, mask = Image.new("RGB", (SIZE, SIZE), (120, 120, 120)), Image.new("L", (SIZE, SIZE))
    for canvas, fill in ((ImageDraw.Draw(image), colour), (ImageDraw.Draw(mask), 255)):
        if shape == "disc":
            canvas.ellipse(box, fill=fill)
        else:
            canvas.polygon([(x, y + side - 1), (x + side - 1, y + side - 1), (x, y)], fill=fill)
    pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    pixels = pixels.view(SIZE, SIZE, 3).permute(2, 0, 1).float() / 255
    exact = torch.frombuffer(bytearray(mask.tobytes()), dtype=torch.uint8).view(SIZE, SIZE) > 0
    return pixels, torch.tensor([[x, y, x + side, y + side]], dtype=torch.float32), exact[None]


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_mask_branch_is_torchvisions_with_one_channel():
    model = build_open_vocabulary_rcnn(_cfg("MODEL.MASK_ON", "True"), embed_dim=EMBED_DIM)
    heads = model.roi_heads
    assert heads.has_mask()
    assert heads.mask_predictor.mask_fcn_logits.out_channels == 1
    assert len(heads.mask_head) == 4 and heads.mask_roi_pool.output_size == (14, 14)
    assert "roi_heads.mask_head.3.0.weight" in model.state_dict()
    assert not build_open_vocabulary_rcnn(_cfg(), embed_dim=EMBED_DIM).roi_heads.has_mask()
    with pytest.raises(ConfigError, match="FPN"):
        build_open_vocabulary_rcnn(
            load_config("ovcoco_detic_boxsup_R50_C4.yaml", ["MODEL.MASK_ON", "True"]),
            embed_dim=EMBED_DIM,
        )


def test_detectron2_mask_head_names():
    assert torchvision_mask_key("mask_fcn1.weight") == "mask_head.0.0.weight"
    assert torchvision_mask_key("mask_fcn4.bias") == "mask_head.3.0.bias"
    assert torchvision_mask_key("deconv.weight") == "mask_predictor.conv5_mask.weight"
    assert torchvision_mask_key("predictor.bias") == "mask_predictor.mask_fcn_logits.bias"
    with pytest.raises(KeyError):
        torchvision_mask_key("mask_fcn1.norm.weight")


def test_targets_are_the_matched_masks_cropped_to_the_regions():
    masks = torch.zeros(2, 40, 40, dtype=torch.bool)
    masks[0, 10:20, 10:30] = True  # left half of region 0 is the object
    masks[1] = True
    boxes = torch.tensor([[10.0, 10.0, 50.0, 20.0], [0.0, 0.0, 8.0, 8.0]])
    targets = mask_targets(masks, boxes, torch.tensor([0, 1]), 28)
    assert targets.shape == (2, 28, 28)
    assert targets[0, :, :13].all() and not targets[0, :, 15:].any()
    assert targets[1].all()


def test_pasted_masks_fill_their_boxes_in_the_target_frame():
    probs = torch.ones(1, 28, 28)
    pasted = paste_masks(probs, torch.tensor([[20.0, 10.0, 60.0, 30.0]]), (50, 80))
    ys, xs = torch.nonzero(pasted[0], as_tuple=True)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (20, 59, 10, 29)


def test_mask_head_learns_shapes_and_outlines_an_unseen_class():
    """Trained on red discs and blue triangles (base), the mask head outlines a green triangle
    (a class with no mask in training) far better than its box does."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    cfg = _cfg("MODEL.MASK_ON", "True", "MODEL.ROI_MASK_HEAD.CONV_DIM", "32")
    model = build_open_vocabulary_rcnn(cfg, embed_dim=EMBED_DIM)
    get_head(model).set_vocabulary(torch.randn(2, EMBED_DIM))
    heads = model.roi_heads
    rng = torch.Generator().manual_seed(1)
    base = [("disc", (220, 30, 30)), ("triangle", (30, 60, 220))]
    params = [p for n, p in model.named_parameters() if "mask" in n]
    optimizer = torch.optim.Adam(params, lr=2e-3)
    model.train()
    for step in range(40):
        batch = [_shape_image(rng, *base[i % 2]) for i in range(4)]
        images = torch.stack([b[0] for b in batch])
        with torch.no_grad():  # the mask head learns on fixed features
            features = model.backbone(model.transform(list(images))[0].tensors)
        boxes = [b[1] + torch.randn(1, 4, generator=rng) for b in batch]  # jittered regions
        loss = heads._mask_loss(
            features,
            boxes,
            [(SIZE, SIZE)] * 4,
            [{"masks": b[2]} for b in batch],
            [torch.zeros(1, dtype=torch.long)] * 4,
            [torch.ones(1, dtype=torch.long)] * 4,
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step == 0:
            first = loss.item()
    assert loss.item() < 0.5 * first
    model.eval()
    mask_ious, box_ious = [], []
    with torch.no_grad():
        for _ in range(6):
            image, box, exact = _shape_image(rng, "triangle", (40, 200, 60))
            features = model.backbone(model.transform([image])[0].tensors)
            logits = heads.mask_logits(features, [box], [(SIZE, SIZE)])
            predicted = paste_masks(logits[:, 0].sigmoid(), box, (SIZE, SIZE))
            box_filled = paste_masks(torch.ones(1, 28, 28), box, (SIZE, SIZE))
            mask_ious.append(_iou(predicted[0], exact[0]))
            box_ious.append(_iou(box_filled[0], exact[0]))
    assert sum(box_ious) / 6 < 0.55  # a triangle fills half its box
    assert sum(mask_ious) / 6 > sum(box_ious) / 6 + 0.2


def test_ovdetector_gives_masks_in_the_original_image(tiny_clip, tmp_path):
    """A checkpoint with ``MODEL.MASK_ON`` predicts ``Detections.masks`` of the original image's
    size, each inside its box (the image is resized for the model, the masks are not)."""
    import numpy as np

    from ovdet import OVDetector
    from ovdet.tv.engine.build import build_model
    from ovdet.tv.engine.checkpoint import save_checkpoint

    cfg = load_config("tiny", ["MODEL.OVDET.CLIP", tiny_clip, "MODEL.OVDET.TEMPLATES", "a",
                               "MODEL.MASK_ON", "True"])  # fmt: skip
    torch.manual_seed(0)
    model = build_model(cfg)
    logits = model.roi_heads.mask_predictor.mask_fcn_logits
    torch.nn.init.normal_(logits.weight, std=1e-3)  # masks near their boxes' whole area
    torch.nn.init.constant_(logits.bias, 3.0)
    state = {"model": model.state_dict(), "config": cfg.dump(), "class_names": ["red square"],
             "embed_dim": 32}  # fmt: skip
    detector = OVDetector.from_checkpoint(save_checkpoint(state, tmp_path, "model.pt"))
    image = np.random.default_rng(0).integers(0, 255, (150, 220, 3), dtype=np.uint8)
    (det,) = detector.predict(image, ["red square", "blue circle"], score_thresh=0.0)
    assert len(det) > 0 and det.masks.shape == (len(det), 150, 220) and det.masks.dtype == bool
    for box, mask in zip(det.boxes, det.masks):
        ys, xs = np.nonzero(mask)
        assert len(xs) and xs.min() >= box[0] - 1 and xs.max() <= box[2] and ys.max() <= box[3]
    boxes_only = load_config("tiny", ["MODEL.OVDET.CLIP", tiny_clip, "MODEL.OVDET.TEMPLATES", "a"])
    plain_detector = OVDetector(build_model(boxes_only), boxes_only, ["red square"])
    (plain,) = plain_detector.predict(image, ["red square"], score_thresh=0.0)
    assert plain.masks is None


def test_coco_results_carry_the_masks_of_the_original_image():
    from pycocotools import mask as mask_utils

    from ovdet.tv.engine.inference import detections_to_coco

    det = {
        "boxes": torch.tensor([[20.0, 10.0, 60.0, 30.0]]),  # resized pixels (scale 2)
        "scores": torch.tensor([0.9]),
        "labels": torch.tensor([0]),
        "mask_probs": torch.ones(1, 28, 28),
    }
    (result,) = detections_to_coco(det, 5, 2.0, [7], image_size=(25, 40))
    assert result["bbox"] == [10.0, 5.0, 20.0, 10.0] and result["category_id"] == 7
    mask = mask_utils.decode(result["segmentation"])
    assert mask.shape == (25, 40) and mask[5:15, 10:30].all() and mask.sum() == 200
    (boxes_only,) = detections_to_coco({k: v for k, v in det.items() if k != "mask_probs"}, 5,
                                       2.0, [7], image_size=(25, 40))  # fmt: skip
    assert "segmentation" not in boxes_only


def test_trainer_trains_and_evaluates_masks_on_synthetic_data(tiny_clip, tmp_path):
    """The whole path: exact synthetic masks -> loader and augmentations -> ``loss_mask`` ->
    COCO results with RLE -> mask AP beside box AP in the trainer's evaluation."""
    import json

    from ovdet.data.synthetic import generate_synthetic_dataset
    from ovdet.tv.engine.trainer import Trainer

    data = generate_synthetic_dataset(
        tmp_path / "data", num_train_images=6, num_val_images=3, num_caption_crops=8,
        num_val_caption_crops=0, progress=False,
    )  # fmt: skip
    cfg = load_config("tiny", [
        "MODEL.OVDET.CLIP", tiny_clip, "MODEL.OVDET.TEMPLATES", "a", "MODEL.MASK_ON", "True",
        "DATASETS.TRAIN_JSON", str(data.train_annotations),
        "DATASETS.TRAIN_IMAGES", str(data.train_images),
        "DATASETS.TEST_JSON", str(data.val_annotations),
        "DATASETS.TEST_IMAGES", str(data.val_images), "DATASETS.SPLIT", str(data.split_file),
        "INPUT.MIN_SIZE_TRAIN", "[64]", "INPUT.MAX_SIZE_TRAIN", "64", "INPUT.MIN_SIZE_TEST", "64",
        "INPUT.MAX_SIZE_TEST", "64", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "2",
        "SOLVER.CHECKPOINT_PERIOD", "2", "TEST.EVAL_PERIOD", "0", "LOG_PERIOD", "1",
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "OUTPUT_DIR", str(tmp_path / "out"),
    ])  # fmt: skip
    trainer = Trainer(cfg, progress=False)
    trainer.train()
    logged = [
        json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()
    ]
    assert all(entry["loss_mask"] > 0 for entry in logged if "loss_mask" in entry)
    assert any("loss_mask" in entry for entry in logged)
    metrics = trainer.evaluate()
    assert {"all/AP50", "segm/all/AP50", "segm/novel/AP50"} <= set(metrics)

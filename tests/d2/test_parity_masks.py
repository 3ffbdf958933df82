"""Parity of the class-agnostic mask head: detectron2's weights in the torchvision engine give
the same mask probabilities for the same detections, and the same mask loss."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.ops import roi_align

pytest.importorskip(
    "detectron2", reason="detectron2 is not installed; see README (install by its official guide)"
)

from detectron2.structures import BitMasks, Boxes, Instances  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402

from ovdet.config import load_config  # noqa: E402
from ovdet.core.masks import paste_masks  # noqa: E402
from ovdet.tv import build_model as build_tv_model  # noqa: E402
from ovdet.utils.errors import ConfigError  # noqa: E402
from tests.d2.test_parity import (  # noqa: E402
    HEIGHT,
    WIDTH,
    _build_engines,
    _inputs,
    _run_d2,
    _run_tv,
)
from tests.d2.test_parity import vocabulary as vocabulary  # noqa: E402 (a fixture)

CHANNELS = 32  # the FPN's, both engines


class _FixedMaskPooler(nn.Module):
    """Stands in for the mask pooler: RoIAlign of one fixed feature map, in either engine's
    calling convention (tv: Tensors and image shapes; d2: a feature list and ``Boxes``)."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(5)
        self.feature_map = torch.randn(1, CHANNELS, HEIGHT // 4, WIDTH // 4, generator=g)

    def forward(self, features, boxes, *args) -> torch.Tensor:
        boxes = [b.tensor if isinstance(b, Boxes) else b for b in boxes]
        assert len(boxes) == 1
        return roi_align(self.feature_map, boxes, 14, 0.25, 0, aligned=True)


@pytest.fixture(scope="module")
def mask_engines(instant_cfg, tiny_clip, text_cache, vocabulary):  # noqa: F811
    tv, d2, cfg = _build_engines(
        instant_cfg, tiny_clip, text_cache, vocabulary, "MODEL.MASK_ON", "True",
        "MODEL.FPN.OUT_CHANNELS", str(CHANNELS), "MODEL.ROI_MASK_HEAD.CONV_DIM", "16",
    )  # fmt: skip
    # detectron2 starts the predictor near 0 (every mask probability ~0.5): make it say something.
    torch.manual_seed(2)
    nn.init.normal_(d2.roi_heads.mask_head.predictor.weight, std=0.5)
    # detectron2's mask-head weights, in detectron2's names, load into the torchvision engine.
    d2_weights = {f"mask_head.{k}": v for k, v in d2.roi_heads.mask_head.state_dict().items()}
    assert "mask_head.mask_fcn1.weight" in d2_weights
    missing, unexpected = tv.roi_heads.load_state_dict(d2_weights, strict=False)
    assert not unexpected and not [k for k in missing if "mask" in k]
    tv.roi_heads.mask_roi_pool = d2.roi_heads.mask_pooler = _FixedMaskPooler()
    return tv, d2, cfg


def test_same_masks_of_the_same_detections(mask_engines):
    tv, d2, _ = mask_engines
    features, proposals, image = _inputs()
    captured = {}
    hook = d2.roi_heads.mask_head.register_forward_hook(
        lambda module, args, out: captured.update(masks=out[0].pred_masks)
    )
    a = _run_tv(tv, features, proposals, image)
    b = _run_d2(d2, features, proposals, image)
    hook.remove()
    torch.testing.assert_close(a["boxes"], b["boxes"], rtol=1e-5, atol=1e-4)
    probs = a["mask_probs"]
    assert probs.shape == (len(a["boxes"]), 28, 28) and len(probs) > 0
    torch.testing.assert_close(probs, captured["masks"][:, 0], rtol=1e-5, atol=1e-6)
    # Pasted masks lie inside (or at the edge of) their boxes.
    pasted = paste_masks(probs.clamp(min=0.5), a["boxes"], (HEIGHT, WIDTH))
    assert pasted.shape == (len(probs), HEIGHT, WIDTH)
    x1, y1, x2, y2 = a["boxes"][0].tolist()
    ys, xs = torch.nonzero(pasted[0], as_tuple=True)
    assert len(ys) and xs.min() >= int(x1) - 1 and xs.max() <= x2 + 1 and ys.max() <= y2 + 1


def test_same_mask_loss(mask_engines):
    tv, d2, _ = mask_engines
    g = torch.Generator().manual_seed(7)
    gt_masks = torch.rand(3, HEIGHT, WIDTH, generator=g) > 0.6
    gt_masks[0, 10:40, 20:60] = True
    boxes = torch.tensor(
        [[18.0, 8.0, 62.0, 41.0], [5.0, 5.0, 30.0, 50.0], [40.0, 20.0, 79.0, 63.0]]
    )
    matched = torch.tensor([0, 2, 1])
    labels = torch.tensor([1, 2, 1])  # all foreground
    tv_loss = tv.roi_heads._mask_loss(
        None, [boxes], [(HEIGHT, WIDTH)], [{"masks": gt_masks}], [matched], [labels]
    )
    instances = Instances((HEIGHT, WIDTH))
    instances.proposal_boxes = Boxes(boxes)
    instances.gt_classes = labels - 1
    instances.gt_masks = BitMasks(gt_masks[matched])
    d2.roi_heads.train()
    try:
        fake_features = {f: None for f in d2.roi_heads.mask_in_features}
        with EventStorage():
            d2_loss = d2.roi_heads._forward_mask(fake_features, [instances])["loss_mask"]
    finally:
        d2.roi_heads.eval()
    torch.testing.assert_close(tv_loss, d2_loss)
    # The targets matter: another object's masks give another loss.
    other = tv.roi_heads._mask_loss(
        None, [boxes], [(HEIGHT, WIDTH)], [{"masks": gt_masks}], [matched.flip(0)], [labels]
    )
    assert abs(other.item() - tv_loss.item()) > 1e-3


def test_per_class_masks_are_refused(instant_cfg):
    from detectron2.modeling import build_model as build_d2_model

    cfg = instant_cfg("MODEL.MASK_ON", "True", "MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK", "False")
    with pytest.raises(ConfigError, match="CLS_AGNOSTIC_MASK must be True"):
        build_d2_model(cfg)
    tv_cfg = load_config(
        "tiny", ["MODEL.MASK_ON", "True", "MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK", "False"]
    )
    with pytest.raises(ConfigError, match="CLS_AGNOSTIC_MASK must be True"):
        build_tv_model(tv_cfg)


def test_both_engines_paste_masks_alike():
    """ovdet's pasting (the torchvision engine's) is detectron2's: the same pixels."""
    from detectron2.layers.mask_ops import paste_masks_in_image

    g = torch.Generator().manual_seed(11)
    probs = torch.rand(6, 28, 28, generator=g)
    xy = torch.rand(6, 2, generator=g) * 60 - 5
    boxes = torch.cat([xy, xy + torch.rand(6, 2, generator=g) * 50 + 1], 1)
    theirs = paste_masks_in_image(probs, Boxes(boxes), (HEIGHT, WIDTH), threshold=0.5)
    ours = paste_masks(probs, boxes, (HEIGHT, WIDTH))
    assert ours.any() and torch.equal(ours, theirs)


def test_d2_predictor_gives_masks_in_the_original_image(instant_config_file, tiny_clip, text_cache):
    import numpy as np

    from ovdet.d2.predictor import D2DetectorAdapter, OpenVocabularyD2Predictor

    overrides = ["MODEL.OVDET.CLIP", tiny_clip, "MODEL.OVDET.TEXT_CACHE_DIR", str(text_cache),
                 "MODEL.MASK_ON", "True"]  # fmt: skip
    torch.manual_seed(0)
    predictor = OpenVocabularyD2Predictor(str(instant_config_file), overrides=overrides)
    adapter = D2DetectorAdapter(predictor)
    image = np.random.default_rng(0).integers(0, 255, (150, 220, 3), dtype=np.uint8)
    (det,) = adapter.predict([image], score_thresh=0.0)
    assert len(det) > 0 and det.masks.shape == (len(det), 150, 220) and det.masks.dtype == bool


def test_d2_evaluator_reports_mask_ap(tmp_path):
    """The hand-made masks of tests/evaluation/test_mask_evaluation.py, as detectron2 outputs."""
    import json

    import numpy as np
    from PIL import Image
    from pycocotools import mask as mask_utils

    from ovdet.d2 import OpenVocabularyEvaluator
    from ovdet.d2.datasets import register_ov_coco_dataset
    from tests.evaluation.test_mask_evaluation import _detections, _gt

    gt = _gt()
    for category in gt["categories"]:
        del category["frequency"]
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    Image.new("RGB", (100, 100)).save(tmp_path / "1.jpg")
    (tmp_path / "split.json").write_text(json.dumps({"base": ["apple"], "novel": ["dog"]}))
    name = "ovdet_mask_ap_test"
    register_ov_coco_dataset(name, tmp_path / "gt.json", tmp_path, str(tmp_path / "split.json"),
                             base_only=False)  # fmt: skip
    dets = _detections()
    instances = Instances((100, 100))
    instances.pred_boxes = Boxes(torch.tensor([[10.0, 10, 50, 50], [50.0, 50, 90, 90]]))
    instances.scores = torch.tensor([d["score"] for d in dets])
    instances.pred_classes = torch.tensor([0, 1])
    masks = [mask_utils.decode(d["segmentation"]) for d in dets]
    instances.pred_masks = torch.from_numpy(np.stack(masks)).bool()
    evaluator = OpenVocabularyEvaluator(name, None, distributed=False)
    evaluator.reset()
    evaluator.process([{"image_id": 1}], [{"instances": instances}])
    results = evaluator.evaluate()
    assert results["bbox"]["novel_AP"] == pytest.approx(100.0)
    assert results["segm"]["novel_AP"] == pytest.approx(30.0)
    assert results["segm"]["base_AP"] == pytest.approx(100.0)

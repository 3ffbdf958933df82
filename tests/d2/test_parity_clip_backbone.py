"""Parity of the frozen CLIP backbones (F-VLM, ``MODEL.BACKBONE.NAME
build_clip_resnet_fpn_backbone`` and ``build_clip_vit_fpn_backbone``): the same CLIP and FPN
weights give both engines the same feature maps and CLIP map on a photo, each from its own input
normalisation, and the same detections with CLIP rescoring from the backbone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip(
    "detectron2", reason="detectron2 is not installed; see README (install by its official guide)"
)

from detectron2.structures import Boxes, ImageList, Instances  # noqa: E402

from ovdet.core import ClipRescoringSettings, get_head  # noqa: E402
from ovdet.core.clip_backbone import CLIP_FEATURES_KEY  # noqa: E402
from ovdet.d2 import ClipFPN  # noqa: E402
from tests.d2.test_parity import _assert_same, _build_engines, _Fixed, _inputs  # noqa: E402
from tests.d2.test_parity import vocabulary as vocabulary  # noqa: E402 (a fixture)

HEIGHT, WIDTH = 64, 96  # multiples of 32 (and of the tiny ViT's patch, 16): neither engine pads
CLIP_BACKBONE = ["MODEL.BACKBONE.NAME", "build_clip_resnet_fpn_backbone"]
#: (MODEL.BACKBONE.NAME, the fixture of a tiny CLIP of its kind)
TOWERS = {
    "resnet": ("build_clip_resnet_fpn_backbone", "tiny_resnet_clip"),
    "vit": ("build_clip_vit_fpn_backbone", "tiny_vit_clip"),
}
RESCORING = [
    "MODEL.OVDET.CLIP_RESCORING.ENABLED", "True", "MODEL.OVDET.CLIP_RESCORING.SOURCE", "backbone",
    "MODEL.OVDET.CLIP_RESCORING.NUM_PROPOSALS", "20",
]  # fmt: skip


def _photo() -> np.ndarray:
    """skimage's coffee photo, RGB uint8 [HEIGHT, WIDTH, 3]."""
    from PIL import Image
    from skimage import data

    return np.asarray(Image.fromarray(data.coffee()).resize((WIDTH, HEIGHT)))


def _d2_fpn_to_torchvision(state: dict) -> dict:
    """detectron2's FPN names (``fpn_lateral2``, ``fpn_output2``...) -> torchvision's
    ``FeaturePyramidNetwork`` names (``inner_blocks.0.0``, ``layer_blocks.0.0``...)."""
    renamed = {}
    for key, value in state.items():
        conv, _, param = key.partition(".")
        kind = conv.rstrip("0123456789")
        block = {"fpn_lateral": "inner_blocks", "fpn_output": "layer_blocks"}[kind]
        renamed[f"{block}.{int(conv[len(kind) :]) - 2}.0.{param}"] = value
    return renamed


@pytest.fixture(scope="module", params=list(TOWERS))
def clip_engines(request, instant_cfg, text_cache, vocabulary):  # noqa: F811
    """(torchvision model, detectron2 model, torchvision config) on a CLIP backbone (ResNet or
    ViT), the same tower (from the CLIP file) and the same FPN (detectron2's, renamed) in both."""
    builder, clip_fixture = TOWERS[request.param]
    clip = request.getfixturevalue(clip_fixture)
    tv, d2, cfg = _build_engines(
        instant_cfg, clip, text_cache, vocabulary, "MODEL.OVDET.CLIP", clip,
        "MODEL.FPN.OUT_CHANNELS", "32", "MODEL.BACKBONE.NAME", builder, *RESCORING,
    )  # fmt: skip
    assert isinstance(d2.backbone, ClipFPN)
    assert type(tv.backbone.clip) is type(d2.backbone.clip)
    # each engine initialised its own FPN: only the load below makes them one
    assert not torch.equal(
        tv.backbone.fpn.inner_blocks[0][0].weight, d2.backbone.fpn.fpn_lateral2.weight
    )
    tv.backbone.fpn.load_state_dict(_d2_fpn_to_torchvision(d2.backbone.fpn.state_dict()))
    tv_tower, d2_tower = tv.backbone.clip.state_dict(), d2.backbone.clip.state_dict()
    assert tv_tower.keys() == d2_tower.keys()
    assert all(torch.equal(tv_tower[k], d2_tower[k]) for k in tv_tower)
    return tv, d2, cfg


def _backbone_features(tv, d2) -> tuple[dict, dict]:
    """Both backbones' outputs on the photo, each from its own input (tv: RGB in [0, 1] with its
    normalisation; d2: BGR 0-255, ``MODEL.PIXEL_MEAN/STD``)."""
    photo = _photo()
    rgb = torch.from_numpy(photo.copy()).permute(2, 0, 1).float() / 255
    bgr = torch.from_numpy(np.ascontiguousarray(photo[:, :, ::-1])).permute(2, 0, 1).float()
    with torch.no_grad():
        tv_features = tv.backbone(tv.transform.normalize(rgb)[None])
        d2_images = d2.preprocess_image([{"image": bgr}])
        assert tuple(d2_images.tensor.shape[-2:]) == (HEIGHT, WIDTH)  # no padding
        d2_features = d2.backbone(d2_images.tensor)
    return tv_features, d2_features


def _assert_same_map(a: torch.Tensor, b: torch.Tensor) -> None:
    """Equal up to float32 rounding of the two engines' input normalisations: 1e-6 of the
    map's largest value (the tiny ViT's FPN levels reach ~6, the ResNet's ~0.4)."""
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6 * max(1.0, b.abs().max().item()))


def test_same_feature_maps(clip_engines):
    tv, d2, _ = clip_engines
    tv_features, d2_features = _backbone_features(tv, d2)
    assert set(d2_features) == {"p2", "p3", "p4", "p5", "p6", CLIP_FEATURES_KEY}
    clip_map, tower = d2_features[CLIP_FEATURES_KEY], d2.backbone.clip
    stride = tower.clip_stride  # a ResNet's res5 (32), a ViT's patch tokens (16)
    assert clip_map.shape == (1, tower.clip_channels, HEIGHT // stride, WIDTH // stride)
    _assert_same_map(tv_features[CLIP_FEATURES_KEY], clip_map)
    for level, name in enumerate(("p2", "p3", "p4", "p5")):
        _assert_same_map(tv_features[str(level)], d2_features[name])
    _assert_same_map(tv_features["pool"], d2_features["p6"])


def _detect_tv(model, features, proposals, clip_features) -> dict:
    heads = model.roi_heads
    heads.box_roi_pool, heads.box_head = _Fixed(features), _Fixed(features)
    (det,), _ = heads({}, [proposals], [(HEIGHT, WIDTH)], clip_features=clip_features)
    return det


def _detect_d2(model, features, proposals, clip_features) -> dict:
    heads = model.roi_heads
    heads.box_pooler, heads.box_head = _Fixed(features), _Fixed(features)
    instances = Instances((HEIGHT, WIDTH))
    instances.proposal_boxes = Boxes(proposals.clone())
    maps = {f: None for f in heads.box_in_features}
    maps[CLIP_FEATURES_KEY] = clip_features
    images = ImageList(torch.zeros(1, 3, HEIGHT, WIDTH), [(HEIGHT, WIDTH)])
    (det,), _ = heads(images, maps, [instances])
    return {
        "boxes": det.pred_boxes.tensor,
        "scores": det.scores,
        "labels": det.pred_classes,
        "embeddings": det.pred_embeddings,
    }


def test_same_detections_with_rescoring_from_the_backbone(clip_engines):
    tv, d2, tv_cfg = clip_engines
    settings = ClipRescoringSettings.from_config(tv_cfg)
    assert settings.source == "backbone" and settings.num_proposals == 20
    d2_head, tv_head = get_head(d2), get_head(tv)
    # the d2 build turned it on from the config, with the backbone's tower and no crop teacher
    assert d2_head.clip_rescoring == settings and d2_head.clip_teacher is None
    assert d2_head.clip_backbone is d2.backbone.clip
    tv_head.enable_clip_rescoring(settings)
    tv_features, d2_features = _backbone_features(tv, d2)
    features, proposals, _ = _inputs()
    try:
        with tv_head.score_threshold(0.0), d2_head.score_threshold(0.0):
            a = _detect_tv(tv, features, proposals, tv_features[CLIP_FEATURES_KEY])
            b = _detect_d2(d2, features, proposals, d2_features[CLIP_FEATURES_KEY])
            _assert_same(a, b)
            assert len(a["scores"]) <= 20 * 4  # the 20 rescored regions, 4 classes
            d2_head.enable_clip_rescoring(None)
            plain = _detect_d2(d2, features, proposals, d2_features[CLIP_FEATURES_KEY])
        assert not torch.allclose(b["scores"][:5], plain["scores"][:5])  # CLIP changed them
    finally:
        tv_head.enable_clip_rescoring(None)
        d2_head.enable_clip_rescoring(settings)

"""The frozen CLIP backbone (F-VLM): a whole-image box through the pooled path is CLIP's own
image embedding, in any detector input normalisation; the tower (ResNet or ViT) does not train
and rescoring from it joins its regions' scores; rescoring from it needs it; a ViT CLIP on the
ResNet builder is refused in one line. The ViT tower's own tests: test_clip_vit_backbone.py."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ovdet.clip import load_clip
from ovdet.config import load_config
from ovdet.core import get_head
from ovdet.core.clip_backbone import CLIP_FEATURES_KEY, FrozenClipResNet
from ovdet.core.score_fusion import ClipRescoringSettings
from ovdet.tv import build_model
from ovdet.utils.errors import ConfigError

CLIP_BACKBONE = ["MODEL.BACKBONE.NAME", "build_clip_resnet_fpn_backbone"]
#: (MODEL.BACKBONE.NAME, the fixture of a tiny CLIP of its kind)
TOWERS = pytest.mark.parametrize(
    "builder, clip_fixture",
    [("build_clip_resnet_fpn_backbone", "tiny_resnet_clip"),
     ("build_clip_vit_fpn_backbone", "tiny_vit_clip")],
)  # fmt: skip


def _clip_image_embedding(clip, image: torch.Tensor) -> torch.Tensor:
    """CLIP's own embedding of RGB [0, 1] images Tensor[B, 3, S, S], L2-normalised."""
    mean, std = torch.tensor(clip.mean).view(1, 3, 1, 1), torch.tensor(clip.std).view(1, 3, 1, 1)
    return F.normalize(clip.encode_image((image - mean) / std), dim=-1)


@pytest.mark.parametrize(
    "fmt, mean, std",
    [("RGB", [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]),
     ("BGR", [103.53, 116.28, 123.675], [1.0, 1.0, 1.0])],
)  # fmt: skip
def test_a_whole_image_box_is_clips_image_embedding(tiny_resnet_clip, fmt, mean, std):
    cfg = load_config(
        "tiny", [*CLIP_BACKBONE, "MODEL.OVDET.CLIP", tiny_resnet_clip, "INPUT.FORMAT", fmt,
                 "MODEL.PIXEL_MEAN", str(mean), "MODEL.PIXEL_STD", str(std)],
    )  # fmt: skip
    model = build_model(cfg).eval()
    clip = load_clip(tiny_resnet_clip)
    side = clip.image_size
    images = torch.rand(2, 3, side, side)
    normalised = torch.stack([model.transform.normalize(i) for i in images])
    res5 = model.backbone.clip(normalised)["res5"]
    assert tuple(res5.shape[-2:]) == (side // 32, side // 32)
    whole = torch.tensor([[0.0, 0.0, side, side]])
    pooled = model.backbone.clip.region_embeddings(res5, [whole, whole])
    expected = _clip_image_embedding(clip, images)
    torch.testing.assert_close(pooled, expected, atol=1e-5, rtol=1e-5)
    # the two images' embeddings differ by far more than the pooled path's error
    error = (pooled - expected).abs().max()
    assert (expected[0] - expected[1]).abs().max() > 100 * error


def test_the_pooled_path_equals_clips_attention_pool_on_any_region(tiny_resnet_clip):
    """Only the mean token's query is computed, without keys and values (a pool of more
    tokens) or with them (a few): the same embeddings as open_clip's pool."""
    cfg = load_config("tiny", [*CLIP_BACKBONE, "MODEL.OVDET.CLIP", tiny_resnet_clip])
    tower = build_model(cfg).backbone.clip
    regions = torch.randn(5, tower.visual.attnpool.k_proj.in_features, 2, 2)
    expected = F.normalize(tower.visual.attnpool(regions), dim=-1)
    for pool in (tower._attention_pool, tower._attention_pool_few_tokens):
        torch.testing.assert_close(F.normalize(pool(regions), dim=-1), expected)


@TOWERS
def test_the_clip_tower_does_not_train_and_the_fpn_does(request, builder, clip_fixture):
    clip = request.getfixturevalue(clip_fixture)
    cfg = load_config("tiny", ["MODEL.BACKBONE.NAME", builder, "MODEL.OVDET.CLIP", clip])
    torch.manual_seed(0)
    model = build_model(cfg).train()
    get_head(model).set_vocabulary(F.normalize(torch.randn(2, 32), dim=-1))
    tower = {k: v.clone() for k, v in model.backbone.clip.state_dict().items()}
    fpn = {k: v.clone() for k, v in model.backbone.fpn.state_dict().items()}
    assert not any(p.requires_grad for p in model.backbone.clip.parameters())
    assert not model.backbone.clip.visual.training  # batch norms keep CLIP's statistics
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.01)
    images = [torch.rand(3, 64, 96), torch.rand(3, 64, 96)]
    targets = [{"boxes": torch.tensor([[8.0, 8.0, 40.0, 50.0]]), "labels": torch.tensor([1])}] * 2
    for _ in range(2):
        loss = sum(model(images, targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert all(p.grad is None for p in model.backbone.clip.parameters())  # no gradient reached it
    for key, value in model.backbone.clip.state_dict().items():
        assert torch.equal(value, tower[key]), key  # weights and BN statistics
    assert any(not torch.equal(v, fpn[k]) for k, v in model.backbone.fpn.state_dict().items())


@TOWERS
def test_rescoring_from_the_backbone_joins_the_pooled_regions_scores(
    request, builder, clip_fixture
):
    cfg = load_config(
        "tiny", ["MODEL.BACKBONE.NAME", builder, "MODEL.OVDET.CLIP",
                 request.getfixturevalue(clip_fixture), "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"],
    )  # fmt: skip
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    head = get_head(model)
    head.set_vocabulary(F.normalize(torch.randn(3, 32), dim=-1), torch.tensor([False, True, True]))
    image = torch.rand(3, 64, 96)
    with torch.no_grad():
        (plain,) = model([image])
        head.enable_clip_rescoring(ClipRescoringSettings(source="backbone", num_proposals=20))
        (rescored,) = model([image])
    assert len(plain["scores"]) > 0 and len(rescored["scores"]) > 0
    assert len(rescored["scores"]) <= 20 * 3  # only the top 20 regions are kept
    assert not torch.allclose(plain["scores"][:5], rescored["scores"][:5])
    # the best detection's score is the joined score of its region and class
    with torch.no_grad():
        clip_map = model.backbone.clip(model.transform([image])[0].tensors)[CLIP_FEATURES_KEY]
        clip_emb = model.backbone.clip.region_embeddings(clip_map, [rescored["boxes"][:1]])
        clip_probs = F.softmax(100.0 * clip_emb @ head.text_embeddings.t(), dim=-1)
    label = int(rescored["labels"][0])
    w = 0.33 if label > 0 else 0.67
    index = plain["region_index"] == rescored["region_index"][0]
    detector = plain["scores"][index & (plain["labels"] == label)]
    assert len(detector) == 1  # that region's detector score for the class
    expected = detector[0] ** w * clip_probs[0, label] ** (1 - w)
    torch.testing.assert_close(rescored["scores"][0], expected, rtol=1e-4, atol=1e-6)


def test_rescoring_from_the_backbone_needs_the_clip_backbone(tiny_resnet_clip):
    model = build_model(load_config("tiny", ["MODEL.OVDET.CLIP", tiny_resnet_clip]))
    with pytest.raises(ConfigError, match="build_clip_resnet_fpn_backbone"):
        get_head(model).enable_clip_rescoring(ClipRescoringSettings(source="backbone"))
    with pytest.raises(ConfigError, match="SOURCE must be one of"):
        ClipRescoringSettings(source="tiles")


def test_a_vit_clip_or_c4_is_refused_in_one_line(tiny_clip, tiny_resnet_clip):
    with pytest.raises(
        ConfigError, match="needs a ResNet CLIP .* build_clip_vit_fpn_backbone"
    ) as e:
        build_model(load_config("tiny", [*CLIP_BACKBONE, "MODEL.OVDET.CLIP", tiny_clip]))
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="StandardROIHeads"):
        build_model(load_config("tiny", [*CLIP_BACKBONE, "MODEL.OVDET.CLIP", tiny_resnet_clip,
                                         "MODEL.ROI_HEADS.NAME", "Res5ROIHeads"]))  # fmt: skip


def test_detector_input_becomes_clips_input():
    visual = torch.nn.Module()
    visual.stem = visual.layer4 = visual.attnpool = torch.nn.Identity()
    # only the normalisation is used here; the rest of the tower is not called
    tower = FrozenClipResNet.__new__(FrozenClipResNet)
    torch.nn.Module.__init__(tower)
    clip_mean, clip_std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    pixel_mean, pixel_std = (100.0, 110.0, 120.0), (50.0, 60.0, 70.0)
    scale = torch.tensor(pixel_std) / 255 / torch.tensor(clip_std[::-1])
    shift = (torch.tensor(pixel_mean) / 255 - torch.tensor(clip_mean[::-1])) / torch.tensor(
        clip_std[::-1]
    )
    tower.register_buffer("scale", scale.view(1, 3, 1, 1))
    tower.register_buffer("shift", shift.view(1, 3, 1, 1))
    tower.flip_channels = True
    rgb = torch.rand(1, 3, 4, 4)
    bgr255 = rgb.flip(1) * 255
    detector_input = (bgr255 - torch.tensor(pixel_mean).view(1, 3, 1, 1)) / torch.tensor(
        pixel_std
    ).view(1, 3, 1, 1)
    expected = (rgb - torch.tensor(clip_mean).view(1, 3, 1, 1)) / torch.tensor(clip_std).view(
        1, 3, 1, 1
    )
    torch.testing.assert_close(tower.clip_input(detector_input), expected)

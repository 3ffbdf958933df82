"""The torchvision engine's fast paths (ovdet/tv/fast_paths.py) give the detections, features,
gradients and checkpoints of torchvision's reference computation."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.resnet import resnet18
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from ovdet.config import load_config
from ovdet.core import get_head
from ovdet.tv import build_backbone, build_open_vocabulary_rcnn
from ovdet.tv.fast_paths import (
    FoldedFrozenBatchNorm2d,
    FrozenBNConv2d,
    PointwiseConv2d,
    fold_frozen_batchnorm,
    use_reference_paths,
)
from tests.conftest import draw_toy_image

EMBED_DIM = 32


def _tiny_cfg(*opts: str):
    return load_config("tiny", ["MODEL.OVDET.EMBED_DIM", str(EMBED_DIM), *opts])


def _randomise_frozen_bn(model: torch.nn.Module, seed: int = 0) -> int:
    """Give every frozen batch norm a non-trivial affine map (a fresh one is the identity, which
    folds trivially). Returns how many there are."""
    gen = torch.Generator().manual_seed(seed)
    count = 0
    for m in model.modules():
        if isinstance(m, FrozenBatchNorm2d):
            c = m.weight.shape[0]
            m.weight.copy_(0.5 + torch.rand(c, generator=gen))
            m.bias.copy_(0.2 * torch.randn(c, generator=gen))
            m.running_mean.copy_(0.2 * torch.randn(c, generator=gen))
            m.running_var.copy_(0.5 + torch.rand(c, generator=gen))
            count += 1
    return count


def _image(seed: int = 0, size: int = 160) -> torch.Tensor:
    pil, _ = draw_toy_image(np.random.default_rng(seed), size=size)
    return torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1).float() / 255


@pytest.fixture(scope="module")
def detector():
    torch.manual_seed(0)
    model = build_open_vocabulary_rcnn(_tiny_cfg(), embed_dim=EMBED_DIM).eval()
    assert _randomise_frozen_bn(model) == 20  # ResNet-18: stem + 8 blocks x 2 + 3 downsamples
    gen = torch.Generator().manual_seed(1)
    get_head(model).set_vocabulary(torch.randn(6, EMBED_DIM, generator=gen))
    get_head(model).score_thresh = 0.0
    return model


def test_every_frozen_batchnorm_is_folded_and_names_are_torchvisions():
    torch.manual_seed(0)
    backbone = build_backbone(_tiny_cfg())
    convs = [m for m in backbone.modules() if isinstance(m, FrozenBNConv2d)]
    norms = [m for m in backbone.modules() if isinstance(m, FrozenBatchNorm2d)]
    assert len(convs) == len(norms) == 20
    assert all(isinstance(n, FoldedFrozenBatchNorm2d) and n.folded for n in norms)
    # the same parameter and buffer names as torchvision's own ResNet + FPN
    reference = BackboneWithFPN(
        resnet18(norm_layer=FrozenBatchNorm2d),
        return_layers={"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"},
        in_channels_list=[64, 128, 256, 512],
        out_channels=64,
        extra_blocks=LastLevelMaxPool(),
    )
    assert list(backbone.state_dict()) == list(reference.state_dict())
    # trainable batch norms are not folded
    plain = build_backbone(_tiny_cfg("MODEL.RESNETS.NORM", "BN"))
    assert not any(isinstance(m, FrozenBNConv2d) for m in plain.modules())


def test_pointwise_convolutions_run_as_matrix_products_with_the_same_result(detector):
    pointwise = [m for m in detector.modules() if isinstance(m, PointwiseConv2d)]
    assert len(pointwise) == 4 + 2  # FPN lateral convolutions, RPN objectness and deltas
    conv = pointwise[0]
    x = torch.randn(1, conv.in_channels, 9, 11, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        out = conv(x.contiguous(memory_format=torch.channels_last))
        reference = torch.nn.functional.conv2d(x, conv.weight, conv.bias)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-5)


def test_fast_and_reference_paths_give_the_same_detections(detector):
    images = [_image(0), _image(1, size=128)]
    with torch.no_grad():
        use_reference_paths(detector, True)
        reference = detector(images)
        use_reference_paths(detector, False)
        fast = detector(images)
    for ref, out in zip(reference, fast):
        assert len(ref["boxes"]) > 10  # threshold 0: real post-processing work
        torch.testing.assert_close(out["boxes"], ref["boxes"], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(out["scores"], ref["scores"], rtol=1e-4, atol=1e-6)
        assert torch.equal(out["labels"], ref["labels"])
        assert torch.equal(out["region_index"], ref["region_index"])


def test_fast_backbone_matches_reference_and_runs_channels_last(detector):
    backbone = detector.backbone
    x = torch.stack([_image(2)]) * 2 - 1
    with torch.no_grad():
        use_reference_paths(backbone, True)
        reference = backbone(x)
        use_reference_paths(backbone, False)
        fast = backbone(x)
    assert reference.keys() == fast.keys()
    for name in reference:
        assert fast[name].is_contiguous(memory_format=torch.channels_last), name
        scale = reference[name].abs().max()
        torch.testing.assert_close(fast[name] / scale, reference[name] / scale, rtol=0, atol=1e-5)


def test_folding_follows_weights_loaded_after_building(detector):
    """No stale folded weights: a checkpoint loaded later (new batch norm statistics and conv
    weights) is what the fast path computes with."""
    model = copy.deepcopy(detector)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for key in ("backbone.body.bn1.running_var", "backbone.body.layer2.0.bn1.running_mean"):
        state[key] = state[key] * 1.7 + 0.3
    state["backbone.body.layer3.1.conv2.weight"] *= -1
    model.load_state_dict(state)
    x = torch.stack([_image(3)])
    with torch.no_grad():
        fast = model.backbone(x)
        use_reference_paths(model.backbone, True)
        reference = model.backbone(x)
        stale = detector.backbone(x)
    for name in reference:
        scale = reference[name].abs().max()
        torch.testing.assert_close(fast[name] / scale, reference[name] / scale, rtol=0, atol=1e-5)
    assert not torch.allclose(stale["0"], reference["0"], atol=1e-3)


def test_training_gradients_are_the_same_folded_or_not():
    """Folding holds in training too (the batch norms are frozen; the convolutions learn)."""
    torch.manual_seed(0)
    body = resnet18(norm_layer=FrozenBatchNorm2d)
    _randomise_frozen_bn(body)
    folded = copy.deepcopy(body)
    assert fold_frozen_batchnorm(folded) == 20
    x = torch.randn(1, 3, 48, 48, generator=torch.Generator().manual_seed(4))
    grads = []
    for model in (body, folded):
        model.train()
        model.zero_grad()
        model(x).square().mean().backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, rtol=1e-3, atol=1e-6, msg=name)

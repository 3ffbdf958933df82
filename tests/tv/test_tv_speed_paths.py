"""The torchvision engine's fast paths (ovdet/tv/modeling/fast_paths.py) give the detections,
features,
gradients and checkpoints of torchvision's reference computation."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torchvision.ops as tv_ops
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.resnet import resnet18
from torchvision.ops import FrozenBatchNorm2d, roi_align
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from ovdet.config import load_config
from ovdet.core import get_head
from ovdet.tv import build_backbone, build_open_vocabulary_rcnn
from ovdet.tv.modeling.fast_paths import (
    FoldedFrozenBatchNorm2d,
    FrozenBNConv2d,
    PointwiseConv2d,
    fold_frozen_batchnorm,
    use_reference_paths,
)
from ovdet.tv.modeling.roi_pooling import MultiScaleRoIAlign, roi_align_input_grad
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


def _random_rois(num: int, images: int, width: float, height: float, seed: int) -> torch.Tensor:
    """Tensor[num, 5] (image, x1, y1, x2, y2), some boxes partly outside the image and some
    smaller than a feature-map pixel."""
    gen = torch.Generator().manual_seed(seed)
    corners = torch.rand(num, 4, generator=gen) * torch.tensor([width, height] * 2) * 1.2 - 8
    corners[: num // 4, 2:] = corners[: num // 4, :2] + 0.5  # tiny boxes
    boxes = torch.cat([corners[:, :2].min(corners[:, 2:]), corners[:, :2].max(corners[:, 2:])], 1)
    return torch.cat([torch.randint(0, images, (num, 1), generator=gen).float(), boxes], 1)


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [1, 2, 3])
def test_roi_align_input_grad_is_torchvisions_gradient(aligned, sampling_ratio):
    x = torch.randn(3, 8, 13, 17, generator=torch.Generator().manual_seed(5), requires_grad=True)
    rois = _random_rois(80, 3, 17 * 8, 13 * 8, seed=sampling_ratio)
    out = roi_align(x, rois, (7, 5), 0.125, sampling_ratio, aligned)
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(6))
    (reference,) = torch.autograd.grad(out, x, upstream)
    assert reference.abs().sum() > 0
    grad = roi_align_input_grad(upstream, rois, tuple(x.shape), 0.125, sampling_ratio, aligned)
    assert grad.shape == x.shape and grad.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(grad, reference, rtol=1e-5, atol=1e-5)
    empty = roi_align_input_grad(upstream[:0], rois[:0], tuple(x.shape), 0.125, sampling_ratio)
    assert torch.equal(empty, torch.zeros_like(x))
    with pytest.raises(ValueError, match="sampling_ratio"):
        roi_align_input_grad(upstream, rois, tuple(x.shape), 0.125, 0)


def test_multiscale_roi_align_forward_and_backward_match_torchvisions():
    gen = torch.Generator().manual_seed(7)
    levels = {str(i): torch.randn(2, 16, 40 >> i, 48 >> i, generator=gen) for i in range(4)}
    levels = {k: v.contiguous(memory_format=torch.channels_last) for k, v in levels.items()}
    # large boxes too, so that every FPN level pools some
    boxes = [_random_rois(60, 1, 192 * 4, 160 * 4, seed=i)[:, 1:].clamp(0, 600) for i in (8, 9)]
    shapes = [(160, 192)] * 2
    outputs, grads = [], []
    for pooler in (
        tv_ops.MultiScaleRoIAlign(list(levels), 7, 2),
        MultiScaleRoIAlign(list(levels), 7, 2),
    ):
        inputs = {k: v.clone().requires_grad_() for k, v in levels.items()}
        out = pooler(inputs, boxes, shapes)
        upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(10))
        outputs.append(out)
        grads.append(torch.autograd.grad(out, list(inputs.values()), upstream))
    torch.testing.assert_close(outputs[1], outputs[0], rtol=0, atol=0)
    for name, ours, reference in zip(levels, grads[1], grads[0]):
        assert reference.abs().sum() > 0, name  # every level pooled something
        torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5, msg=name)


def test_training_losses_and_gradients_are_the_same_on_the_fast_paths():
    """Channels-last training and the vectorised RoIAlign backward: one training step of the
    detector gives torchvision's losses and gradients."""
    torch.manual_seed(0)
    model = build_open_vocabulary_rcnn(_tiny_cfg(), embed_dim=EMBED_DIM).train()
    get_head(model).set_vocabulary(torch.nn.functional.normalize(torch.randn(5, EMBED_DIM), dim=1))
    images = [_image(11), _image(12, size=128)]
    targets = [
        {"boxes": torch.tensor([[20.0, 30.0, 90.0, 100.0]]), "labels": torch.tensor([1])},
        {"boxes": torch.tensor([[10.0, 10.0, 60.0, 50.0], [70, 60, 120, 120]]),
         "labels": torch.tensor([2, 4])},
    ]  # fmt: skip
    results = []
    for reference in (True, False):
        use_reference_paths(model, reference)
        model.zero_grad()
        torch.manual_seed(1)
        losses = model(images, targets)
        sum(losses.values()).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append(({k: v.detach() for k, v in losses.items()}, grads))
    (ref_losses, ref_grads), (losses, grads) = results
    assert ref_losses.keys() == losses.keys() and ref_grads.keys() == grads.keys()
    for name, value in ref_losses.items():
        torch.testing.assert_close(losses[name], value, rtol=1e-4, atol=1e-6, msg=name)
    assert ref_grads["backbone.body.conv1.weight"].abs().sum() > 0
    for name, g in ref_grads.items():
        scale = g.abs().max().clamp(min=1e-8)
        torch.testing.assert_close(grads[name] / scale, g / scale, rtol=0, atol=1e-3, msg=name)

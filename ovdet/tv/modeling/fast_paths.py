"""Faster, numerically equivalent paths of the torchvision engine's backbone.

Profiling ovdet's R50-FPN against detectron2's on CPU (``benchmarks/bench_vs_detectron2.py
--profile``) showed where torchvision's backbone spends more:

* **FrozenBN.** torchvision's ``FrozenBatchNorm2d`` computes ``x * scale + shift`` as two
  elementwise passes over every feature map (detectron2 makes one, ``F.batch_norm``). A frozen
  batch norm is an affine map of the convolution's output channels, so it folds into the
  convolution's weights: ``conv(x, W * s) + b`` with ``s = gamma / sqrt(var + eps)`` and
  ``b = beta - mean * s``. :class:`FrozenBNConv2d` does that at every call (a pass over the
  weights, not over the feature maps), so it stays exact while weights are loaded or trained, and
  the batch norm after it (:class:`FoldedFrozenBatchNorm2d`) becomes the identity. Parameters
  and buffers keep their names (``conv1.weight``, ``bn1.running_mean``, ...): checkpoints are
  unchanged.
* **Memory format.** oneDNN's convolutions run faster on channels-last (NHWC) tensors than on
  NCHW ones, which they reorder at every call; the backbone takes its input as channels-last, in
  training and at inference (:func:`~ovdet.tv.modeling.backbone.build_backbone`).
* **1x1 convolutions.** At batch 1 on one thread PyTorch runs a 1x1, stride-1 convolution
  outside oneDNN (``_slow_conv2d_forward``), which copies a channels-last input to NCHW and
  back: a third of the convolutions of a ResNet-50 + FPN + RPN. On a channels-last tensor such a
  convolution is one matrix product over the channels, ``[B*H*W, C_in] @ W^T``, with no copy
  (:class:`PointwiseConv2d`, and :class:`FrozenBNConv2d` for its 1x1 convolutions).

Training also pools regions with :class:`ovdet.tv.modeling.roi_pooling.MultiScaleRoIAlign`, whose
CPU
backward pass is vectorised. :func:`use_reference_paths` switches a model back to torchvision's
own computation (all of the above), for the tests that check both give the same detections and
gradients, and for benchmarks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

__all__ = [
    "FoldedFrozenBatchNorm2d",
    "FrozenBNConv2d",
    "PointwiseConv2d",
    "fold_frozen_batchnorm",
    "use_pointwise_matmul",
    "use_reference_paths",
]


def _is_pointwise(conv: nn.Conv2d) -> bool:
    return (
        conv.kernel_size == (1, 1)
        and conv.stride == (1, 1)
        and conv.padding in ((0, 0), "valid")
        and conv.dilation == (1, 1)
        and conv.groups == 1
    )


def _channels_last_only(x: torch.Tensor) -> bool:
    """Whether Tensor[B, C, H, W] is laid out channels-last (and not also NCHW-contiguous)."""
    return (
        x.dim() == 4
        and x.is_contiguous(memory_format=torch.channels_last)
        and not x.is_contiguous()
    )


def _conv2d(
    conv: nn.Conv2d, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """``conv``'s convolution of ``x`` with the given weights; a 1x1 one on a channels-last
    input as a matrix product over the channels (output channels-last, no copy)."""
    if _is_pointwise(conv) and _channels_last_only(x):
        out = F.linear(x.permute(0, 2, 3, 1), weight.flatten(1), bias)  # [B, H, W, C_out]
        return out.permute(0, 3, 1, 2)
    return conv._conv_forward(x, weight, bias)


class PointwiseConv2d(nn.Conv2d):
    """A 1x1, stride-1 ``nn.Conv2d`` that runs as a matrix product on channels-last inputs
    (the same parameters and results; NCHW inputs take ``nn.Conv2d``'s path)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tensor[B, C_in, H, W] -> Tensor[B, C_out, H, W] (channels-last if ``x`` is)."""
        return _conv2d(self, x, self.weight, self.bias)


class FoldedFrozenBatchNorm2d(FrozenBatchNorm2d):
    """A ``FrozenBatchNorm2d`` that the convolution before it may apply instead.

    While ``folded`` is true its forward is the identity (its :class:`FrozenBNConv2d` applied
    it); otherwise it is torchvision's ``FrozenBatchNorm2d``.
    """

    folded: bool = False

    def scale_and_shift(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale Tensor[C], shift Tensor[C]) of the affine map ``x * scale + shift``."""
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        return scale, self.bias - self.running_mean * scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.folded else super().forward(x)


class FrozenBNConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` followed by a frozen batch norm, which it folds into its weights.

    The batch norm stays a separate module of the network (so checkpoints keep torchvision's
    names); this convolution only holds a reference to it, set by :meth:`attach`.
    """

    _norm: tuple[FoldedFrozenBatchNorm2d, ...] = ()

    def attach(self, norm: FoldedFrozenBatchNorm2d) -> None:
        """Fold ``norm`` (the batch norm applied to this convolution's output) from now on."""
        self._norm = (norm,)  # a tuple: a reference, not a registered submodule
        norm.folded = True

    @property
    def folds(self) -> bool:
        return bool(self._norm) and self._norm[0].folded

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tensor[B, C_in, H, W] -> Tensor[B, C_out, H', W'], batch norm applied if folded."""
        if not self.folds:
            return super().forward(x)
        scale, shift = self._norm[0].scale_and_shift()
        weight = self.weight * scale.view(-1, 1, 1, 1).to(self.weight.dtype)
        bias = shift if self.bias is None else self.bias * scale + shift
        return _conv2d(self, x, weight, bias.to(self.weight.dtype))


def _fused_pair(conv: nn.Conv2d, norm: FrozenBatchNorm2d) -> tuple[FrozenBNConv2d, nn.Module]:
    """Copies of ``conv`` and ``norm`` (sharing their parameters and buffers), folded."""
    fused = FrozenBNConv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
    )
    fused.weight = conv.weight
    fused.bias = conv.bias
    folded = FoldedFrozenBatchNorm2d(norm.weight.shape[0], eps=norm.eps)
    for name in ("weight", "bias", "running_mean", "running_var"):
        setattr(folded, name, getattr(norm, name))
    fused.attach(folded)
    return fused, folded


def fold_frozen_batchnorm(resnet: nn.Module) -> int:
    """Fold every ``FrozenBatchNorm2d`` of a torchvision ResNet into the convolution before it.

    Replaces, in place, the pairs ``(conv1, bn1)`` of the stem and ``(convK, bnK)`` and
    ``downsample = (conv, bn)`` of every block; pairs with a trainable ``BatchNorm2d`` are left
    alone. Parameter and buffer names and values are unchanged.

    Returns:
        the number of batch norms folded.
    """
    folded = 0
    for module in list(resnet.modules()):
        names = dict(module.named_children())
        pairs = [(f"conv{i}", f"bn{i}") for i in range(1, 4)]
        if isinstance(module, nn.Sequential) and len(module) == 2:
            pairs = [("0", "1")]  # a block's downsample
        for conv_name, norm_name in pairs:
            conv, norm = names.get(conv_name), names.get(norm_name)
            if type(conv) is nn.Conv2d and type(norm) is FrozenBatchNorm2d:
                fused, folded_norm = _fused_pair(conv, norm)
                setattr(module, conv_name, fused)
                setattr(module, norm_name, folded_norm)
                folded += 1
    return folded


def use_pointwise_matmul(model: nn.Module) -> int:
    """Replace, in place, every plain 1x1 stride-1 ``nn.Conv2d`` of ``model`` by a
    :class:`PointwiseConv2d` sharing its parameters (names unchanged). Returns how many."""
    replaced = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is nn.Conv2d and _is_pointwise(child) and child.padding_mode == "zeros":
                new = PointwiseConv2d(
                    child.in_channels,
                    child.out_channels,
                    1,
                    bias=child.bias is not None,
                    device=child.weight.device,
                    dtype=child.weight.dtype,
                )
                new.weight, new.bias = child.weight, child.bias
                setattr(module, name, new)
                replaced += 1
    return replaced


def use_reference_paths(model: nn.Module, reference: bool = True) -> None:
    """Run ``model`` with torchvision's own computation (``reference=True``) or with the fast
    paths of this module (``False``, the default of every built model)."""
    for module in model.modules():
        if isinstance(module, FrozenBNConv2d) and module._norm:
            module._norm[0].folded = not reference
        if hasattr(module, "channels_last"):
            module.channels_last = not reference
        if hasattr(module, "vectorised_backward"):
            module.vectorised_backward = not reference

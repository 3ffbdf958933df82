"""Multi-scale RoIAlign with a vectorised backward pass on CPU.

Profiling a training step of the synthetic benchmark's detector (ResNet-18 FPN, 8 images of
144x192, 128 RoIs each; ``python -m benchmarks.profile_hot_paths --what training``) put
torchvision's CPU ``_roi_align_backward`` at 17% of the step: it runs on one thread
and recomputes the bilinear weights of every sample once per *channel*. The gradient of RoIAlign
with respect to its feature map is a fixed sparse linear map: each output bin spreads its
gradient over the four neighbours of each of its sampling points. :func:`roi_align_input_grad`
computes the weights once per output bin and adds whole channel rows of a channels-last
gradient with ``index_add_`` (deterministic on CPU): 176 ms against torchvision's 265 ms per
step in that profile (docs/speed.md#vectorised-roialign-backward).

:class:`MultiScaleRoIAlign` is torchvision's pooler with that backward on CPU: its forward pass
is torchvision's own, unchanged; on CUDA, and where no gradient is needed, it is torchvision's
pooler as it is.
"""

from __future__ import annotations

import torch
import torchvision
from torch import Tensor
from torchvision.ops.poolers import _convert_to_roi_format, _filter_input, _setup_scales

__all__ = ["MultiScaleRoIAlign", "roi_align_input_grad"]


def _corners(coords: Tensor, size: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Bilinear neighbours and weights of sampling coordinates along one axis, as torchvision's
    RoIAlign kernel computes them (points beyond ``[-1, size]`` contribute nothing; the others
    are clamped to the map).

    Args:
        coords: Tensor[K, S], coordinates in feature-map pixels.
        size: the map's extent along this axis.

    Returns:
        ``(low, high, w_low, w_high)``: LongTensor[K, S] indices and Tensor[K, S] weights.
    """
    valid = (coords >= -1.0) & (coords <= size)
    coords = coords.clamp(min=0)
    low = coords.floor().long()
    at_edge = low >= size - 1
    low = torch.where(at_edge, torch.full_like(low, size - 1), low)
    high = torch.where(at_edge, low, low + 1)
    frac = torch.where(at_edge, torch.zeros_like(coords), coords - low.to(coords.dtype))
    valid = valid.to(coords.dtype)
    return low, high, (1.0 - frac) * valid, frac * valid


def roi_align_input_grad(
    grad_output: Tensor,
    rois: Tensor,
    input_shape: tuple[int, int, int, int],
    spatial_scale: float,
    sampling_ratio: int,
    aligned: bool = False,
) -> Tensor:
    """Gradient of ``torchvision.ops.roi_align`` with respect to its input.

    Args:
        grad_output: Tensor[K, C, PH, PW], the gradient of the pooled features.
        rois: Tensor[K, 5], ``(image index, x1, y1, x2, y2)`` in image pixels.
        input_shape: ``(B, C, H, W)`` of the feature map.
        spatial_scale: feature-map pixels per image pixel.
        sampling_ratio: sampling points per bin along each axis (> 0; torchvision's adaptive
            ``<= 0`` is not supported).
        aligned: torchvision's ``aligned`` (half-pixel offset; no minimum RoI size).

    Returns:
        Tensor[B, C, H, W], laid out channels-last.
    """
    if sampling_ratio <= 0:
        raise ValueError(f"sampling_ratio must be positive, got {sampling_ratio}")
    k, c, ph, pw = grad_output.shape
    b, _, h, w = input_shape
    grad = grad_output.new_zeros((b * h * w, c))
    if k:
        g = sampling_ratio
        rois = rois.to(grad_output.dtype)
        offset = 0.5 if aligned else 0.0
        x1, y1, x2, y2 = (rois[:, i] * spatial_scale - offset for i in range(1, 5))
        roi_w, roi_h = x2 - x1, y2 - y1
        if not aligned:
            roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)
        steps_y = (torch.arange(ph * g, device=rois.device, dtype=rois.dtype) + 0.5) / (ph * g)
        steps_x = (torch.arange(pw * g, device=rois.device, dtype=rois.dtype) + 0.5) / (pw * g)
        y_low, y_high, wy_low, wy_high = _corners(y1[:, None] + roi_h[:, None] * steps_y, h)
        x_low, x_high, wx_low, wx_high = _corners(x1[:, None] + roi_w[:, None] * steps_x, w)
        # Per bin (k, i, j): its g x g points (a, b) and each point's 2 x 2 neighbours (u, v),
        # as [K, PH, PW, g, g, 2, 2] flat indices into the [B * H * W] map and weights / points.
        rows = torch.stack([y_low, y_high], -1).view(k, ph, 1, g, 1, 2, 1)
        row_weights = torch.stack([wy_low, wy_high], -1).view(k, ph, 1, g, 1, 2, 1)
        cols = torch.stack([x_low, x_high], -1).view(k, 1, pw, 1, g, 1, 2)
        col_weights = torch.stack([wx_low, wx_high], -1).view(k, 1, pw, 1, g, 1, 2)
        first = (rois[:, 0].long() * (h * w)).view(k, 1, 1, 1, 1, 1, 1)
        index = (first + rows * w + cols).reshape(k * ph * pw, -1)  # [K * PH * PW, 4 g^2]
        weight = (row_weights * col_weights / (g * g)).reshape(k * ph * pw, -1)
        per_bin = grad_output.permute(0, 2, 3, 1).reshape(-1, c)  # [K * PH * PW, C]
        scaled = torch.empty_like(per_bin)
        for j in range(index.shape[1]):
            torch.mul(per_bin, weight[:, j : j + 1], out=scaled)
            grad.index_add_(0, index[:, j], scaled)
    return grad.view(b, h, w, c).permute(0, 3, 1, 2)


class _MultiScaleRoIAlignFunction(torch.autograd.Function):
    """torchvision's multi-scale RoIAlign forward; :func:`roi_align_input_grad` backward."""

    @staticmethod
    def forward(ctx, pooler, boxes, image_shapes, *features):
        named = dict(zip(pooler.featmap_names, features))
        with torch.no_grad():
            out = torchvision.ops.MultiScaleRoIAlign.forward(pooler, named, boxes, image_shapes)
        ctx.pooler, ctx.boxes = pooler, boxes
        ctx.shapes = [tuple(f.shape) for f in features]
        return out

    @staticmethod
    def backward(ctx, grad_output):
        pooler, boxes = ctx.pooler, ctx.boxes
        rois = _convert_to_roi_format(boxes)
        levels = pooler.map_levels(boxes) if len(ctx.shapes) > 1 else None
        grads = []
        for level, (shape, scale) in enumerate(zip(ctx.shapes, pooler.scales)):
            keep = slice(None) if levels is None else torch.where(levels == level)[0]
            grads.append(
                roi_align_input_grad(
                    grad_output[keep], rois[keep], shape, scale, pooler.sampling_ratio
                )
            )
        return (None, None, None, *grads)


class MultiScaleRoIAlign(torchvision.ops.MultiScaleRoIAlign):
    """torchvision's ``MultiScaleRoIAlign`` whose backward pass on CPU is
    :func:`roi_align_input_grad` (the same gradient, within float rounding, in about two thirds
    of the time). The forward pass and every argument are torchvision's;
    ``vectorised_backward = False`` gives torchvision's backward too (see
    :func:`~ovdet.tv.modeling.fast_paths.use_reference_paths`).
    """

    vectorised_backward: bool = True

    def forward(
        self, x: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]
    ) -> Tensor:
        """FPN levels ``x`` (Tensor[B, C, H_l, W_l]), per image Tensor[N_i, 4] boxes ->
        Tensor[sum N_i, C, PH, PW]."""
        features = _filter_input(x, self.featmap_names)
        vectorised = (
            self.vectorised_backward
            and self.sampling_ratio > 0
            and torch.is_grad_enabled()
            and features[0].device.type == "cpu"
            and any(f.requires_grad for f in features)
            and not torchvision._is_tracing()
        )
        if not vectorised:
            return super().forward(x, boxes, image_shapes)
        if self.scales is None or self.map_levels is None:
            self.scales, self.map_levels = _setup_scales(
                features, image_shapes, self.canonical_scale, self.canonical_level
            )
        return _MultiScaleRoIAlignFunction.apply(self, boxes, image_shapes, *features)

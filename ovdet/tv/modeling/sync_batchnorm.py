"""Batch norm over the global batch of every process (``MODEL.RESNETS.NORM SyncBN``).

``nn.BatchNorm2d`` under N processes normalises each process's images with that process's own
statistics, so N processes train another model than one process with the same global batch.
``torch.nn.SyncBatchNorm`` shares the statistics, but only on GPUs; :class:`GlobalBatchNorm2d`
shares them with one differentiable all-reduce per layer on any backend (gloo on CPU, NCCL), so
that N processes log the losses of one (docs/training.md#multi-process-training-and-inference).
In one process it is ``nn.BatchNorm2d``.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["GlobalBatchNorm2d"]


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class _SumOverProcesses(torch.autograd.Function):
    """The sum of a tensor over the processes; its gradient, the sum of the processes'
    gradients (every process's loss depends on every process's input)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` whose training statistics are those of the global batch: the sums of
    x and the element counts of every process, then the sums of the squared deviations from
    the global mean, each added by a differentiable all-reduce, so that the gradient of each
    process's loss reaches the other processes' inputs, as in one process. Processes may hold
    different numbers of images or pixels (the sums are weighted by them).
    The running statistics are updated as ``nn.BatchNorm2d`` updates them (unbiased variance
    of the global batch); evaluation and a single process use ``nn.BatchNorm2d`` itself, and
    the state dict is the same.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tensor[B, C, H, W] -> Tensor[B, C, H, W]."""
        if not self.training or _world_size() == 1:
            return super().forward(x)
        channels = x.shape[1]
        count = torch.full((1,), x.numel() / channels, dtype=x.dtype, device=x.device)
        sums = _SumOverProcesses.apply(torch.cat([x.sum(dim=(0, 2, 3)), count]))
        total = sums[-1].detach()
        mean = sums[:channels] / total
        # two passes, as nn.BatchNorm2d: the squared deviations from the global mean, not
        # E[x^2] - mean^2, which loses digits where the mean is large against the spread
        centred = x - mean.view(1, -1, 1, 1)
        var = _SumOverProcesses.apply((centred * centred).sum(dim=(0, 2, 3))) / total  # biased
        if self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach(), float(total.item()))
        scale = torch.rsqrt(var + self.eps)
        if self.affine:
            scale = scale * self.weight
        out = centred * scale.view(1, -1, 1, 1)
        return out + self.bias.view(1, -1, 1, 1) if self.affine else out

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, var: torch.Tensor, n: float) -> None:
        """``nn.BatchNorm2d``'s update: an exponential (or, with ``momentum=None``,
        cumulative) average of the mean and of the unbiased variance of ``n`` values."""
        self.num_batches_tracked.add_(1)
        momentum = self.momentum
        if momentum is None:
            momentum = 1.0 / float(self.num_batches_tracked)
        unbiased = var * (n / max(n - 1.0, 1.0))
        self.running_mean.lerp_(mean, momentum)
        self.running_var.lerp_(unbiased, momentum)

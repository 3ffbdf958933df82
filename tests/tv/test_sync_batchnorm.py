"""MODEL.RESNETS.NORM SyncBN: batch norm over the global batch of 2 gloo processes on CPU gives
the outputs, gradients and running statistics of one process's ``nn.BatchNorm2d`` on the whole
batch, where ``nn.BatchNorm2d`` in each process does not."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from ovdet.tv.modeling.sync_batchnorm import GlobalBatchNorm2d

CHANNELS = 3


def _batch() -> list[torch.Tensor]:
    """The global batch, 2 images per process; one process's images have half the pixels of
    the other's, so that the statistics weighted by count differ from the mean of the means."""
    gen = torch.Generator().manual_seed(0)
    return [
        torch.randn(2, CHANNELS, 4, 6, generator=gen) * 3 + 1,
        torch.randn(2, CHANNELS, 4, 3, generator=gen) - 2,
    ]


def _norm(cls) -> nn.BatchNorm2d:
    norm = cls(CHANNELS)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
        norm.bias.copy_(torch.tensor([0.0, -1.0, 0.3]))
    return norm


def _loss(outputs: list[torch.Tensor]) -> torch.Tensor:
    """A loss that weighs every output element differently, summed over the images."""
    return sum((o * torch.arange(o.numel()).view_as(o).sin()).sum() for o in outputs)


def _step(cls, parts: list[torch.Tensor]) -> dict:
    """Forward and backward of ``parts`` (the images of one process), the loss summed."""
    norm = _norm(cls).train()
    inputs = [p.clone().requires_grad_(True) for p in parts]
    outputs = [norm(x) for x in inputs]
    _loss(outputs).backward()
    return {
        "outputs": [o.detach() for o in outputs],
        "input_grads": [x.grad for x in inputs],
        "weight_grad": norm.weight.grad,
        "running": (norm.running_mean.clone(), norm.running_var.clone()),
    }


def _one_process() -> dict:
    """Both processes' images through one ``nn.BatchNorm2d``, with the statistics of all of
    them: their pixels side by side in one tensor (the images differ in size)."""
    parts = _batch()
    norm = _norm(nn.BatchNorm2d).train()
    inputs = [p.clone().requires_grad_(True) for p in parts]
    flat = torch.cat([x.flatten(2) for x in inputs], dim=2)  # [2, C, pixels of both]
    out = norm(flat.unsqueeze(2)).squeeze(2)
    sizes = [x[0, 0].numel() for x in inputs]
    outputs = [o.view_as(x) for o, x in zip(out.split(sizes, dim=2), inputs)]
    _loss(outputs).backward()
    return {
        "outputs": [o.detach() for o in outputs],
        "input_grads": [x.grad for x in inputs],
        "weight_grad": norm.weight.grad,
        "running": (norm.running_mean.clone(), norm.running_var.clone()),
    }


def _worker(rank: int, init_file: str, results) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        torch.set_num_threads(1)
        steps = {}
        for cls in (GlobalBatchNorm2d, nn.BatchNorm2d):
            steps[cls.__name__] = step = _step(cls, [_batch()[rank]])
            dist.all_reduce(step["weight_grad"])  # what DDP adds (before averaging)
        results[rank] = steps
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_normalise_with_the_global_batch_as_one_process_does(tmp_path):
    one = _one_process()
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_worker, args=(str(tmp_path / "init"), results), nprocs=2)
        two = [results[0], results[1]]
    close = {"rtol": 1e-5, "atol": 1e-5}
    for rank, steps in enumerate(two):
        got = steps["GlobalBatchNorm2d"]
        torch.testing.assert_close(got["outputs"][0], one["outputs"][rank], **close)
        torch.testing.assert_close(got["input_grads"][0], one["input_grads"][rank], **close)
        torch.testing.assert_close(got["weight_grad"], one["weight_grad"], **close)
        for g, e in zip(got["running"], one["running"]):
            torch.testing.assert_close(g, e, **close)
        # Plain BatchNorm in each process normalises with its own images' statistics.
        plain = steps["BatchNorm2d"]
        assert not torch.allclose(plain["outputs"][0], one["outputs"][rank], atol=1e-3)


def test_in_one_process_it_is_batch_norm():
    parts = _batch()
    got, expected = _step(GlobalBatchNorm2d, parts[:1]), _step(nn.BatchNorm2d, parts[:1])
    for key in ("outputs", "input_grads"):
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0)
    assert GlobalBatchNorm2d(3).state_dict().keys() == nn.BatchNorm2d(3).state_dict().keys()

"""The pieces of multi-process runs, in one process: batch sharding, the timeout setting, and
region sampling that does not depend on the other images of the batch."""

from __future__ import annotations

import pytest
import torch

from ovdet.tv.engine import distributed as comm
from ovdet.tv.modeling.sampling import PerImageSeededSampler, sample_seeds
from ovdet.utils.errors import ConfigError


def _as_rank(monkeypatch, rank: int, world: int) -> None:
    monkeypatch.setattr(comm, "get_rank", lambda: rank)
    monkeypatch.setattr(comm, "get_world_size", lambda: world)


@pytest.mark.parametrize(
    "num_items,batch_size,world", [(10, 2, 2), (7, 3, 2), (5, 2, 3), (1, 4, 2)]
)
def test_shards_are_the_batches_of_one_process_dealt_out(monkeypatch, num_items, batch_size, world):
    one_process = [
        list(range(s, min(s + batch_size, num_items))) for s in range(0, num_items, batch_size)
    ]
    shards = []
    for rank in range(world):
        _as_rank(monkeypatch, rank, world)
        shards.append([list(r) for r in comm.shard_batches(num_items, batch_size)])
    # Every batch of one process runs, unchanged, on exactly one process; the work is balanced.
    assert sorted(b for shard in shards for b in shard) == one_process
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    assert shards[0][0] == one_process[0]


def test_gather_in_order_restores_the_order_of_one_process(monkeypatch):
    parts = [[(0, "a"), (2, "c")], [(1, "b"), (3, "d")]]
    monkeypatch.setattr(comm, "all_gather_object", lambda obj: parts)
    assert comm.gather_in_order(parts[0]) == ["a", "b", "c", "d"]


def test_without_torchrun_everything_is_one_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert comm.init_distributed("cpu") is False
    assert (comm.get_rank(), comm.get_world_size(), comm.is_main_process()) == (0, 1, True)
    assert comm.shard_batches(5, 2) == [range(0, 2), range(2, 4), range(4, 5)]
    assert comm.gather_in_order([(1, "b"), (0, "a")]) == ["a", "b"]
    values = torch.tensor([1.0, 2.0])
    assert torch.equal(comm.all_reduce_mean(values), values)
    assert comm.local_device("cuda:1") == torch.device("cuda:1")


def test_the_timeout_comes_from_the_environment_first(monkeypatch):
    monkeypatch.delenv(comm.TIMEOUT_ENV, raising=False)
    assert comm._timeout_seconds(None) == comm.DEFAULT_TIMEOUT_S
    assert comm._timeout_seconds(42) == 42
    monkeypatch.setenv(comm.TIMEOUT_ENV, "7.5")
    assert comm._timeout_seconds(42) == 7.5
    monkeypatch.setenv(comm.TIMEOUT_ENV, "soon")
    with pytest.raises(ConfigError, match="OVDET_DIST_TIMEOUT"):
        comm._timeout_seconds(42)
    monkeypatch.setenv(comm.TIMEOUT_ENV, "0")
    with pytest.raises(ConfigError, match="positive"):
        comm._timeout_seconds(None)


def test_the_default_config_names_a_timeout():
    from ovdet.config import get_default_config

    assert get_default_config().DIST_TIMEOUT > 0


def _matched(n: int, seed: int) -> torch.Tensor:
    """Tensor[n] of -1 (ignored), 0 (negative) and 1..3 (positive) matches."""
    return torch.randint(-1, 4, (n,), generator=torch.Generator().manual_seed(seed))


def test_an_image_samples_the_same_regions_whatever_shares_its_batch():
    sampler = PerImageSeededSampler(batch_size_per_image=16, positive_fraction=0.25, salt=0)
    a, b, c = _matched(200, 1), _matched(300, 2), _matched(150, 3)
    torch.manual_seed(123)  # the global RNG plays no part
    with sampler.seeded([11, 12, 13]):
        pos_abc, neg_abc = sampler([a, b, c])
    torch.manual_seed(999)
    with sampler.seeded([13, 11]):  # another batch, another order: c and a again
        pos_ca, neg_ca = sampler([c, a])
    assert torch.equal(pos_abc[0], pos_ca[1]) and torch.equal(neg_abc[0], neg_ca[1])
    assert torch.equal(pos_abc[2], pos_ca[0]) and torch.equal(neg_abc[2], neg_ca[0])
    # Balanced as torchvision's: at most 4 positives, 16 regions in all, only valid matches.
    for matched, pos, neg in zip((a, b, c), pos_abc, neg_abc):
        assert int(pos.sum()) <= 4 and int(pos.sum() + neg.sum()) == 16
        assert bool((matched[pos.bool()] >= 1).all()) and bool((matched[neg.bool()] == 0).all())


def test_another_seed_or_sampler_draws_other_regions():
    a = _matched(400, 1)
    rpn = PerImageSeededSampler(16, 0.25, salt=0)
    roi = PerImageSeededSampler(16, 0.25, salt=1)
    with rpn.seeded([5]):
        first = rpn([a])[1][0]
    with rpn.seeded([6]):
        other_seed = rpn([a])[1][0]
    with roi.seeded([5]):
        other_salt = roi([a])[1][0]
    assert not torch.equal(first, other_seed) and not torch.equal(first, other_salt)
    assert rpn.seeds is None  # only inside the block


def test_without_seeds_the_sampler_is_torchvisions():
    from torchvision.models.detection._utils import BalancedPositiveNegativeSampler

    a = _matched(300, 4)
    torch.manual_seed(0)
    expected = BalancedPositiveNegativeSampler(16, 0.25)([a])
    torch.manual_seed(0)
    got = PerImageSeededSampler(16, 0.25, salt=0)([a])
    assert all(torch.equal(x[0], y[0]) for x, y in zip(got, expected))
    assert sample_seeds([{"sample_seed": 3}, {}]) is None
    assert sample_seeds([{"sample_seed": 3}, {"sample_seed": 4}]) == [3, 4]
    sampler = PerImageSeededSampler(16, 0.25, salt=0)
    with sampler.seeded([1, 2]), pytest.raises(ValueError, match="2 seeds for 1 images"):
        sampler([a])


def test_image_detections_of_two_shards_merge_into_those_of_one_process(monkeypatch):
    from ovdet.tv.engine.inference import gather_image_detections, shard_files

    files = [f"img/{i}.jpg" for i in range(5)]  # batches of 2: [0, 1] [2, 3] [4]
    _as_rank(monkeypatch, 1, 2)
    assert shard_files(files, 2) == ["img/2.jpg", "img/3.jpg"]
    _as_rank(monkeypatch, 0, 2)
    assert shard_files(files, 2) == ["img/0.jpg", "img/1.jpg", "img/4.jpg"]

    def image(i, name):
        return {"id": i, "file_name": name, "width": 8, "height": 8}

    def det(i, name, score):
        return {"image_id": i, "file_name": name, "score": score}

    # Rank 0 read 0 and 4 (1 was unreadable); rank 1 read 2 and 3; ids count from 1 per rank.
    rank0 = (
        [det(1, "img/0.jpg", 0.9), det(1, "img/0.jpg", 0.8), det(2, "img/4.jpg", 0.7)],
        [image(1, "img/0.jpg"), image(2, "img/4.jpg")],
        ["img/1.jpg"],
    )
    rank1 = ([det(2, "img/3.jpg", 0.6)], [image(1, "img/2.jpg"), image(2, "img/3.jpg")], [])
    monkeypatch.setattr(comm, "is_distributed", lambda: True)
    monkeypatch.setattr(comm, "all_gather_object", lambda obj: [rank0, rank1])
    results, images, failed = gather_image_detections(files, *rank0)
    assert [(im["id"], im["file_name"]) for im in images] == [
        (1, "img/0.jpg"), (2, "img/2.jpg"), (3, "img/3.jpg"), (4, "img/4.jpg")
    ]  # fmt: skip
    assert [(r["image_id"], r["file_name"], r["score"]) for r in results] == [
        (1, "img/0.jpg", 0.9), (1, "img/0.jpg", 0.8), (3, "img/3.jpg", 0.6), (4, "img/4.jpg", 0.7)
    ]  # fmt: skip
    assert failed == ["img/1.jpg"]


def test_a_failed_collective_becomes_one_clear_error(monkeypatch, capsys):
    from ovdet.cli.common import cli_entry

    timeout = RuntimeError("[gloo/transport/tcp/unbound_buffer.cc:78] Timed out waiting 10000ms")
    assert comm.collective_failure(timeout) is None  # one process: nothing to blame on peers
    _as_rank(monkeypatch, 0, 2)
    monkeypatch.setattr(comm, "is_distributed", lambda: True)
    failure = comm.collective_failure(timeout)
    assert isinstance(failure, comm.DistributedError)
    assert "process 0 of 2" in str(failure) and "Timed out waiting 10000ms" in str(failure)
    assert comm.collective_failure(RuntimeError("mat1 and mat2 shapes differ")) is None

    @cli_entry
    def tool(argv=None) -> int:
        raise failure

    assert tool() == 2
    err = capsys.readouterr().err
    assert err.startswith("error: process 0 of 2: another process died") and err.count("\n") == 1

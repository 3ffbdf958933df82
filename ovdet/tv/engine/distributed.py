"""Multi-process (torchrun) plumbing shared by training, evaluation and inference.

One process per device, started by ``torchrun`` (``torch.distributed.run``), which sets
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``. Without those variables everything here is a no-op
for a single process, so the same code runs with and without torchrun.

* :func:`init_distributed` joins the process group (gloo on CPU, NCCL on CUDA) with a timeout,
  so that a dead peer ends the job with an error instead of hanging it;
* :func:`get_rank`, :func:`get_world_size`, :func:`get_local_rank`, :func:`is_main_process`;
* :func:`shard_batches` splits work into the batches one process would run and deals them out,
  so that every batch (and so every result) is the one a single process computes;
* :func:`all_gather_object`, :func:`gather_in_order` bring per-process results together;
* :func:`all_reduce_mean` averages logged values over the processes; :func:`barrier`.
"""

from __future__ import annotations

import datetime
import logging
import os
from typing import Any, Sequence, TypeVar

import torch
import torch.distributed as dist

from ovdet.utils.errors import ConfigError

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "TIMEOUT_ENV",
    "DistributedError",
    "all_gather_object",
    "all_reduce_mean",
    "barrier",
    "collective_failure",
    "gather_in_order",
    "get_local_rank",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "is_distributed",
    "is_main_process",
    "local_device",
    "shard_batches",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Seconds a collective waits for the other processes before the job fails.
DEFAULT_TIMEOUT_S = 1800
#: Environment variable overriding the timeout (seconds), e.g. for the tools without a config.
TIMEOUT_ENV = "OVDET_DIST_TIMEOUT"


class DistributedError(ConnectionError):
    """Another process of the job died or did not answer within the timeout (a lost connection:
    command-line tools print it as one ``error:`` line)."""


def is_distributed() -> bool:
    """Whether this process is one of several in an initialised process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    """The number of processes (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def get_local_rank() -> int:
    """This process's index on its machine (torchrun's ``LOCAL_RANK``; 0 without torchrun)."""
    return int(os.environ.get("LOCAL_RANK", "0")) if is_distributed() else 0


def is_main_process() -> bool:
    """Whether this process writes files, logs metrics and prints results (rank 0)."""
    return get_rank() == 0


def _timeout_seconds(timeout_s: float | None) -> float:
    value = os.environ.get(TIMEOUT_ENV)
    if value is not None:
        try:
            timeout_s = float(value)
        except ValueError:
            raise ConfigError(f"{TIMEOUT_ENV}={value!r} is not a number of seconds") from None
    timeout_s = DEFAULT_TIMEOUT_S if timeout_s is None else float(timeout_s)
    if timeout_s <= 0:
        raise ConfigError(f"the distributed timeout must be positive, got {timeout_s} s")
    return timeout_s


def init_distributed(device_type: str = "cpu", timeout_s: float | None = None) -> bool:
    """Join torchrun's process group if this process was started by torchrun with
    ``WORLD_SIZE`` > 1 (idempotent). Returns whether the job is distributed.

    Processes other than rank 0 log warnings and errors only (the ``ovdet`` logger).

    Args:
        device_type: "cpu" (gloo) or "cuda" (NCCL for tensors, gloo for Python objects).
        timeout_s: how long a collective waits for the other processes (``DIST_TIMEOUT`` in
            the config; the ``OVDET_DIST_TIMEOUT`` environment variable wins; default 1800).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not dist.is_available():
        raise ConfigError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    if dist.is_initialized():
        return is_distributed()
    timeout = datetime.timedelta(seconds=_timeout_seconds(timeout_s))
    backend = "cpu:gloo,cuda:nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend, timeout=timeout)
    if dist.get_rank() != 0:  # one process tells the story; the others only warn
        logging.getLogger("ovdet").setLevel(logging.WARNING)
    logger.info(
        "%d processes (%s; a collective waits %.0f s at most)",
        dist.get_world_size(),
        backend,
        timeout.total_seconds(),
    )
    return is_distributed()


def local_device(device: str | torch.device) -> torch.device:
    """The device this process runs on: under torchrun, CUDA is ``cuda:LOCAL_RANK``."""
    device = torch.device(device)
    if device.type == "cuda" and is_distributed():
        return torch.device("cuda", get_local_rank())
    return device


_COLLECTIVE_FAILURES = ("gloo", "NCCL", "Timed out", "Connection closed", "Connection reset")


def collective_failure(e: BaseException) -> DistributedError | None:
    """A :class:`DistributedError` explaining ``e`` if it is a collective that failed in a
    distributed job (a peer died, or did not answer within the timeout), else ``None``."""
    if not is_distributed() or not isinstance(e, RuntimeError):
        return None
    first_line = str(e).strip().splitlines()[0] if str(e).strip() else ""
    if not isinstance(e, dist.DistError) and not any(s in str(e) for s in _COLLECTIVE_FAILURES):
        return None
    return DistributedError(
        f"process {get_rank()} of {get_world_size()}: another process died or did not answer "
        f"in time ({first_line}); the job stops (resume training with --resume)"
    )


def _collective_failed(e: RuntimeError) -> DistributedError:
    return collective_failure(e) or DistributedError(f"process {get_rank()}: {e}")


def barrier() -> None:
    """Wait for every process (no-op for one process)."""
    if not is_distributed():
        return
    try:
        dist.barrier()
    except RuntimeError as e:  # gloo and NCCL failures (DistBackendError, ...)
        raise _collective_failed(e) from e


def all_gather_object(obj: T) -> list[T]:
    """Every process's ``obj`` (picklable), in rank order, on every process."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * get_world_size()
    try:
        dist.all_gather_object(out, obj)
    except RuntimeError as e:  # gloo and NCCL failures (DistBackendError, ...)
        raise _collective_failed(e) from e
    return out


def all_reduce_mean(values: torch.Tensor) -> torch.Tensor:
    """The mean of ``values`` (Tensor[K]) over the processes, on every process."""
    if not is_distributed():
        return values
    values = values.clone()
    try:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    except RuntimeError as e:  # gloo and NCCL failures (DistBackendError, ...)
        raise _collective_failed(e) from e
    return values / get_world_size()


def shard_batches(num_items: int, batch_size: int) -> list[range]:
    """This process's share of ``num_items`` items processed ``batch_size`` at a time.

    The items are cut into the batches a single process would run (``[0, b)``, ``[b, 2b)``,
    ...), and batch ``j`` goes to process ``j % world_size``: each batch, and so each result
    (padding included), is the same as in one process. Returns the ranges of item indices.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    rank, world = get_rank(), get_world_size()
    starts = range(0, num_items, batch_size)
    return [range(s, min(s + batch_size, num_items)) for s in starts[rank::world]]


def gather_in_order(per_item: Sequence[tuple[int, T]]) -> list[T]:
    """Every process's ``(item index, value)`` pairs -> the values of all processes in item
    order, on every process (the order one process would have produced)."""
    pairs = [pair for part in all_gather_object(list(per_item)) for pair in part]
    pairs.sort(key=lambda pair: pair[0])
    return [value for _, value in pairs]

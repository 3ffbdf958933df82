"""Run a graph of tasks, each once the tasks it needs are done, on parallel worker processes.

The synthetic benchmark trains several small detectors whose dependencies form a graph (the
closed-set baseline needs no CLIP; ViLD needs the pre-trained CLIP; the fine-tuned detectors
need the ones they start from). On a CPU, two one-thread trainings side by side finish sooner
than the same two one after the other on two threads: a small detector's step does not keep
two threads busy (docs/benchmark.md#parallel-stages).

Workers are ``spawn``-ed processes (safe with torch and its thread pools). Their log records are
relayed to the parent's handlers (console and ``log.txt``), each prefixed with its task's name;
a task's return value and its exceptions come back to the caller. When a task fails, no new
task starts, the running ones finish (their outputs are kept), and the first failure is raised.
On Linux the workers end with the process that started them: one killed outright (``kill``,
SIGTERM, which runs no clean-up) leaves no worker training on. A worker's own SIGTERM raises
``SystemExit`` in it, so its clean-up runs (a task's subprocess, such as the CLIP trainer, is
ended with it).
"""

from __future__ import annotations

import ctypes
import logging
import logging.handlers
import multiprocessing
import os
import signal
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from ovdet.utils.allocator import keep_freed_memory
from ovdet.utils.errors import ConfigError
from ovdet.utils.termination import Terminated, raise_on_sigterm

__all__ = ["Task", "run_task_graph", "topological_order"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Task:
    """One unit of work.

    Attributes:
        name: unique within the graph; it prefixes the task's log lines under workers.
        fn: a module-level function (picklable), called as ``fn(*args)``.
        args: its arguments (picklable).
        after: names of the tasks that must finish first.
    """

    name: str
    fn: Callable[..., Any]
    args: tuple = ()
    after: tuple[str, ...] = ()


def topological_order(tasks: Sequence[Task]) -> list[Task]:
    """The tasks in an order where each comes after the tasks it needs; among the tasks that
    are ready, the given order. Raises :class:`~ovdet.utils.errors.ConfigError` on a duplicate
    name, an
    unknown dependency or a cycle."""
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise ConfigError(f"task names must be unique, got {names}")
    for t in tasks:
        unknown = set(t.after) - set(names)
        if unknown:
            raise ConfigError(f"task {t.name!r} needs unknown tasks {sorted(unknown)}")
    order: list[Task] = []
    done: set[str] = set()
    pending = list(tasks)
    while pending:
        ready = [t for t in pending if set(t.after) <= done]
        if not ready:
            raise ConfigError(f"tasks {[t.name for t in pending]} depend on each other in a cycle")
        order.append(ready[0])
        done.add(ready[0].name)
        pending.remove(ready[0])
    return order


class _PrefixFilter(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = f"[{self.prefix}] {record.msg}"
        return True


_worker_queue_handler: logging.Handler | None = None


# prctl(2) option: the signal this process gets when its parent ends.
_PR_SET_PDEATHSIG = 1


def _end_with_parent(parent: int) -> None:
    """Linux: SIGTERM this process when the one that started it (pid ``parent``) ends, however
    it ends. Elsewhere (or where prctl cannot be reached) nothing is set."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        failed = libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0
    except (OSError, AttributeError):
        failed = True
    if failed:
        logger.debug("workers will not end with their parent: prctl(PR_SET_PDEATHSIG) failed")
    elif os.getppid() != parent:  # the parent ended before the signal was set
        os.kill(os.getpid(), signal.SIGTERM)


def _init_worker(queue, levels: dict[str, int], threads: int, parent: int) -> None:
    """Worker set-up: ends with its parent (pid ``parent``; its SIGTERM runs the worker's
    clean-up, :func:`~ovdet.utils.termination.raise_on_sigterm`), ``threads`` torch
    threads (also for its subprocesses, by ``OMP_NUM_THREADS``), freed memory kept for reuse
    (:mod:`ovdet.utils.allocator`; a spawned process does not inherit it) and log records sent
    to the parent through ``queue``."""
    global _worker_queue_handler
    raise_on_sigterm()  # the running task's clean-up runs, then _run_in_worker ends the worker
    _end_with_parent(parent)
    keep_freed_memory()
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    _worker_queue_handler = logging.handlers.QueueHandler(queue)
    root.addHandler(_worker_queue_handler)
    for name, level in levels.items():
        logging.getLogger(name or None).setLevel(level)


def _run_in_worker(name: str, fn: Callable[..., Any], args: tuple) -> Any:
    prefix = _PrefixFilter(name)
    if _worker_queue_handler is not None:
        _worker_queue_handler.addFilter(prefix)
    try:
        return fn(*args)
    except Terminated as e:  # the task has cleaned up: end the worker, as SIGTERM would
        os._exit(int(e.code or 1))
    finally:
        if _worker_queue_handler is not None:
            _worker_queue_handler.removeFilter(prefix)


class _Relay(logging.Handler):
    """Hands a worker's record to the parent's logger of the same name (its handlers, its
    propagation)."""

    def emit(self, record: logging.LogRecord) -> None:
        logging.getLogger(record.name).handle(record)


def _logger_levels() -> dict[str, int]:
    """The levels set on the parent's loggers, to apply in the workers."""
    levels = {"": logging.getLogger().level}
    for name, item in logging.Logger.manager.loggerDict.items():
        if isinstance(item, logging.Logger) and item.level != logging.NOTSET:
            levels[name] = item.level
    return levels


def run_task_graph(tasks: Sequence[Task], workers: int = 1, threads: int = 1) -> dict[str, Any]:
    """Run every task after the tasks it needs, ``workers`` at a time.

    Args:
        tasks: the graph; among ready tasks, earlier ones start first.
        workers: parallel worker processes; 1 runs the tasks one by one in this process (with
            its own threads and logging).
        threads: torch threads of each worker process (unused with one worker).

    Returns:
        ``{name: fn's return value}``.

    Raises:
        The first failed task's exception, once the tasks running beside it have finished.
    """
    order = topological_order(tasks)
    if workers < 1 or threads < 1:
        raise ConfigError(f"need workers >= 1 and threads >= 1, got {workers} and {threads}")
    if workers == 1:
        return {task.name: task.fn(*task.args) for task in order}

    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    listener = logging.handlers.QueueListener(queue, _Relay())
    listener.start()
    results: dict[str, Any] = {}
    running: dict[Future, Task] = {}
    waiting = list(order)
    failure: BaseException | None = None
    start = time.perf_counter()
    try:
        with ProcessPoolExecutor(
            workers, mp_context=ctx, initializer=_init_worker,
            initargs=(queue, _logger_levels(), threads, os.getpid()),
        ) as pool:  # fmt: skip
            while waiting or running:
                if failure is None:
                    for task in [t for t in waiting if set(t.after) <= results.keys()]:
                        if len(running) >= workers:
                            break
                        logger.info(
                            "starting %s (running: %s)", task.name,
                            ", ".join([t.name for t in running.values()] + [task.name]),
                        )  # fmt: skip
                        running[pool.submit(_run_in_worker, task.name, task.fn, task.args)] = task
                        waiting.remove(task)
                if not running:
                    break  # a failure left tasks that will not start
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    task = running.pop(future)
                    error = future.exception()
                    if error is None:
                        results[task.name] = future.result()
                        logger.info(
                            "%s done (%.0f s into the run)", task.name, time.perf_counter() - start
                        )
                    elif failure is None:
                        failure = error
                        logger.error(
                            "%s failed: %s; waiting for %s to finish; not starting %s",
                            task.name, error, [t.name for t in running.values()] or "none",
                            [t.name for t in waiting] or "none",
                        )  # fmt: skip
    finally:
        listener.stop()
        queue.close()
    if failure is not None:
        raise failure
    return results

"""Stages 1-3 as a task graph on worker processes (:mod:`ovdet.utils.task_graph`).

One task pre-trains the CLIP and measures it; one task per detector the size trains trains it
and then evaluates its rows, after the CLIP where it uses one (the closed-set baseline does
not) and after the detector it starts from. Among the ready tasks, the order of
:meth:`BenchmarkSize.detectors <ovdet.ovbench.plan.BenchmarkSize.detectors>`.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from ovdet.ovbench.data import BenchmarkData
from ovdet.ovbench.plan import METHODS, BenchmarkSize
from ovdet.ovbench.stages import (
    clip_spec,
    clip_zero_shot,
    detector_config,
    evaluate,
    pretrain_clip_stage,
    train_detector,
)

__all__ = ["detector_tasks", "stage_tasks", "stage_workers"]

logger = logging.getLogger(__name__)


def stage_workers(
    device: str, workers: int | None = None, threads: int | None = None
) -> tuple[int, int]:
    """``(workers, torch threads per worker)`` of stages 1-3, defaults filled in: on a CPU with
    2 or more cores, two trainings side by side; on a GPU, one at a time; the cores shared out
    between the workers."""
    cores = os.cpu_count() or 1
    if workers is None:
        workers = 1 if device.startswith("cuda") or cores < 2 else 2
    return workers, threads if threads is not None else max(1, cores // workers)


def _detector_stage(out, data, clip, detector, size, seed, device, progress, opts) -> dict:
    """Stages 2 and 3 of one detector: train it, then evaluate the rows that use it.
    Returns ``{"training": training seconds, "evaluation": evaluation seconds}``."""
    train = train_detector(out, data, clip, detector, size, seed, device, progress, opts)
    t = time.perf_counter()
    evaluate(out, data, device, progress, [m for m in METHODS if m.detector == detector.name])
    return {"training": train, "evaluation": time.perf_counter() - t}


def _clip_stage(out, data, size, seed, device, progress, clip) -> dict:
    """Stage 1: the CLIP (pre-trained unless ``clip`` is given) and its zero-shot accuracy.
    Returns ``{"clip": spec, "zero_shot": accuracy, "seconds": seconds}``."""
    from ovdet.data.splits import load_split

    t = time.perf_counter()
    if clip is None:
        clip = pretrain_clip_stage(out, data, size, seed, device)
    zero_shot = clip_zero_shot(out, data, clip, load_split(data.split_spec), progress)
    return {"clip": clip, "zero_shot": zero_shot, "seconds": time.perf_counter() - t}


def _log_left_out(left_out: dict[str, list[str]]) -> None:
    """One line per reason a detector is left out, naming every detector left out for it."""
    for reason, names in left_out.items():
        logger.info("stage 2: leaving out %s (%s)", ", ".join(names), reason)


def stage_tasks(
    out: Path,
    data: BenchmarkData,
    clip: str | None,
    size: BenchmarkSize,
    seed: int,
    device: str,
    progress: bool,
    opts: tuple[str, ...],
) -> list:
    """The tasks of stages 1-3 (:class:`~ovdet.utils.task_graph.Task`): the CLIP (``clip``, or
    pre-trained where it is ``None``) and each detector the size trains
    (:meth:`BenchmarkSize.trains`) and the dataset has data for (:func:`detector_tasks`)."""
    from ovdet.utils.task_graph import Task

    tasks = [Task("clip", _clip_stage, (out, data, size, seed, device, progress, clip))]
    spec = clip or clip_spec(out)
    return tasks + detector_tasks(out, data, spec, size, seed, device, progress, opts)


def detector_tasks(
    out: Path,
    data: BenchmarkData,
    clip: str,
    size: BenchmarkSize,
    seed: int,
    device: str,
    progress: bool,
    opts: tuple[str, ...],
    prefix: str = "",
) -> list:
    """The tasks of stages 2-3: each detector the size trains and the dataset has data for,
    trained with ``seed`` in ``out/NAME`` and evaluated, after the task "clip" where it uses
    CLIP (the spec ``clip``) and after the detector it starts from.

    Args:
        prefix: put before each task's name and its detector's (e.g. ``"seed_1/"`` for the
            detectors of another seed on the same CLIP); the "clip" task keeps its name.
    """
    from ovdet.tv.modeling.build import is_open_vocabulary
    from ovdet.utils.task_graph import Task

    tasks = []
    left_out: dict[str, list[str]] = {}
    for detector in size.detectors():
        if not size.trains(detector):
            reason = (
                "0 iterations at this size"
                if size.iters(detector.name) <= 0
                else "the detector they start from is left out"
            )
            left_out.setdefault(reason, []).append(prefix + detector.name)
            continue
        if detector.weak and not data.has(detector.weak):
            logger.info(
                "stage 2: skipping %s: the dataset has no %s (%s)",
                prefix + detector.name, detector.weak, data.path(detector.weak),
            )  # fmt: skip
            continue
        cfg = detector_config(out, data, clip, detector, size, seed, device, opts)
        after = (prefix + detector.init_from,) if detector.init_from else ()
        if is_open_vocabulary(cfg):
            after += ("clip",)
        args = (out, data, clip, detector, size, seed, device, progress, opts)
        tasks.append(Task(prefix + detector.name, _detector_stage, args, after))
    _log_left_out(left_out)
    return tasks

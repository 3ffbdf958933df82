"""The open-vocabulary benchmark, end to end, with its baselines, on any COCO-format dataset.

Stages, each written under one output folder and skipped when a previous run finished it (so an
interrupted run loses nothing; training resumes from its last checkpoint):

0. ``data/``: the synthetic colour x shape dataset (:mod:`ovdet.data.synthetic`), unless the
   run is given a dataset (:class:`~ovdet.ovbench.data.BenchmarkData`: COCO train/val files
   and images, a split file, a captions CSV).
1. ``clip/``: a tiny CLIP pre-trained on the captions by ``open_clip_train``
   (:func:`ovdet.clip.pretrain.pretrain_clip`), exported as an open_clip folder (or a given
   CLIP); its zero-shot accuracy (base / novel) on held-out labelled crops, or on the
   validation boxes when the dataset has no labelled crops.
2. one folder per entry of :data:`~ovdet.ovbench.plan.DETECTORS` (``closed_set/``,
   ``vild_text/``, ``vild/``): detectors trained on the base boxes only, with the same
   backbone, data, schedule and seed; then, where the size gives them iterations (the default
   size; ``--small`` leaves them out unless given ``--fine-tune-iters``), the weak-supervision
   detectors, which fine-tune ``vild_text`` / ``vild`` on steps that mix box images and
   image-labelled images (``vild_text_labels/``, ``vild_text_captions/``, ``vild_weak/``;
   skipped where the dataset has no image-labelled data), and their controls, ``vild_text``
   and ``vild`` fine-tuned as long on box images only (``vild_text_longer/``,
   ``vild_longer/``). Stages 1-3 run as a task graph on worker processes
   (:mod:`ovdet.ovbench.schedule`), each detector's evaluation right after its training.
3. ``eval/`` and ``results.json`` / ``results.md``: base / novel / all AP50 on the validation
   images in the generalized setting (every category in the vocabulary) of each row of
   :data:`~ovdet.ovbench.plan.METHODS`, and the target checks
   (:func:`~ovdet.ovbench.targets.check_targets`).
   With ``--masks`` (:attr:`~ovdet.ovbench.plan.BenchmarkSize.masks`), also the mask detector
   (``vild_masks/``, :data:`~ovdet.ovbench.plan.MASK_DETECTOR`): its box and mask AP50 and its
   inference time with masks against boxes only (``eval/vild_masks.json``,
   :mod:`~ovdet.ovbench.masks`), after the task graph, in this process.
4. ``pictures/``: the best open-vocabulary row with every class name on the validation
   images: how many novel objects it found and how many of its novel-named detections were
   right, and pictures with the novel classes marked.

The package's modules, one concern each: :mod:`~ovdet.ovbench.plan` (sizes, detectors, rows),
:mod:`~ovdet.ovbench.stages`, :mod:`~ovdet.ovbench.schedule` (the task graph),
:mod:`~ovdet.ovbench.targets`, :mod:`~ovdet.ovbench.masks` (the mask rows),
:mod:`~ovdet.ovbench.report` (the text of the results),
:mod:`~ovdet.ovbench.resume` (which finished stages a run may reuse) and
:mod:`~ovdet.ovbench.seeds` (several detector seeds: means, standard errors, gains).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from ovdet.ovbench.data import BenchmarkData
from ovdet.ovbench.exemplars import (
    evaluate_exemplar_rows,
    exemplar_targets,
    write_exemplar_scenes,
)
from ovdet.ovbench.fvlm import fvlm_targets, time_fvlm
from ovdet.ovbench.masks import (
    check_mask_annotations,
    evaluate_masks,
    mask_prediction,
    mask_targets,
)
from ovdet.ovbench.plan import METHODS, SIZES, BenchmarkSize, run_opts
from ovdet.ovbench.report import format_results
from ovdet.ovbench.resume import check_same_inputs, run_inputs
from ovdet.ovbench.schedule import detector_tasks, stage_tasks, stage_workers
from ovdet.ovbench.seeds import aggregate_metrics, paired_difference, seed_dir, seed_list
from ovdet.ovbench.stages import clip_spec, draw_pictures, evaluate, make_data
from ovdet.ovbench.targets import (
    best_box_trained_method,
    best_open_vocabulary_method,
    check_targets,
)
from ovdet.utils.errors import ConfigError
from ovdet.utils.versions import package_versions

__all__ = ["run_synthetic_benchmark"]

logger = logging.getLogger(__name__)


def run_synthetic_benchmark(
    output_dir: str | Path,
    size: str | BenchmarkSize = "default",
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
    data: BenchmarkData | None = None,
    clip: str | None = None,
    detector_opts: tuple[str, ...] = (),
    workers: int | None = None,
    threads: int | None = None,
    seeds: int = 1,
) -> dict:
    """Run every stage (see the module docstring); finished stages are reused.

    Args:
        output_dir: where everything is written; the configs and checkpoints written there
            name it by its absolute path, so they work from any folder.
        size: a key of :data:`~ovdet.ovbench.plan.SIZES` ("small": about 3 minutes on 2 CPU
            cores, the detectors trained from scratch; "default": about 18 minutes, every row)
            or a :class:`~ovdet.ovbench.plan.BenchmarkSize`.
        seed: seed of the data, CLIP pre-training and (first) detector training.
        device: "cpu" or "cuda".
        progress: progress bars.
        data: the dataset; ``None`` generates the synthetic one in ``output_dir/data``.
        clip: a CLIP spec to use instead of pre-training one (stage 1 is skipped).
        detector_opts: config ``KEY VALUE`` pairs for every detector (after the size's).
        workers: stages run side by side in worker processes (:mod:`ovdet.utils.task_graph`);
            1 runs them one by one in this process, with progress bars. Default
            (:func:`~ovdet.ovbench.schedule.stage_workers`): 2 on a CPU with 2 or more cores, 1
            on a GPU.
        threads: torch threads of each worker process (default: the cores shared out).
        seeds: train and evaluate the detectors with seeds ``seed, seed + 1, ...``, all on the
            data and CLIP of ``seed`` (:mod:`ovdet.ovbench.seeds`); the first seed's in
            ``output_dir`` (a finished one-seed run there is reused), the others' in
            ``output_dir/seed_S``. Metrics and targets are then on the means over the seeds.

    Returns:
        The report also written to ``results.json``: ``metrics`` per method (base / novel /
        all AP and AP50; the means over the seeds), ``clip_zero_shot`` accuracy, ``targets``
        (see :func:`~ovdet.ovbench.targets.check_targets`, judged on ``metrics``),
        ``novel_findings`` (:func:`ovdet.ovbench.pictures.novel_detection_summary`, of the
        first seed's detector), ``seconds`` per stage, ``size``, ``seed`` and ``seeds``; with
        ``masks`` in the size, ``masks`` (:func:`~ovdet.ovbench.masks.evaluate_masks`: box and
        mask AP of the mask detector, means over the seeds, and the first seed's inference
        times; its target joins ``targets``); with
        more than one seed also ``standard_errors`` (as ``metrics``), ``per_seed`` (each
        seed's ``metrics``) and ``gains`` (each row with a control: its novel AP50 minus the
        control's, seed by seed, with mean and standard error).
    """
    from ovdet.data.splits import load_split
    from ovdet.utils.io import atomic_write_json, check_writable_dir
    from ovdet.utils.task_graph import run_task_graph

    if isinstance(size, str):
        if size not in SIZES:
            raise ConfigError(f"size must be one of {sorted(SIZES)}, got {size!r}")
        size_name, spec = size, SIZES[size]
    else:
        size_name, spec = "custom", size
    if len(detector_opts) % 2:
        raise ConfigError(f"detector overrides must be KEY VALUE pairs, got {list(detector_opts)}")
    if seeds < 1:
        raise ConfigError(f"seeds must be at least 1, got {seeds}")
    out = Path(os.path.abspath(check_writable_dir(output_dir)))
    if data is not None:
        data = replace(data, root=Path(data.root).resolve())
        data.check()
        if spec.masks:
            check_mask_annotations(data)
    all_seeds = seed_list(seed, seeds)
    for s in all_seeds:
        seed_dir(out, s, seed).mkdir(exist_ok=True)
        check_same_inputs(seed_dir(out, s, seed), run_inputs(data, spec, s, clip, detector_opts))
    start = time.perf_counter()
    seconds: dict[str, float] = {}

    t = time.perf_counter()
    generated = data is None
    if generated:
        data = make_data(out, spec, seed, progress)
    seconds["data"] = time.perf_counter() - t
    split = load_split(data.split_spec)
    logger.info(
        "dataset %s: %d base and %d novel classes; training on %s",
        data.root, len(split.base), len(split.novel), data.path("train_json"),
    )  # fmt: skip
    workers, threads = stage_workers(device, workers, threads)
    opts = run_opts(spec, generated, detector_opts)
    bars = progress and workers == 1
    tasks = stage_tasks(out, data, clip, spec, seed, device, bars, opts)
    for s in all_seeds[1:]:
        where = seed_dir(out, s, seed)
        tasks += detector_tasks(
            where, data, clip or clip_spec(out), spec, s, device, bars, opts, f"{where.name}/"
        )  # fmt: skip
    if workers > 1:
        logger.info(
            "stages 1-3: %d tasks on %d worker processes (torch threads per worker: %d)",
            len(tasks), workers, threads,
        )  # fmt: skip
    results = run_task_graph(tasks, workers, threads)
    clip, zero_shot = results["clip"]["clip"], results["clip"]["zero_shot"]
    seconds["clip"] = results["clip"]["seconds"]
    seconds["evaluation"] = 0.0
    for name, result in results.items():
        if name != "clip":
            seconds[name] = result["training"]
            seconds["evaluation"] += result["evaluation"]
    trained = {d.name for d in spec.detectors() if spec.trains(d)}
    rows = [m for m in METHODS if m.detector in trained]
    # the cached evaluations, in table order: this run's rows only
    per_seed = [evaluate(seed_dir(out, s, seed), data, device, progress, rows) for s in all_seeds]
    metrics, errors = aggregate_metrics(per_seed) if seeds > 1 else (per_seed[0], None)
    masks = None
    if spec.masks:
        t = time.perf_counter()
        masks = _mask_rows(out, all_seeds, seed, data, mask_prediction(metrics), device, progress)
        seconds["masks evaluation"] = time.perf_counter() - t
    t = time.perf_counter()
    best = best_open_vocabulary_method(metrics)
    exemplar_base = best_box_trained_method(metrics)
    if generated:  # the exemplar rows, on the best box-trained detector (ovdet.ovbench.exemplars)
        ann = write_exemplar_scenes(out, spec, seed, progress)
        for s, seed_metrics in zip(all_seeds, per_seed):  # each seed's detector
            where = seed_dir(out, s, seed)
            seed_metrics.update(
                evaluate_exemplar_rows(where, ann, data, split, exemplar_base, device, progress)
            )
        metrics, errors = aggregate_metrics(per_seed) if seeds > 1 else (per_seed[0], None)
    fvlm_time = time_fvlm(out, data, device) if spec.fvlm else None
    findings = draw_pictures(out, data, split, best, spec, device, progress)
    seconds["pictures"] = time.perf_counter() - t
    seconds["total (this run)"] = time.perf_counter() - start

    report = {
        "size": size_name,
        "size_settings": asdict(spec),
        "seed": seed,
        "seeds": all_seeds,
        "device": device,
        "workers": workers,
        "torch_threads": threads if workers > 1 else torch.get_num_threads(),
        "versions": package_versions(),
        "data": data.describe(),
        "clip": clip,
        "clip_zero_shot": zero_shot,
        "metrics": metrics,
        "targets": check_targets(metrics, spec.data.get("novel_captions", True))
        + exemplar_targets(metrics, exemplar_base)
        + mask_targets(masks)
        + fvlm_targets(metrics, fvlm_time),
        "novel_findings": findings,
        "seconds": seconds,
        "pictures": str(out / "pictures"),
    }
    if masks:
        report["masks"] = masks
    if fvlm_time:
        report["fvlm_time"] = fvlm_time
    if len(all_seeds) > 1:
        report["standard_errors"] = errors
        report["per_seed"] = {str(s): m for s, m in zip(all_seeds, per_seed)}
        report["gains"] = {
            m.key: {"control": m.control, **paired_difference(per_seed, m.key, m.control)}
            for m in METHODS
            if m.control and m.key in metrics and m.control in metrics
        }
    atomic_write_json(report, out / "results.json")
    (out / "results.md").write_text(format_results(report) + "\n", encoding="utf-8")
    return report


def _mask_rows(out: Path, all_seeds, seed: int, data, row, device, progress) -> dict | None:
    """The mask rows (:func:`~ovdet.ovbench.masks.evaluate_masks`) of every seed's mask
    detector predicting as ``row``: box and mask AP as the means over the seeds (with
    ``standard_errors`` for more than one), the inference times of the first seed's."""
    per_seed = [  # timed on the first seed only: the report gives its times
        evaluate_masks(seed_dir(out, s, seed), data, row, device, progress, timed=s == seed)
        for s in all_seeds
    ]
    if any(m is None for m in per_seed):
        return None
    first = per_seed[0]
    if len(per_seed) == 1:
        return first
    means, errors = aggregate_metrics([{k: m[k] for k in ("box", "segm")} for m in per_seed])
    return {**first, **means, "standard_errors": errors}

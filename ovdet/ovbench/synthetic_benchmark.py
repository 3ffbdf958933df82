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
2. one folder per entry of :data:`DETECTORS` (``closed_set/``, ``vild_text/``, ``vild/``):
   detectors trained on the base boxes only, with the same backbone, data, schedule and seed;
   then, where the size gives them iterations (the default size; ``--small`` leaves them out
   unless given ``--fine-tune-iters``), the weak-supervision detectors, which fine-tune
   ``vild_text`` / ``vild`` on steps that mix box images and image-labelled images
   (``vild_text_labels/``, ``vild_text_captions/``, ``vild_weak/``; skipped where the dataset
   has no image-labelled data), and their controls, ``vild_text`` and ``vild`` fine-tuned as
   long on box images only (``vild_text_longer/``, ``vild_longer/``). Stages 1-3 run as a task
   graph on worker processes (:func:`stage_workers`), each detector's evaluation right after its
   training.
3. ``eval/`` and ``results.json`` / ``results.md``: base / novel / all AP50 on the validation
   images in the generalized setting (every category in the vocabulary) of each entry of
   :data:`METHODS`, and the target checks (:func:`check_targets`).
4. ``pictures/``: the best open-vocabulary method with every class name on the validation
   images: how many novel objects it found and how many of its novel-named detections were
   right, and pictures with the novel classes marked.

New detectors and methods are entries of :data:`DETECTORS` and :data:`METHODS`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from ovdet.config.catalog import get_config_file
from ovdet.ovbench.data import BenchmarkData
from ovdet.utils.errors import ConfigError
from ovdet.utils.versions import package_versions

__all__ = [
    "BenchmarkSize",
    "DETECTORS",
    "Detector",
    "METHODS",
    "Method",
    "SIZES",
    "check_targets",
    "format_results",
    "run_synthetic_benchmark",
    "scene_input_sizes",
]

logger = logging.getLogger(__name__)

#: Least score of the detections evaluated (AP ranks every detection up to the per-image cap;
#: a high threshold would hide what a model ranks right but scores low, e.g. early in training).
EVAL_SCORE_THRESH = 0.001
#: A baseline under this AP50 has not learned: comparisons against it are not applicable.
MIN_LEARNED_AP50 = 0.05


@dataclass(frozen=True)
class BenchmarkSize:
    """How much data and compute one benchmark run uses.

    Attributes:
        data: keyword arguments of :func:`ovdet.data.synthetic.generate_synthetic_dataset`
            (unused with a given dataset).
        clip_epochs, clip_batch_size, clip_lr, clip_warmup: CLIP pre-training.
        detector_iters: training iterations of each detector.
        detector_iters_overrides: ``(name, iterations)`` of detectors trained longer or shorter
            than ``detector_iters``; 0 leaves a detector out, with the detectors that start
            from it and their rows.
        detector_overrides: more config ``KEY VALUE`` pairs for every detector (on the
            synthetic data, after :func:`scene_input_sizes` of ``data["image_size"]``).
        picture_thresh: least score of the detections counted and drawn at the end; ``None``:
            the threshold with the best F1 on the validation images
            (:func:`ovdet.ovbench.pictures.best_f1_threshold`).
        num_pictures: validation images drawn at the end.
    """

    data: dict
    clip_epochs: int
    clip_batch_size: int
    clip_lr: float
    detector_iters: int
    detector_overrides: tuple[str, ...] = ()
    detector_iters_overrides: tuple[tuple[str, int], ...] = ()
    clip_warmup: int = 50
    picture_thresh: float | None = None
    num_pictures: int = 6

    def iters(self, detector: str) -> int:
        """Training iterations of the detector named ``detector`` (0: left out)."""
        return dict(self.detector_iters_overrides).get(detector, self.detector_iters)

    def trains(self, detector: Detector) -> bool:
        """Whether ``detector`` trains at this size: it has iterations, and so does the
        detector it starts from."""
        if self.iters(detector.name) <= 0:
            return False
        start = next((d for d in DETECTORS if d.name == detector.init_from), None)
        return start is None or self.trains(start)

    def with_iters(self, iters: int) -> BenchmarkSize:
        """This size with ``iters`` iterations for every detector trained from scratch (rows
        (a)-(e)); the detectors that fine-tune one keep this size's."""
        kept = tuple((d, n) for d, n in self.detector_iters_overrides if d in _FINE_TUNED)
        return replace(self, detector_iters=iters, detector_iters_overrides=kept)

    def with_fine_tuning(self, iters: int) -> BenchmarkSize:
        """This size with ``iters`` iterations for every detector that fine-tunes a box-trained
        one (``Detector.init_from``: the rows (c'), (e') and (f)-(h)); 0 leaves them out."""
        others = tuple((d, n) for d, n in self.detector_iters_overrides if d not in _FINE_TUNED)
        return replace(self, detector_iters_overrides=(*others, *_weak_fine_tuning(iters)))


#: The small size's detector settings (see SIZES), on batches of 8 (synthetic_benchmark.yaml).
_SMALL_DETECTOR_OVERRIDES = (
    # few objects per image: the RoIs (64 per image, synthetic_benchmark.yaml) from 100 proposals
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "300",
    "MODEL.RPN.POST_NMS_TOPK_TRAIN", "100",
)  # fmt: skip


def scene_input_sizes(image_size: int) -> tuple[str, ...]:
    """Config ``KEY VALUE`` pairs that train and test the detectors at the size of the synthetic
    scenes, as ``tiny.yaml`` does for its 128 px: a shorter side of 7/8, 1 or 9/8 of
    ``image_size`` in training (box and image-labelled images), ``image_size`` at test, the
    longer side at most 1.5 x it."""
    train = f"({image_size * 7 // 8}, {image_size}, {image_size * 9 // 8})"
    longest = str(image_size * 3 // 2)
    return (
        "INPUT.MIN_SIZE_TRAIN", train, "INPUT.MAX_SIZE_TRAIN", longest,
        "INPUT.MIN_SIZE_TEST", str(image_size), "INPUT.MAX_SIZE_TEST", longest,
        "INPUT.WEAK_MIN_SIZE_TRAIN", train, "INPUT.WEAK_MAX_SIZE_TRAIN", longest,
    )  # fmt: skip


@dataclass(frozen=True)
class Detector:
    """A detector the benchmark trains.

    Attributes:
        name: its folder.
        overrides: its config ``KEY VALUE`` pairs.
        weak: the field of :class:`~ovdet.ovbench.data.BenchmarkData` naming the
            image-labelled data it also trains on (``DATASETS.WEAK_TRAIN``), or "" for box data
            only. Without that file, the detector and its rows are skipped.
        init_from: the detector whose final weights it starts from (``MODEL.WEIGHTS``), or ""
            for a backbone trained from scratch. The weak-supervision detectors fine-tune the
            box-trained ones on mixed batches, as Detic fine-tunes its box-supervised model.
    """

    name: str
    overrides: tuple[str, ...]
    weak: str = ""
    init_from: str = ""


@dataclass(frozen=True)
class Method:
    """A row of the results table.

    Attributes:
        key: the row's key in ``results.json`` (and ``eval/KEY.json``).
        description: the row's label.
        detector: the :class:`Detector` whose checkpoint it uses.
        prediction: how the checkpoint predicts, one of
            :data:`ovdet.ovbench.predict.PREDICTION_METHODS`.
        open_vocabulary: an ovdet method (a candidate for the best novel AP50 and the pictures).
        control: the key of the row trained as long on box images only, against which this
            row's gain is measured ("" for none): the weak-supervision rows' controls.
    """

    key: str
    description: str
    detector: str
    prediction: str = "detector"
    open_vocabulary: bool = True
    control: str = ""


#: Detectors trained by the benchmark. Among the detectors ready to train, the task graph
#: starts them in this order, so the longest chains go first (the makespan of two workers, from
#: the measured task times; BENCHMARKS.md, section 9): ViLD before ViLD-text (ViLD is longer and
#: two fine-tuned detectors wait for it), then the fine-tuned ones longest first.
DETECTORS: list[Detector] = [
    Detector("closed_set", ("MODEL.META_ARCHITECTURE", "FasterRCNN")),
    Detector("vild", ("MODEL.OVDET.DISTILL.MODE", "online")),
    Detector("vild_text", ("MODEL.OVDET.DISTILL.MODE", "none")),
    # weak supervision (Detic): fine-tuned on image-labelled images mixed with the box images;
    # (h), the best combination: the caption loss cost (g) novel AP50 (BENCHMARKS.md, section 8)
    Detector(
        "vild_weak", ("MODEL.OVDET.DISTILL.MODE", "online"), weak="weak_labels", init_from="vild"
    ),
    Detector(
        "vild_text_captions",
        ("MODEL.OVDET.DISTILL.MODE", "none", "MODEL.OVDET.WEAK.CAPTION_LOSS", "True"),
        weak="weak_captions",
        init_from="vild_text",
    ),
    Detector(
        "vild_text_labels",
        ("MODEL.OVDET.DISTILL.MODE", "none"),
        weak="weak_labels",
        init_from="vild_text",
    ),
    # the controls of the weak-supervision rows: (d) and (c) fine-tuned as long, on box images only
    Detector("vild_longer", ("MODEL.OVDET.DISTILL.MODE", "online"), init_from="vild"),
    Detector("vild_text_longer", ("MODEL.OVDET.DISTILL.MODE", "none"), init_from="vild_text"),
]


def _weak_fine_tuning(iters: int) -> tuple[tuple[str, int], ...]:
    """Iterations of the detectors that fine-tune box-trained ones (``init_from``): the
    weak-supervision detectors and their control."""
    return tuple((d.name, iters) for d in DETECTORS if d.init_from)


#: The detectors that fine-tune a box-trained one.
_FINE_TUNED = {d.name for d in DETECTORS if d.init_from}


SIZES: dict[str, BenchmarkSize] = {
    # The quick start, about 3 minutes on 2 CPU cores: rows (a)-(e) only (--fine-tune-iters 50
    # adds (c'), (e') and (f)-(h)), near the least that meets the floor of
    # tests/test_synthetic_benchmark.py (BENCHMARKS.md, section 7): the closed-set baseline,
    # which has no text embeddings to share what it learns between compositions, needs ~1500
    # images seen to pass 0.2 base AP50, so it trains longer than ovdet's detectors (a
    # comparison that favours it); fewer objects (18-48 px, up to 3) in smaller scenes (96 px)
    # than the default size, in batches of 8 (a step has a fixed cost of about 85 ms on one
    # thread, so 8 images cost 1.5 x 4); CLIP needs ~10k distinct crops.
    "small": BenchmarkSize(
        data={
            "num_train_images": 400,
            "num_val_images": 100,
            "num_caption_crops": 9600,
            "num_val_caption_crops": 640,
            "num_weak_images": 400,
            "image_size": 96,
            "crop_size": 32,
            "max_objects": 3,
            "min_object_size": 18.0,
            "max_object_size": 48.0,
            "min_visible": 0.8,
        },
        clip_epochs=4,
        clip_batch_size=128,
        clip_lr=3e-3,
        detector_iters=120,
        detector_iters_overrides=(("closed_set", 240), *_weak_fine_tuning(0)),
        detector_overrides=_SMALL_DETECTOR_OVERRIDES,
    ),
    "default": BenchmarkSize(
        data={
            "num_train_images": 2000,
            "num_val_images": 250,
            "num_caption_crops": 16000,
            "num_val_caption_crops": 1280,
            "num_weak_images": 2000,
            "image_size": 128,
            "crop_size": 32,
        },
        clip_epochs=6,
        clip_batch_size=128,
        clip_lr=3e-3,
        detector_iters=600,
        # 100 fine-tuning iterations (--fine-tune-iters 100) cut the run from 35 to 31 minutes
        # on 2 cores but cost the fine-tuned rows 0.05-0.12 novel AP50 (BENCHMARKS.md, section 7)
        detector_iters_overrides=_weak_fine_tuning(200),
    ),
}


#: The detectors that train on image-labelled data.
_WEAK_DETECTORS = {d.name for d in DETECTORS if d.weak}

#: Rows of the results table, in order.
METHODS: list[Method] = [
    Method("closed_set", "(a) closed-set Faster R-CNN (base boxes)", "closed_set",
           open_vocabulary=False),
    Method("clip_on_proposals", "(b) CLIP on proposals", "vild", "clip_on_proposals",
           open_vocabulary=False),
    Method("vild_text", "(c) ovdet ViLD-text", "vild_text"),
    Method("vild", "(d) ovdet ViLD-text + ViLD-image", "vild"),
    Method("vild_ensemble", "(e) (d) + ViLD-ensemble", "vild", "ensemble"),
    Method("vild_text_longer", "(c') (c) fine-tuned as long as (f)-(h), box images only",
           "vild_text_longer"),
    Method("vild_longer_ensemble", "(e') (e) fine-tuned as long as (h), box images only",
           "vild_longer", "ensemble"),
    Method("vild_text_labels", "(f) (c) + image labels", "vild_text_labels",
           control="vild_text_longer"),
    Method("vild_text_captions", "(g) (f) + caption loss", "vild_text_captions",
           control="vild_text_longer"),
    Method("vild_weak_ensemble", "(h) (f) + ViLD-image + ViLD-ensemble", "vild_weak", "ensemble",
           control="vild_longer_ensemble"),
]  # fmt: skip


def _stage(name: str) -> float:
    logger.info("==== %s", name)
    return time.perf_counter()


def _make_data(out: Path, size: BenchmarkSize, seed: int, progress: bool) -> BenchmarkData:
    from ovdet.data.synthetic import generate_synthetic_dataset

    root = out / "data"
    done = root / "DONE"
    if not done.is_file():
        t = _stage("stage 0: synthetic dataset")
        workers = min(2, os.cpu_count() or 1)  # the files do not depend on it
        generate_synthetic_dataset(
            root, **size.data, seed=seed, workers=workers, overwrite=True, progress=progress
        )  # fmt: skip
        done.write_text(json.dumps({"seconds": time.perf_counter() - t, **size.data}))
    else:
        logger.info("stage 0: reusing the synthetic dataset in %s", root)
    return BenchmarkData(root)


def _clip_spec(out: Path) -> str:
    """The spec of the CLIP that stage 1 pre-trains and exports."""
    return f"local-dir:{out / 'clip' / 'model'}"


def _pretrain_clip(out: Path, data: BenchmarkData, size: BenchmarkSize, seed: int, device: str):
    from ovdet.clip.pretrain import export_clip_dir, pretrain_clip

    model_dir = out / "clip" / "model"
    if not (model_dir / "open_clip_pytorch_model.bin").is_file():
        t = _stage("stage 1: CLIP pre-training with open_clip_train")
        runs = out / "clip" / "runs"
        shutil.rmtree(runs, ignore_errors=True)  # open_clip_train refuses an existing run name
        checkpoint = pretrain_clip(
            data.path("captions"), runs,
            epochs=size.clip_epochs, batch_size=size.clip_batch_size, lr=size.clip_lr,
            warmup=size.clip_warmup, seed=seed, device=device, name="tiny",
            image_column=data.image_column, caption_column=data.caption_column,
            separator=data.separator,
        )  # fmt: skip
        export_clip_dir(checkpoint, model_dir)
        (out / "clip" / "seconds.json").write_text(json.dumps(time.perf_counter() - t))
    else:
        logger.info("stage 1: reusing the CLIP in %s", model_dir)
    return _clip_spec(out)


def _clip_zero_shot(out: Path, data: BenchmarkData, clip: str, split, progress: bool) -> dict:
    from ovdet.ovbench.clip_zero_shot import box_zero_shot_accuracy, crop_zero_shot_accuracy

    path = out / "clip" / "zero_shot.json"
    if path.is_file():
        cached = json.loads(path.read_text())
        if cached.get("clip") == clip:
            return cached
    _stage("stage 1: CLIP zero-shot accuracy")
    if data.has("val_captions"):
        accuracy = crop_zero_shot_accuracy(
            clip, data.path("val_captions"), split, image_column=data.image_column,
            label_column=data.label_column, separator=data.separator,
        )  # fmt: skip
        accuracy["on"] = "labelled crops " + str(data.path("val_captions"))
    else:
        accuracy = box_zero_shot_accuracy(
            clip, data.path("val_json"), data.path("val_images"), split, progress=progress
        )
        accuracy["on"] = "validation boxes " + str(data.path("val_json"))
    accuracy["clip"] = clip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(accuracy, indent=1))
    logger.info(
        "CLIP zero-shot accuracy on %s: base %.3f, novel %.3f",
        accuracy["on"], accuracy["base"], accuracy["novel"],
    )  # fmt: skip
    return accuracy


def _detector_config(out: Path, data: BenchmarkData, clip: str, detector: Detector, size, seed,
                     device: str, opts):  # fmt: skip
    from ovdet.config import load_config

    overrides = [
        "MODEL.OVDET.CLIP", clip,
        "MODEL.DEVICE", device,
        "DATASETS.TRAIN_JSON", str(data.path("train_json")),
        "DATASETS.TRAIN_IMAGES", str(data.path("train_images")),
        "DATASETS.TEST_JSON", str(data.path("val_json")),
        "DATASETS.TEST_IMAGES", str(data.path("val_images")),
        "DATASETS.SPLIT", data.split_spec,
        "SOLVER.MAX_ITER", str(size.iters(detector.name)),
        "SOLVER.CHECKPOINT_PERIOD", str(max(50, size.iters(detector.name) // 4)),
        "TEST.EVAL_PERIOD", "0",
        "SEED", str(seed),
        "OUTPUT_DIR", str(out / detector.name),
        *size.detector_overrides,
        *opts,
        *detector.overrides,
    ]  # fmt: skip
    if detector.init_from:
        overrides += ["MODEL.WEIGHTS", str(out / detector.init_from / "model_final.pt")]
    if detector.weak:
        overrides += [
            "DATASETS.WEAK_TRAIN", str(data.path(detector.weak)),
            "DATASETS.WEAK_TRAIN_IMAGES", str(data.path("weak_images")),
            "DATASETS.WEAK_CSV_IMAGE_KEY", data.image_column,
            "DATASETS.WEAK_CSV_CAPTION_KEY", data.caption_column,
            "DATASETS.WEAK_CSV_SEPARATOR", data.separator,
        ]  # fmt: skip
    cfg = load_config(get_config_file("synthetic_benchmark.yaml"), overrides)
    if detector.weak:
        # Every optimizer step: one box batch of the other detectors' size and one
        # image-labelled batch (DATASET_RATIO [1, 1]). Steps of image-labelled batches alone
        # move every weight a full AdamW step and cost base AP (README, "Weak supervision").
        cfg.defrost()
        cfg.SOLVER.ACCUMULATE_STEPS = 2
        cfg.SOLVER.IMS_PER_BATCH *= 2
        cfg.freeze()
    return cfg


def _train_detector(out, data, clip, detector, size, seed, device, progress, opts) -> float:
    """Train one detector (reused when its final checkpoint exists). Returns its seconds."""
    from ovdet.tv.engine.trainer import Trainer

    final = out / detector.name / "model_final.pt"
    timing = out / detector.name / "seconds.json"
    if final.is_file():
        logger.info("stage 2: reusing %s", final)
        return json.loads(timing.read_text()) if timing.is_file() else math.nan
    t = _stage(f"stage 2: training {detector.name} ({size.iters(detector.name)} iterations)")
    cfg = _detector_config(out, data, clip, detector, size, seed, device, opts)
    Trainer(cfg, resume=True, progress=progress).train()
    seconds = time.perf_counter() - t
    timing.write_text(json.dumps(seconds))
    return seconds


def _evaluate(
    out: Path, data: BenchmarkData, device: str, progress: bool, methods: list[Method]
) -> dict[str, dict]:
    """Base / novel / all AP and AP50 of those ``methods`` whose detector was trained, each
    cached in ``eval/KEY.json`` with the SHA-256 of the checkpoint it scored: a detector
    retrained since (its folder deleted and the run repeated) is evaluated again, as is a cache
    entry without a digest."""
    from ovdet.clip.spec import file_digest
    from ovdet.evaluation import evaluate_coco
    from ovdet.ovbench.predict import predict_with_method
    from ovdet.utils.io import atomic_write_json

    metrics = {}
    for method in methods:
        checkpoint = out / method.detector / "model_final.pt"
        if not checkpoint.is_file():
            continue  # a detector skipped for want of its data
        path = out / "eval" / f"{method.key}.json"
        digest = file_digest(checkpoint)
        if path.is_file():
            cached = json.loads(path.read_text())
            if cached.pop("checkpoint_sha256", None) == digest:
                metrics[method.key] = cached
                continue
            logger.info("stage 3: %s scored another %s; evaluating again", path, checkpoint)
        _stage(f"stage 3: evaluating {method.description}")
        results = predict_with_method(
            checkpoint, data.path("val_json"), data.path("val_images"), method.prediction,
            device=device, score_thresh=EVAL_SCORE_THRESH, progress=progress,
        )  # fmt: skip
        m = evaluate_coco(str(data.path("val_json")), results, data.split_spec)
        summary = {g: {k: m[g][k] for k in ("AP", "AP50")} for g in ("base", "novel", "all")}
        summary["num_detections"] = len(results)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json({**summary, "checkpoint_sha256": digest}, path)
        metrics[method.key] = summary
    return metrics


def _detector_stage(out, data, clip, detector, size, seed, device, progress, opts) -> dict:
    """Stages 2 and 3 of one detector: train it, then evaluate the methods that use it.
    Returns ``{detector name: training seconds, "evaluation": evaluation seconds}``."""
    train = _train_detector(out, data, clip, detector, size, seed, device, progress, opts)
    t = time.perf_counter()
    _evaluate(out, data, device, progress, [m for m in METHODS if m.detector == detector.name])
    return {detector.name: train, "evaluation": time.perf_counter() - t}


def _clip_stage(out, data, size, seed, device, progress, clip) -> dict:
    """Stage 1: the CLIP (pre-trained unless ``clip`` is given) and its zero-shot accuracy.
    Returns ``{"clip": spec, "zero_shot": accuracy, "seconds": seconds}``."""
    from ovdet.data.splits import load_split

    t = time.perf_counter()
    if clip is None:
        clip = _pretrain_clip(out, data, size, seed, device)
    zero_shot = _clip_zero_shot(out, data, clip, load_split(data.split_spec), progress)
    return {"clip": clip, "zero_shot": zero_shot, "seconds": time.perf_counter() - t}


def _stage_tasks(out, data, clip, size, seed, device, progress, opts) -> list:
    """Stages 1-3 as a task graph (:mod:`ovdet.utils.task_graph`): the CLIP; each detector the
    size trains (:meth:`BenchmarkSize.trains`) after the CLIP where it uses one (the
    closed-set baseline does not) and after the detector it starts from; in :data:`DETECTORS`
    order among the ready ones."""
    from ovdet.tv.modeling.build import is_open_vocabulary
    from ovdet.utils.task_graph import Task

    clip_spec = clip or _clip_spec(out)
    tasks = [Task("clip", _clip_stage, (out, data, size, seed, device, progress, clip))]
    for detector in DETECTORS:
        if not size.trains(detector):
            logger.info(
                "stage 2: leaving out %s: %s", detector.name,
                f"it starts from {detector.init_from}, left out"
                if size.iters(detector.name) > 0 else "0 iterations at this size",
            )  # fmt: skip
            continue
        if detector.weak and not data.has(detector.weak):
            logger.info(
                "stage 2: skipping %s: the dataset has no %s (%s)",
                detector.name, detector.weak, data.path(detector.weak),
            )  # fmt: skip
            continue
        cfg = _detector_config(out, data, clip_spec, detector, size, seed, device, opts)
        after = (detector.init_from,) if detector.init_from else ()
        if is_open_vocabulary(cfg):
            after += ("clip",)
        args = (out, data, clip_spec, detector, size, seed, device, progress, opts)
        tasks.append(Task(detector.name, _detector_stage, args, after))
    return tasks


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


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def _ap50(metrics: dict, method: str, group: str) -> float:
    value = metrics[method][group]["AP50"]
    return 0.0 if value is None else float(value)


def best_open_vocabulary_method(metrics: dict) -> Method:
    """The ovdet method of :data:`METHODS` with the highest novel AP50."""
    candidates = [m for m in METHODS if m.open_vocabulary and m.key in metrics]
    return max(candidates, key=lambda m: _ap50(metrics, m.key, "novel"))


def _target(text: str, ok: bool, not_applicable: str = "") -> dict:
    status = "not applicable" if not_applicable else ("met" if ok else "MISSED")
    return {"text": text, "status": status, "reason": not_applicable}


def check_targets(metrics: dict, novel_captions: bool = True) -> list[dict]:
    """The benchmark's target checks: each ``{"text", "status", "reason"}``.

    ``status`` is "met", "MISSED", or "not applicable" when the comparison cannot fail or
    means nothing: against a reference that scored 0 or a baseline that did not learn (AP50
    under :data:`MIN_LEARNED_AP50`); ``reason`` says which. With the weak-supervision rows
    (image-labelled data), also: (h) at least 0.10 novel AP50 above the best row without image
    labels and at least 0.95 x its own base AP50; and, where CLIP's captions never named a
    novel class (``novel_captions=False``), (f) at least 1.5 x ViLD-text's novel AP50.
    """
    best = best_open_vocabulary_method(metrics)
    novel, base = _ap50(metrics, best.key, "novel"), _ap50(metrics, best.key, "base")
    clip = _ap50(metrics, "clip_on_proposals", "novel")
    closed = _ap50(metrics, "closed_set", "base")
    targets = [
        _target(
            f"best ovdet novel AP50 ({best.description}: {novel:.3f}) >= 0.6 x its base AP50 "
            f"({base:.3f})",
            novel >= 0.6 * base,
            "its base AP50 is 0" if base == 0 else "",
        ),
        _target(
            f"best ovdet novel AP50 {novel:.3f} >= 1.5 x CLIP on proposals ({clip:.3f})",
            novel >= 1.5 * clip,
            "CLIP on proposals scored 0 novel AP50" if clip == 0 else "",
        ),
        _target(
            f"ovdet base AP50 {base:.3f} within 10% of the closed-set baseline's ({closed:.3f})",
            base >= 0.9 * closed,
            f"the closed-set baseline did not learn (base AP50 {closed:.3f} < {MIN_LEARNED_AP50})"
            if closed < MIN_LEARNED_AP50
            else "",
        ),
    ]
    weak = {m.key for m in METHODS if m.detector in _WEAK_DETECTORS}
    if "vild_weak_ensemble" in metrics:
        boxes_only = max(
            (m for m in METHODS if m.open_vocabulary and m.key in metrics and m.key not in weak),
            key=lambda m: _ap50(metrics, m.key, "novel"),
        )
        ref = _ap50(metrics, boxes_only.key, "novel")
        h_novel = _ap50(metrics, "vild_weak_ensemble", "novel")
        h_base = _ap50(metrics, "vild_weak_ensemble", "base")
        targets += [
            _target(
                f"(h) novel AP50 {h_novel:.3f} >= the best row without image labels "
                f"({boxes_only.description}: {ref:.3f}) + 0.10",
                h_novel >= ref + 0.10,
            ),
            _target(
                f"(h) novel AP50 {h_novel:.3f} >= 0.95 x its base AP50 ({h_base:.3f})",
                h_novel >= 0.95 * h_base,
                "its base AP50 is 0" if h_base == 0 else "",
            ),
        ]
    if not novel_captions and "vild_text_labels" in metrics:
        f_novel = _ap50(metrics, "vild_text_labels", "novel")
        c_novel = _ap50(metrics, "vild_text", "novel")
        targets.append(
            _target(
                f"without novel names in CLIP's captions: (f) novel AP50 {f_novel:.3f} >= 1.5 x "
                f"ViLD-text's ({c_novel:.3f})",
                f_novel >= 1.5 * c_novel,
                "ViLD-text scored 0 novel AP50" if c_novel == 0 else "",
            )
        )
    return targets


def format_results(report: dict) -> str:
    """The results table (Markdown), CLIP's accuracy, the targets and the novel findings."""
    lines = [
        "| method | base AP50 | novel AP50 | all AP50 | novel AP |",
        "|---|---|---|---|---|",
    ]
    for method in METHODS:
        m = report["metrics"].get(method.key)
        if m is None:
            continue
        lines.append(
            f"| {method.description} | {_fmt(m['base']['AP50'])} | {_fmt(m['novel']['AP50'])} | "
            f"{_fmt(m['all']['AP50'])} | {_fmt(m['novel']['AP'])} |"
        )
    clip = report["clip_zero_shot"]
    lines.append("")
    lines.append(
        f"CLIP zero-shot accuracy ({clip.get('on', 'labelled crops')}): base {clip['base']:.3f}, "
        f"novel {clip['novel']:.3f}."
    )
    for target in report["targets"]:
        reason = f" ({target['reason']})" if target["reason"] else ""
        lines.append(f"{target['status']}: {target['text']}{reason}")
    found = report.get("novel_findings")
    if found:
        lines.append(
            f"Novel objects found by {found['method']} on {found['images']} validation images "
            f"(every class name in the vocabulary, score >= {found['score_thresh']}): "
            f"{found['novel_found']} of {found['novel_objects']} (right name, IoU >= 0.5); "
            f"{found['novel_right']} of its {found['novel_detections']} novel-named detections "
            "were right."
        )
    versions = report.get("versions")
    if versions:
        lines.append(
            "Packages: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v is not None) + "."
        )
    return "\n".join(lines)


def _draw_pictures(out, data, split, metrics, size, device, progress) -> dict:
    from ovdet.api import OVDetector
    from ovdet.data.coco import load_coco_detection
    from ovdet.ovbench.pictures import novel_detection_summary

    best = best_open_vocabulary_method(metrics)
    path = out / "pictures" / "summary.json"
    if path.is_file():
        cached = json.loads(path.read_text())
        if cached.get("method") == best.description:
            return cached
    _stage(f"stage 4: pictures of {best.description} with every class name")
    detector = OVDetector.from_checkpoint(out / best.detector / "model_final.pt", device=device)
    if best.prediction == "ensemble":
        detector.enable_clip_rescoring(True)
    records = load_coco_detection(
        str(data.path("val_json")), str(data.path("val_images")), split=None, filter_empty=False
    )  # fmt: skip
    summary = novel_detection_summary(
        detector, records, list(split.novel), out / "pictures", size.picture_thresh,
        num_pictures=size.num_pictures, progress=progress,
    )  # fmt: skip
    summary["method"] = best.description
    path.write_text(json.dumps(summary, indent=1))
    return summary


def _run_opts(spec: BenchmarkSize, synthetic: bool, detector_opts) -> tuple[str, ...]:
    """The config ``KEY VALUE`` pairs every detector of a run gets after the size's: on the
    synthetic data, :func:`scene_input_sizes` of its scenes (a dataset of your own keeps the
    config's input sizes); then ``detector_opts``."""
    scenes = synthetic and "image_size" in spec.data
    return (*(scene_input_sizes(spec.data["image_size"]) if scenes else ()), *detector_opts)


def _run_inputs(data, spec: BenchmarkSize, seed: int, clip, detector_opts) -> dict:
    """What a run's stages depend on, as ``inputs.json`` records it: the iterations per detector
    trained (``"iterations"``) apart from the rest of the size, so that a later run in the same
    folder may add detectors that this one left out."""
    size = {k: v for k, v in asdict(spec).items()
            if k not in ("detector_iters", "detector_iters_overrides")}  # fmt: skip
    inputs = {
        "data": data.describe() if data is not None else "synthetic",
        "size": size,
        "iterations": {d.name: spec.iters(d.name) for d in DETECTORS if spec.trains(d)},
        "seed": seed,
        "clip": clip or "pre-trained",
        "detector_opts": list(detector_opts),
    }
    return json.loads(json.dumps(inputs))  # tuples as JSON lists


def _check_same_inputs(out: Path, inputs: dict) -> None:
    """Finished stages are reused only for the same data and settings, and a detector's only
    for the same iterations; a run may train detectors an earlier one left out (they are added
    to ``inputs.json``)."""
    from ovdet.utils.io import atomic_write_json

    path = out / "inputs.json"
    if not path.is_file():
        atomic_write_json(inputs, path)
        return
    previous = json.loads(path.read_text())
    changed = sorted(k for k in inputs.keys() | previous.keys()
                     if k != "iterations" and inputs.get(k) != previous.get(k))  # fmt: skip
    before, now = previous.get("iterations", {}), inputs["iterations"]
    for name in sorted(before.keys() & now.keys()):
        if before[name] != now[name]:
            changed.append(f"the iterations of {name} ({before[name]}, now {now[name]})")
    if changed:
        raise ConfigError(
            f"{out} holds a run with other inputs ({', '.join(changed)} differ); its stages "
            "cannot be reused: choose a new --output"
        )
    if not now.keys() <= before.keys():
        atomic_write_json({**inputs, "iterations": {**before, **now}}, path)


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
) -> dict:
    """Run every stage (see the module docstring); finished stages are reused.

    Args:
        output_dir: where everything is written.
        size: a key of :data:`SIZES` ("small": about 3 minutes on 2 CPU cores, rows (a)-(e);
            "default": about 18 minutes, every row) or a
            :class:`BenchmarkSize`.
        seed: seed of the data, CLIP pre-training and detector training.
        device: "cpu" or "cuda".
        progress: progress bars.
        data: the dataset; ``None`` generates the synthetic one in ``output_dir/data``.
        clip: a CLIP spec to use instead of pre-training one (stage 1 is skipped).
        detector_opts: config ``KEY VALUE`` pairs for every detector (after the size's).
        workers: stages run side by side in worker processes (:mod:`ovdet.utils.task_graph`);
            1 runs them one by one in this process, with progress bars. Default
            (:func:`stage_workers`): 2 on a CPU with 2 or more cores, 1 on a GPU.
        threads: torch threads of each worker process (default: the cores shared out).

    Returns:
        The report also written to ``results.json``: ``metrics`` per method (base / novel /
        all AP and AP50), ``clip_zero_shot`` accuracy, ``targets`` (see :func:`check_targets`),
        ``novel_findings`` (:func:`ovdet.ovbench.pictures.novel_detection_summary`),
        ``seconds`` per stage, ``size`` and ``seed``.
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
    out = check_writable_dir(output_dir)
    if data is not None:
        data = replace(data, root=Path(data.root).resolve())
        data.check()
    _check_same_inputs(out, _run_inputs(data, spec, seed, clip, detector_opts))
    start = time.perf_counter()
    seconds: dict[str, float] = {}

    t = time.perf_counter()
    generated = data is None
    if generated:
        data = _make_data(out, spec, seed, progress)
    seconds["data"] = time.perf_counter() - t
    split = load_split(data.split_spec)
    logger.info(
        "dataset %s: %d base and %d novel classes; training on %s",
        data.root, len(split.base), len(split.novel), data.path("train_json"),
    )  # fmt: skip
    workers, threads = stage_workers(device, workers, threads)
    opts = _run_opts(spec, generated, detector_opts)
    tasks = _stage_tasks(out, data, clip, spec, seed, device, progress and workers == 1, opts)
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
            seconds[name] = result[name]
            seconds["evaluation"] += result["evaluation"]
    trained = {d.name for d in DETECTORS if spec.trains(d)}
    # the cached evaluations, in table order: this run's rows only
    metrics = _evaluate(out, data, device, progress, [m for m in METHODS if m.detector in trained])
    t = time.perf_counter()
    findings = _draw_pictures(out, data, split, metrics, spec, device, progress)
    seconds["pictures"] = time.perf_counter() - t
    seconds["total (this run)"] = time.perf_counter() - start

    report = {
        "size": size_name,
        "size_settings": asdict(spec),
        "seed": seed,
        "device": device,
        "workers": workers,
        "torch_threads": threads if workers > 1 else torch.get_num_threads(),
        "versions": package_versions(),
        "data": data.describe(),
        "clip": clip,
        "clip_zero_shot": zero_shot,
        "metrics": metrics,
        "targets": check_targets(metrics, spec.data.get("novel_captions", True)),
        "novel_findings": findings,
        "seconds": seconds,
        "pictures": str(out / "pictures"),
    }
    atomic_write_json(report, out / "results.json")
    (out / "results.md").write_text(format_results(report) + "\n", encoding="utf-8")
    return report

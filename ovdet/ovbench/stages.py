"""The benchmark's stages, each written under the run's folder and reused once finished.

- :func:`make_data`: stage 0, the synthetic dataset (``data/``);
- :func:`pretrain_clip_stage` and :func:`clip_zero_shot`: stage 1, a tiny CLIP pre-trained on
  the captions (``clip/model``) and its zero-shot accuracy (``clip/zero_shot.json``);
- :func:`detector_config` and :func:`train_detector`: stage 2, one detector of
  :data:`~ovdet.ovbench.plan.DETECTORS` (``NAME/model_final.pt``);
- :func:`evaluate`: stage 3, base / novel / all AP50 of rows of
  :data:`~ovdet.ovbench.plan.METHODS` (``eval/KEY.json``);
- :func:`draw_pictures`: stage 4, the best row's detections with every class name
  (``pictures/``).

Every path a stage writes into a config is absolute (the run's folder is made absolute by
:func:`ovdet.ovbench.run.run_synthetic_benchmark`), so a detector's ``config.yaml`` and
checkpoint work from any folder.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from pathlib import Path

from ovdet.config.catalog import get_config_file
from ovdet.ovbench.data import BenchmarkData
from ovdet.ovbench.plan import BenchmarkSize, Detector, Method

__all__ = [
    "EVAL_SCORE_THRESH",
    "clip_spec",
    "clip_zero_shot",
    "detector_config",
    "draw_pictures",
    "evaluate",
    "make_data",
    "pretrain_clip_stage",
    "start_stage",
    "train_detector",
]

logger = logging.getLogger(__name__)

#: Least score of the detections evaluated (AP ranks every detection up to the per-image cap;
#: a high threshold would hide what a model ranks right but scores low, e.g. early in training).
EVAL_SCORE_THRESH = 0.001


def start_stage(name: str) -> float:
    """Log the start of a stage (one ``==== name`` line); returns ``time.perf_counter()``."""
    logger.info("==== %s", name)
    return time.perf_counter()


def make_data(out: Path, size: BenchmarkSize, seed: int, progress: bool) -> BenchmarkData:
    """Stage 0: the synthetic dataset of ``size`` in ``out/data`` (reused once written)."""
    from ovdet.data.synthetic import generate_synthetic_dataset

    root = out / "data"
    done = root / "DONE"
    if not done.is_file():
        t = start_stage("stage 0: synthetic dataset")
        workers = min(2, os.cpu_count() or 1)  # the files do not depend on it
        generate_synthetic_dataset(
            root, **size.data, seed=seed, workers=workers, overwrite=True, progress=progress
        )  # fmt: skip
        done.write_text(json.dumps({"seconds": time.perf_counter() - t, **size.data}))
    else:
        logger.info("stage 0: reusing the synthetic dataset in %s", root)
    return BenchmarkData(root)


def clip_spec(out: Path) -> str:
    """The spec of the CLIP that stage 1 pre-trains and exports (absolute where ``out`` is)."""
    return f"local-dir:{out / 'clip' / 'model'}"


def pretrain_clip_stage(
    out: Path, data: BenchmarkData, size: BenchmarkSize, seed: int, device: str
) -> str:
    """Stage 1: pre-train a CLIP on the dataset's captions with ``open_clip_train`` and export
    it to ``out/clip/model`` (reused once exported). Returns its spec (:func:`clip_spec`)."""
    from ovdet.clip.pretrain import export_clip_dir, pretrain_clip

    model_dir = out / "clip" / "model"
    if not (model_dir / "open_clip_pytorch_model.bin").is_file():
        t = start_stage("stage 1: CLIP pre-training with open_clip_train")
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
    return clip_spec(out)


def clip_zero_shot(out: Path, data: BenchmarkData, clip: str, split, progress: bool) -> dict:
    """Stage 1: CLIP's zero-shot accuracy (base / novel) on the labelled crops, or on the
    validation boxes where the dataset has none; cached in ``out/clip/zero_shot.json`` for
    this ``clip``."""
    from ovdet.ovbench.clip_zero_shot import box_zero_shot_accuracy, crop_zero_shot_accuracy

    path = out / "clip" / "zero_shot.json"
    if path.is_file():
        cached = json.loads(path.read_text())
        if cached.get("clip") == clip:
            return cached
    start_stage("stage 1: CLIP zero-shot accuracy")
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


def detector_config(out: Path, data: BenchmarkData, clip: str, detector: Detector, size, seed,
                    device: str, opts):  # fmt: skip
    """The config of ``detector``: ``synthetic_benchmark.yaml``, the data, CLIP, schedule and
    seed of the run, then the size's, the run's (``opts``) and the detector's overrides."""
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
        # move every weight a full AdamW step and cost base AP.
        cfg.defrost()
        cfg.SOLVER.ACCUMULATE_STEPS = 2
        cfg.SOLVER.IMS_PER_BATCH *= 2
        cfg.freeze()
    return cfg


def train_detector(out, data, clip, detector, size, seed, device, progress, opts) -> float:
    """Stage 2: train one detector (reused when its final checkpoint exists). Returns its
    training seconds (NaN where a reused detector's were not recorded)."""
    from ovdet.tv.engine.trainer import Trainer

    final = out / detector.name / "model_final.pt"
    timing = out / detector.name / "seconds.json"
    if final.is_file():
        logger.info("stage 2: reusing %s", final)
        return json.loads(timing.read_text()) if timing.is_file() else math.nan
    t = start_stage(f"stage 2: training {detector.name} ({size.iters(detector.name)} iterations)")
    cfg = detector_config(out, data, clip, detector, size, seed, device, opts)
    Trainer(cfg, resume=True, progress=progress).train()
    seconds = time.perf_counter() - t
    timing.write_text(json.dumps(seconds))
    return seconds


def _ap50_text(summary: dict) -> str:
    """``base 0.412, novel 0.388, all 0.405`` ("-" where a group has no objects)."""
    values = {g: summary[g]["AP50"] for g in ("base", "novel", "all")}
    return ", ".join(f"{g} {'-' if v is None else f'{v:.3f}'}" for g, v in values.items())


def evaluate(
    out: Path, data: BenchmarkData, device: str, progress: bool, methods: list[Method]
) -> dict[str, dict]:
    """Stage 3: base / novel / all AP and AP50 of those ``methods`` whose detector was trained,
    each cached in ``eval/KEY.json`` with the SHA-256 of the checkpoint it scored: a detector
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
        start_stage(f"stage 3: evaluating {method.description}")
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
        logger.info("stage 3: %s: AP50 %s", method.description, _ap50_text(summary))
    return metrics


def draw_pictures(out, data, split, best: Method, size, device, progress) -> dict:
    """Stage 4: the detections of row ``best`` with every class name on validation images,
    the novel ones counted (:func:`ovdet.ovbench.pictures.novel_detection_summary`) and drawn
    in ``out/pictures``; reused while the best row is the same."""
    from ovdet.api import OVDetector
    from ovdet.data.coco import load_coco_detection
    from ovdet.ovbench.pictures import novel_detection_summary

    path = out / "pictures" / "summary.json"
    if path.is_file():
        cached = json.loads(path.read_text())
        if cached.get("method") == best.description:
            return cached
    start_stage(f"stage 4: pictures of {best.description} with every class name")
    detector = OVDetector.from_checkpoint(out / best.detector / "model_final.pt", device=device)
    if best.prediction == "clip_rescoring":
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

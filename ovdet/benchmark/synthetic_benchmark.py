"""The synthetic open-vocabulary benchmark, end to end, with its baselines.

Stages, each written under one output folder and skipped when a previous run finished it (so an
interrupted run loses nothing; training resumes from its last checkpoint):

0. ``data/``: the synthetic colour x shape dataset (:mod:`ovdet.data.synthetic`).
1. ``clip/``: a tiny CLIP pre-trained on the caption crops by ``open_clip_train``
   (:func:`ovdet.clip_pretrain.pretrain_clip`), exported as an open_clip folder; its zero-shot
   crop accuracy (base / novel) is measured on held-out crops.
2. ``closed_set/``, ``vild_text/``, ``vild/``: three detectors trained on the base boxes only:
   torchvision's closed-set Faster R-CNN, ovdet with ViLD-text, ovdet with ViLD-text +
   ViLD-image (online CLIP teacher). Same backbone, data, schedule and seed.
3. ``results.json`` / ``results.md``: base / novel / all AP50 on the validation images in the
   generalized setting (the vocabulary holds all 64 classes) of five methods: the three
   detectors, "CLIP on proposals" (the ViLD detector's RPN proposals classified by CLIP alone)
   and the ViLD detector with the ViLD-ensemble.
4. ``infer/``: ``tools/infer.py`` with the novel class names on held-out images.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ovdet.config.catalog import get_config_file
from ovdet.errors import ConfigError

__all__ = ["BenchmarkSize", "SIZES", "METHODS", "run_synthetic_benchmark", "format_results"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchmarkSize:
    """How much data and compute one benchmark run uses.

    Attributes:
        data: keyword arguments of :func:`ovdet.data.synthetic.generate_synthetic_dataset`.
        clip_epochs, clip_batch_size, clip_lr: CLIP pre-training.
        detector_iters: training iterations of each detector.
        detector_overrides: more config ``KEY VALUE`` pairs for every detector.
        num_infer_images: held-out images drawn by the final ``tools/infer.py`` run.
    """

    data: dict
    clip_epochs: int
    clip_batch_size: int
    clip_lr: float
    detector_iters: int
    detector_overrides: tuple[str, ...] = ()
    num_infer_images: int = 6


SIZES: dict[str, BenchmarkSize] = {
    "small": BenchmarkSize(
        data={
            "num_train_images": 400,
            "num_val_images": 60,
            "num_caption_crops": 6400,
            "num_val_caption_crops": 640,
            "crop_size": 32,
        },
        clip_epochs=3,
        clip_batch_size=128,
        clip_lr=3e-3,
        detector_iters=120,
        detector_overrides=("SOLVER.IMS_PER_BATCH", "4", "SOLVER.WARMUP_ITERS", "10"),
    ),
    "default": BenchmarkSize(
        data={
            "num_train_images": 2000,
            "num_val_images": 250,
            "num_caption_crops": 16000,
            "num_val_caption_crops": 1280,
            "crop_size": 32,
        },
        clip_epochs=6,
        clip_batch_size=128,
        clip_lr=3e-3,
        detector_iters=600,
    ),
}

#: Detectors trained by the benchmark: folder name -> config overrides.
DETECTORS: dict[str, tuple[str, ...]] = {
    "closed_set": ("MODEL.META_ARCHITECTURE", "FasterRCNN"),
    "vild_text": ("MODEL.OVDET.DISTILL.MODE", "none"),
    "vild": ("MODEL.OVDET.DISTILL.MODE", "online"),
}

#: Methods of the results table: key -> (description, detector folder).
METHODS: dict[str, tuple[str, str]] = {
    "closed_set": ("(a) closed-set Faster R-CNN (base boxes)", "closed_set"),
    "clip_on_proposals": ("(b) CLIP on proposals", "vild"),
    "vild_text": ("(c) ovdet ViLD-text", "vild_text"),
    "vild": ("(d) ovdet ViLD-text + ViLD-image", "vild"),
    "vild_ensemble": ("(e) (d) + ViLD-ensemble", "vild"),
}


def _stage(name: str) -> float:
    logger.info("==== %s", name)
    return time.perf_counter()


def _make_data(out: Path, size: BenchmarkSize, seed: int, progress: bool) -> Path:
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
    return root


def _pretrain_clip(out: Path, data: Path, size: BenchmarkSize, seed: int, device: str) -> str:
    from ovdet.clip_pretrain import export_clip_dir, pretrain_clip

    model_dir = out / "clip" / "model"
    if not (model_dir / "open_clip_pytorch_model.bin").is_file():
        t = _stage("stage 1: CLIP pre-training with open_clip_train")
        runs = out / "clip" / "runs"
        shutil.rmtree(runs, ignore_errors=True)  # open_clip_train refuses an existing run name
        checkpoint = pretrain_clip(
            data / "captions" / "train.csv", runs,
            epochs=size.clip_epochs, batch_size=size.clip_batch_size, lr=size.clip_lr,
            warmup=50, seed=seed, device=device, name="tiny",
        )  # fmt: skip
        export_clip_dir(checkpoint, model_dir)
        (out / "clip" / "seconds.json").write_text(json.dumps(time.perf_counter() - t))
    return f"local-dir:{model_dir}"


def _detector_config(out: Path, data: Path, clip: str, name: str, size, seed: int, device: str):
    from ovdet.config import load_config

    overrides = [
        "MODEL.OVDET.CLIP", clip,
        "MODEL.DEVICE", device,
        "DATASETS.TRAIN_JSON", str(data / "annotations" / "instances_train.json"),
        "DATASETS.TRAIN_IMAGES", str(data / "images" / "train"),
        "DATASETS.TEST_JSON", str(data / "annotations" / "instances_val.json"),
        "DATASETS.TEST_IMAGES", str(data / "images" / "val"),
        "DATASETS.SPLIT", str(data / "split.json"),
        "SOLVER.MAX_ITER", str(size.detector_iters),
        "SOLVER.CHECKPOINT_PERIOD", str(max(50, size.detector_iters // 4)),
        "TEST.EVAL_PERIOD", "0",
        "SEED", str(seed),
        "OUTPUT_DIR", str(out / name),
        *size.detector_overrides,
        *DETECTORS[name],
    ]  # fmt: skip
    return load_config(get_config_file("synthetic_benchmark.yaml"), overrides)


def _train_detectors(out, data, clip, size, seed, device, progress) -> dict[str, float]:
    from ovdet.engine.trainer import Trainer

    seconds = {}
    for name in DETECTORS:
        final = out / name / "model_final.pt"
        timing = out / name / "seconds.json"
        if final.is_file():
            seconds[name] = json.loads(timing.read_text()) if timing.is_file() else float("nan")
            continue
        t = _stage(f"stage 2: training {name} ({size.detector_iters} iterations)")
        cfg = _detector_config(out, data, clip, name, size, seed, device)
        Trainer(cfg, resume=True, progress=progress).train()
        seconds[name] = time.perf_counter() - t
        timing.write_text(json.dumps(seconds[name]))
    return seconds


def _closed_set_results(checkpoint: Path, data: Path, device: str, progress: bool) -> list[dict]:
    import yaml

    from ovdet.config import config_from_dict
    from ovdet.data.coco import load_coco_detection
    from ovdet.engine.build import build_model
    from ovdet.engine.checkpoint import load_checkpoint, load_model_weights
    from ovdet.engine.inference import inference_on_records

    state = load_checkpoint(checkpoint)
    cfg = config_from_dict(yaml.safe_load(state["config"]), str(checkpoint))
    # The closed-set model knows its base classes only; novel AP is measured (and is 0).
    records = load_coco_detection(
        str(data / "annotations" / "instances_val.json"), str(data / "images" / "val"),
        split=str(data / "split.json"), keep=("base",), filter_empty=False,
    )  # fmt: skip
    model = build_model(cfg, num_classes=len(records.class_names)).to(device)
    load_model_weights(model, state["model"], str(checkpoint))
    return inference_on_records(
        model, records, cfg, device, closed_set=True, progress=progress
    )  # fmt: skip


def _open_vocabulary_results(method, checkpoint, data, device, progress) -> list[dict]:
    from ovdet.api import OVDetector
    from ovdet.benchmark.clip_proposals import ClipOnProposals
    from ovdet.data.coco import load_coco_detection
    from ovdet.engine.build import build_clip_teacher
    from ovdet.engine.inference import inference_on_records

    detector = OVDetector.from_checkpoint(checkpoint, device=device)
    records = load_coco_detection(
        str(data / "annotations" / "instances_val.json"), str(data / "images" / "val"),
        split=None, filter_empty=False,
    )  # fmt: skip
    detector.set_classes(records.class_names)
    model = detector.model
    if method == "vild_ensemble":
        detector.enable_ensemble(True)
    elif method == "clip_on_proposals":
        cfg = detector.cfg
        teacher = build_clip_teacher(cfg, detector._text.clip).to(device)
        model = ClipOnProposals(
            detector.model, teacher,
            num_proposals=cfg.MODEL.OVDET.ENSEMBLE.NUM_PROPOSALS,
            clip_temperature=cfg.MODEL.OVDET.ENSEMBLE.CLIP_TEMPERATURE,
            score_thresh=cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST,
            nms_thresh=cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST,
            detections_per_img=cfg.TEST.DETECTIONS_PER_IMAGE,
        )  # fmt: skip
    return inference_on_records(model, records, detector.cfg, device, progress=progress)


def _evaluate(out: Path, data: Path, device: str, progress: bool) -> dict[str, dict]:
    from ovdet.evaluation import evaluate_coco

    metrics = {}
    for method, (description, folder) in METHODS.items():
        path = out / "eval" / f"{method}.json"
        if path.is_file():
            metrics[method] = json.loads(path.read_text())
            continue
        _stage(f"stage 3: evaluating {description}")
        checkpoint = out / folder / "model_final.pt"
        if method == "closed_set":
            results = _closed_set_results(checkpoint, data, device, progress)
        else:
            results = _open_vocabulary_results(method, checkpoint, data, device, progress)
        m = evaluate_coco(
            str(data / "annotations" / "instances_val.json"), results, str(data / "split.json")
        )
        summary = {g: {k: m[g][k] for k in ("AP", "AP50")} for g in ("base", "novel", "all")}
        summary["num_detections"] = len(results)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(summary, indent=1))
        metrics[method] = summary
    return metrics


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def format_results(report: dict) -> str:
    """The results table (Markdown) and the target checks of a benchmark report."""
    lines = [
        "| method | base AP50 | novel AP50 | all AP50 | novel AP |",
        "|---|---|---|---|---|",
    ]
    for method, (description, _) in METHODS.items():
        m = report["metrics"][method]
        lines.append(
            f"| {description} | {_fmt(m['base']['AP50'])} | {_fmt(m['novel']['AP50'])} | "
            f"{_fmt(m['all']['AP50'])} | {_fmt(m['novel']['AP'])} |"
        )
    clip = report["clip_zero_shot"]
    lines.append("")
    lines.append(
        f"CLIP zero-shot crop accuracy (64-way): base {clip['base']:.3f}, novel "
        f"{clip['novel']:.3f}."
    )
    lines.extend(f"{'met' if ok else 'MISSED'}: {text}" for text, ok in report["targets"])
    return "\n".join(lines)


def _targets(metrics: dict) -> list[tuple[str, bool]]:
    ovdet_methods = ("vild_text", "vild", "vild_ensemble")
    best_key = max(ovdet_methods, key=lambda k: metrics[k]["novel"]["AP50"])
    best = metrics[best_key]
    clip = metrics["clip_on_proposals"]["novel"]["AP50"]
    closed = metrics["closed_set"]["base"]["AP50"]
    novel, base = best["novel"]["AP50"], best["base"]["AP50"]
    return [
        (
            f"best ovdet novel AP50 ({METHODS[best_key][0]}: {novel:.3f}) >= 0.6 x its base "
            f"AP50 ({base:.3f})",
            novel >= 0.6 * base,
        ),
        (
            f"best ovdet novel AP50 {novel:.3f} >= 1.5 x CLIP on proposals ({clip:.3f})",
            novel >= 1.5 * clip,
        ),
        (
            f"ovdet base AP50 {base:.3f} within 10% of the closed-set baseline's ({closed:.3f})",
            base >= 0.9 * closed,
        ),
    ]


def _run_infer(out: Path, data: Path, novel: list[str], size: BenchmarkSize, device: str) -> Path:
    from ovdet.cli.infer import main as infer_main

    held_out = out / "held_out_images"
    held_out.mkdir(exist_ok=True)
    for path in sorted((data / "images" / "val").iterdir())[: size.num_infer_images]:
        shutil.copyfile(path, held_out / path.name)
    _stage("stage 4: tools/infer.py with the novel class names on held-out images")
    args = [
        "--checkpoint", str(out / "vild" / "model_final.pt"),
        "--classes", ",".join(novel),
        "--input", str(held_out),
        "--output", str(out / "infer"),
        "--score-thresh", "0.3",
        "--device", device,
        "--no-progress",
    ]  # fmt: skip
    if infer_main(args) != 0:
        raise ConfigError("tools/infer.py failed on the held-out images")
    return out / "infer"


def run_synthetic_benchmark(
    output_dir: str | Path,
    size: str = "default",
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
) -> dict:
    """Run every stage (see the module docstring); finished stages are reused.

    Args:
        output_dir: where everything is written.
        size: a key of :data:`SIZES` ("small": about 3 minutes on 2 CPU cores; "default").
        seed: seed of the data, CLIP pre-training and detector training.
        device: "cpu" or "cuda".
        progress: progress bars.

    Returns:
        The report also written to ``results.json``: ``metrics`` per method (base / novel /
        all AP and AP50), ``clip_zero_shot`` accuracy, ``targets`` (text, met) pairs,
        ``seconds`` per stage, ``size`` and ``seed``.
    """
    from ovdet.benchmark.clip_zero_shot import crop_zero_shot_accuracy
    from ovdet.data.splits import load_split
    from ovdet.utils.io import atomic_write_json, check_writable_dir

    if size not in SIZES:
        raise ConfigError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    spec = SIZES[size]
    out = check_writable_dir(output_dir)
    start = time.perf_counter()
    seconds: dict[str, float] = {}

    t = time.perf_counter()
    data = _make_data(out, spec, seed, progress)
    seconds["data"] = time.perf_counter() - t
    t = time.perf_counter()
    clip = _pretrain_clip(out, data, spec, seed, device)
    seconds["clip"] = time.perf_counter() - t
    split = load_split(str(data / "split.json"))
    zero_shot = crop_zero_shot_accuracy(clip, data / "captions" / "val.csv", split)
    seconds.update(_train_detectors(out, data, clip, spec, seed, device, progress))
    t = time.perf_counter()
    metrics = _evaluate(out, data, device, progress)
    seconds["evaluation"] = time.perf_counter() - t
    t = time.perf_counter()
    infer_dir = _run_infer(out, data, list(split.novel), spec, device)
    seconds["infer"] = time.perf_counter() - t
    seconds["total (this run)"] = time.perf_counter() - start

    report = {
        "size": size,
        "size_settings": asdict(spec),
        "seed": seed,
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "clip": clip,
        "clip_zero_shot": zero_shot,
        "metrics": metrics,
        "targets": _targets(metrics),
        "seconds": seconds,
        "infer_output": str(infer_dir),
    }
    atomic_write_json(report, out / "results.json")
    (out / "results.md").write_text(format_results(report) + "\n", encoding="utf-8")
    return report

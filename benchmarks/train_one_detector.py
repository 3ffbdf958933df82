"""Train one detector of the synthetic benchmark with given settings; print its base / novel AP50.

The search behind the ``--small`` size (docs/benchmark.md, "Small size settings"), one command
a row: a detector of :data:`ovdet.ovbench.plan.DETECTORS` (closed-set, ViLD-text or ViLD with
the online teacher), configured exactly as the benchmark configures it
(``synthetic_benchmark.yaml`` + the data, the CLIP and ``KEY VALUE`` overrides), trained on a
dataset :mod:`ovdet.data.synthetic` wrote (``--make-data`` writes one first), evaluated on its
validation images down to score 0.001 (ViLD also with CLIP rescoring).

Example (a row of the table)::

    python -m benchmarks.train_one_detector --data /tmp/d --make-data max_objects=3 \\
        min_object_size=24 max_object_size=64 min_visible=0.8 num_caption_crops=9600 \\
        --clip local-dir:output/synthetic_benchmark/clip/model --detector closed_set \\
        --iters 300 --threads 1 MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE 64
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Sequence

import torch

from ovdet.evaluation import evaluate_coco
from ovdet.ovbench.data import BenchmarkData
from ovdet.ovbench.plan import DETECTORS, METHODS, BenchmarkSize
from ovdet.ovbench.predict import predict_with_method
from ovdet.ovbench.stages import EVAL_SCORE_THRESH, detector_config

#: Prediction methods evaluated per detector: plain, and those of its benchmark rows.
_PREDICTIONS = {
    d.name: ["detector"] + sorted({m.prediction for m in METHODS if m.detector == d.name}
                                  - {"detector", "clip_on_proposals"})
    for d in DETECTORS
}  # fmt: skip


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", required=True, help="synthetic dataset folder")
    p.add_argument(
        "--make-data",
        nargs="*",
        metavar="KEY=VALUE",
        default=None,
        help="first write the dataset into --data: 400 train / 100 val images and 640 val "
        "crops, with these generate_synthetic_dataset arguments on top",
    )
    p.add_argument("--clip", required=True, help="CLIP spec, e.g. local-dir:DIR")
    p.add_argument("--detector", required=True, choices=sorted(_PREDICTIONS), help="which one")
    p.add_argument("--iters", type=int, required=True, help="training iterations")
    p.add_argument("--batch", type=int, default=4, help="images per iteration (default: 4)")
    p.add_argument("--output", default="output/train_one_detector", help="training folder")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    p.add_argument("opts", nargs="*", default=[], help="config overrides: KEY VALUE ...")
    return p.parse_args(argv)


def _make_data(root: Path, settings: Sequence[str]) -> None:
    from ovdet.data.synthetic import generate_synthetic_dataset

    kwargs = {"num_train_images": 400, "num_val_images": 100, "num_caption_crops": 0,
              "num_val_caption_crops": 640, "crop_size": 32}  # fmt: skip
    for item in settings:
        key, value = item.split("=", 1)
        kwargs[key] = float(value) if "." in value else int(value)
    generate_synthetic_dataset(root, **kwargs, overwrite=True, progress=False)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    detector = {d.name: d for d in DETECTORS}[args.detector]
    out = Path(args.output)
    folder = out / detector.name
    if folder.is_symlink():
        # rmtree refuses a link (silently, with ignore_errors) and the training would then
        # overwrite the folder it points to, e.g. a benchmark run's own detector
        raise SystemExit(f"{folder} is a link; train into a folder of its own")
    torch.set_num_threads(args.threads)
    if args.make_data is not None:
        _make_data(Path(args.data), args.make_data)
    data = BenchmarkData(Path(args.data).resolve())
    size = BenchmarkSize(
        data={}, clip_epochs=0, clip_batch_size=0, clip_lr=0.0, detector_iters=args.iters,
        detector_overrides=("SOLVER.IMS_PER_BATCH", str(args.batch), "SOLVER.WARMUP_ITERS", "20"),
    )  # fmt: skip
    shutil.rmtree(folder, ignore_errors=True)
    cfg = detector_config(out, data, args.clip, detector, size, 0, "cpu", tuple(args.opts))
    from ovdet.tv.engine.trainer import Trainer

    start, cpu = time.perf_counter(), time.process_time()
    Trainer(cfg, resume=False, progress=False).train()
    report = {
        "detector": detector.name,
        "iters": args.iters,
        "batch": args.batch,
        "opts": args.opts,
        "train_seconds": round(time.perf_counter() - start, 1),
        "train_cpu_seconds": round(time.process_time() - cpu, 1),
    }
    for prediction in _PREDICTIONS[detector.name]:
        results = predict_with_method(
            out / detector.name / "model_final.pt", data.path("val_json"),
            data.path("val_images"), prediction, device="cpu",
            score_thresh=EVAL_SCORE_THRESH, progress=False,
        )  # fmt: skip
        metrics = evaluate_coco(str(data.path("val_json")), results, data.split_spec)
        report[prediction] = {g: round(metrics[g]["AP50"] or 0.0, 3) for g in ("base", "novel")}
    print(json.dumps(report))


if __name__ == "__main__":
    main()

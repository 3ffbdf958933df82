"""``tools/benchmark_synthetic.py``: the open-vocabulary benchmark in one command.

Without ``--data`` it generates the synthetic colour x shape dataset; with ``--data DIR`` it runs
on a COCO-format dataset of your own (train/val annotations and images, a base/novel split file,
an image-caption CSV; every path and column is a flag below, relative to DIR). It pre-trains a
tiny CLIP on the captions with open_clip_train (or takes ``--clip``), trains a closed-set Faster
R-CNN and two ovdet detectors on the base boxes, fine-tunes them on image-labelled images
(weak supervision, where the dataset has them), evaluates each method (base / novel / all
AP50), prints the table and the target checks, and draws the best method's detections with
every class name on validation images (novel classes marked with ``*``), counting the novel
objects it found. ``--masks`` adds a ViLD-text + ViLD-image detector with a mask head: its box
and mask AP50 and its inference time with masks against boxes only; ``--fvlm`` adds F-VLM, the
run's CLIP frozen as the backbone (docs/fvlm.md). A re-run with the same
--output reuses finished stages (an interrupted run resumes); the log is also written to
OUTPUT/log.txt.

Examples::

    python tools/benchmark_synthetic.py --small --output output/synthetic_benchmark_small
    python tools/benchmark_synthetic.py --small --fine-tune-iters 50 \\
        --output output/synthetic_benchmark_small   # adds the fine-tuned rows
    python tools/benchmark_synthetic.py --small --masks \\
        --output output/synthetic_benchmark_small   # adds the mask rows
    python tools/benchmark_synthetic.py --small --fvlm \\
        --output output/synthetic_benchmark_small   # adds the F-VLM rows
    python tools/benchmark_synthetic.py --output output/synthetic_benchmark
    python tools/benchmark_synthetic.py --small --seeds 3 --output output/small3  # mean ± s.e.
    python tools/benchmark_synthetic.py --small --fine-tune-iters 50 --no-novel-captions \\
        --output output/nonovel
    python tools/benchmark_synthetic.py --small --data my_dataset --output output/mine \\
        --train-json train.json --train-images imgs --val-json val.json --val-images imgs \\
        --split split.json --captions captions.csv --caption-column caption --csv-separator ,
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import fields, replace

from ovdet.cli.common import add_common_arguments, cli_entry, log_to_file, setup_logging
from ovdet.ovbench.data import BenchmarkData
from ovdet.utils.errors import ConfigError

__all__ = ["build_parser", "main"]

logger = logging.getLogger("ovdet.ovbench")

_DATA_HELP = {
    "train_json": "training annotations, COCO instances JSON",
    "train_images": "folder of the training images' file_name paths",
    "val_json": "validation annotations, COCO instances JSON",
    "val_images": "folder of the validation images' file_name paths",
    "split": "base/novel split: JSON/YAML with 'base' and 'novel' name lists, or 'ovcoco'",
    "captions": "image-caption CSV for CLIP pre-training (image paths relative to its folder)",
    "val_captions": "labelled crops CSV (image and label columns) for CLIP's zero-shot accuracy; "
    "if the file does not exist, CLIP classifies the validation boxes instead",
    "weak_labels": "image-labelled training data without boxes (COCO JSON with pos_category_ids, "
    "COCO captions JSON or caption CSV) for the image-label rows; skipped if the file does not "
    "exist",
    "weak_captions": "captions of image-labelled images (COCO captions JSON or caption CSV) for "
    "the caption-loss row; skipped if the file does not exist",
    "weak_images": "folder of the image-labelled files' image paths",
    "image_column": "CSV column of image paths",
    "caption_column": "CSV column of captions",
    "label_column": "CSV column of class names (in --val-captions)",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Run the open-vocabulary benchmark end to end, with baselines, on the "
        "synthetic dataset or on your own.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    p.add_argument(
        "--output",
        default="output/synthetic_benchmark",
        help="folder for the models, results.json/results.md, pictures and log.txt "
        "(default: output/synthetic_benchmark)",
    )
    p.add_argument(
        "--small",
        action="store_true",
        help="the small size, the quick start: the detectors trained from scratch, in about 3 "
        "minutes on 2 CPU cores (--fine-tune-iters 50 adds the fine-tuned rows); without it, the "
        "default size: every row, about 18 minutes",
    )
    p.add_argument(
        "--data",
        metavar="DIR",
        default=None,
        help="run on this COCO-format dataset instead of generating the synthetic one",
    )
    defaults = BenchmarkData(root=".")
    layout = p.add_argument_group(
        "dataset layout (with --data; paths relative to DIR; defaults: the synthetic layout)"
    )
    for name, text in _DATA_HELP.items():
        default = getattr(defaults, name)
        layout.add_argument(
            f"--{name.replace('_', '-')}", default=default, help=f"{text} (default: {default})"
        )
    layout.add_argument(
        "--csv-separator",
        default="\\t",
        help="the CSVs' column separator; '\\\\t' (a backslash and t) means a tab (default: tab)",
    )
    p.add_argument(
        "--no-novel-captions",
        action="store_true",
        help="synthetic data whose CLIP captions never name a novel class, so that image labels "
        "are the only source of the novel names (without --data)",
    )
    p.add_argument(
        "--clip",
        default=None,
        metavar="SPEC",
        help="use this CLIP (e.g. local-dir:DIR) instead of pre-training one on the captions",
    )
    p.add_argument(
        "--iters",
        type=int,
        default=None,
        help="iterations of every detector trained from scratch (closed-set, ViLD-text, "
        "ViLD-text + ViLD-image; default: the size's)",
    )
    p.add_argument(
        "--fine-tune-iters",
        type=int,
        default=None,
        help="iterations of the detectors that fine-tune a box-trained one: the image-label "
        "rows and their controls; 0 leaves them out (default: the size's: 0 "
        "with --small, 200 without; after --iters; --small --fine-tune-iters 50 adds them in "
        "about 1.5 minutes more on 2 CPU cores, reusing a finished --small run in --output)",
    )
    p.add_argument(
        "--masks",
        action="store_true",
        help="also train ViLD-text + ViLD-image with a class-agnostic mask head (MODEL.MASK_ON) "
        "on the boxes and masks of the base classes, and report its box and mask AP50 (base / "
        "novel / all), its target (novel mask AP50 >= 0.8 x its novel box AP50) and its "
        "inference time with masks as a ratio to boxes only (the same weights, the validation "
        "images); reuses a finished run in --output (the synthetic data has masks; --data needs "
        "a segmentation in every annotation)",
    )
    p.add_argument(
        "--fvlm",
        action="store_true",
        help="also train F-VLM: the run's pre-trained CLIP (a ResNet CLIP) frozen as the "
        "backbone with a trained FPN and heads on the base boxes; report its rows without and "
        "with CLIP's scores of its regions pooled from that backbone (no crops), its targets "
        "(novel AP50 >= ViLD-text + ViLD-image with crop rescoring; inference time with CLIP "
        "scores <= 1.2 x without) and crop rescoring's time ratio in the same run; reuses a "
        "finished run in --output",
    )
    p.add_argument(
        "--clip-epochs",
        type=int,
        default=None,
        help="CLIP pre-training epochs (default: the size's)",
    )
    p.add_argument(
        "--clip-batch-size",
        type=int,
        default=None,
        help="CLIP pre-training batch size, at most the number of captions (default: the size's)",
    )
    p.add_argument(
        "--picture-thresh",
        type=float,
        default=None,
        help="least score of the detections counted and drawn at the end (default: the one "
        "with the best F1 of all detections on the validation images)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed of every stage (default: 0)")
    p.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="train and evaluate every detector with N seeds (--seed, --seed + 1, ...) on the "
        "data and CLIP of --seed, and report each row as the mean ± standard error over them "
        "(targets judged on the means); the first seed's detectors in --output (a finished "
        "one-seed run there is reused), the others' in OUTPUT/seed_S (default: 1)",
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument(
        "--workers",
        type=int,
        default=0,
        help="processes that train and evaluate detectors side by side (default: 0, two on a CPU "
        "with 2 or more cores, one on CUDA; 1 trains one after another, with progress bars)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch CPU threads of each process (default: 0, the cores shared out among --workers)",
    )
    add_common_arguments(p)
    p.add_argument(
        "opts",
        nargs=argparse.REMAINDER,
        metavar="KEY VALUE",
        help="config overrides for every detector, e.g. INPUT.MIN_SIZE_TEST 256",
    )
    return p


def _dataset(args) -> BenchmarkData | None:
    if args.data is None:
        return None
    separator = "\t" if args.csv_separator in ("\\t", "tab") else args.csv_separator
    values = {f.name: getattr(args, f.name) for f in fields(BenchmarkData) if f.name in _DATA_HELP}
    return BenchmarkData(root=args.data, separator=separator, **values)


def _size(args):
    from ovdet.ovbench.plan import DETECTORS, SIZES

    name = "small" if args.small else "default"
    spec = SIZES[name]
    if args.no_novel_captions and args.data is not None:
        raise ConfigError(
            "--no-novel-captions changes the synthetic data; it cannot be used with --data"
        )
    for flag in ("iters", "clip_epochs", "clip_batch_size"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise ConfigError(f"--{flag.replace('_', '-')} must be at least 1")
    if args.fine_tune_iters is not None and args.fine_tune_iters < 0:
        raise ConfigError("--fine-tune-iters must be at least 0 (0: leave those rows out)")
    size = spec
    if args.iters is not None:
        size = size.with_iters(args.iters)
    if args.fine_tune_iters is not None:
        size = size.with_fine_tuning(args.fine_tune_iters)
    changes = {}
    if args.clip_epochs is not None:
        changes["clip_epochs"] = args.clip_epochs
    if args.clip_batch_size is not None:
        changes["clip_batch_size"] = args.clip_batch_size
    if args.picture_thresh is not None:
        changes["picture_thresh"] = args.picture_thresh
    if args.masks:
        changes["masks"] = True
    if args.fvlm:
        changes["fvlm"] = True
    if args.no_novel_captions:
        changes["data"] = {**spec.data, "novel_captions": False}
    if changes:
        size = replace(size, **changes)
    if args.no_novel_captions and not any(size.trains(d) for d in DETECTORS if d.weak):
        raise ConfigError(
            "--no-novel-captions measures the row ViLD-text + image labels, which this size "
            "leaves out: add "
            "--fine-tune-iters N (e.g. 50 with --small)"
        )
    return name if size is spec else size  # a size flag given: the size itself


@cli_entry
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    import torch

    from ovdet.ovbench.report import format_results
    from ovdet.ovbench.run import run_synthetic_benchmark
    from ovdet.utils.io import check_writable_dir

    if args.workers < 0 or args.threads < 0:
        raise ConfigError("--workers and --threads must be positive (0: the default)")
    if args.seeds < 1:
        raise ConfigError("--seeds must be at least 1")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    log_to_file(check_writable_dir(args.output))
    report = run_synthetic_benchmark(
        args.output,
        size=_size(args),
        seed=args.seed,
        device=args.device,
        progress=not args.no_progress,
        data=_dataset(args),
        clip=args.clip,
        detector_opts=tuple(args.opts),
        workers=args.workers or None,
        threads=args.threads or None,
        seeds=args.seeds,
    )
    print(format_results(report))
    total = sum(v for k, v in report["seconds"].items() if not k.startswith("total"))
    seconds = {k: (round(v) if v == v else None) for k, v in report["seconds"].items()}
    print(f"stage times (s): {seconds}; sum {total:.0f} s")
    print(f"pictures (novel classes marked *): {report['pictures']}")
    return 0

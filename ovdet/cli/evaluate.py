"""``ovdet-evaluate``: base / novel / all box AP of COCO-format detections.

Examples::

    python tools/evaluate.py --gt instances_val2017.json --split ovcoco \\
        --results detections.json --output metrics.json
    python tools/evaluate.py --gt lvis_v1_val.json --results detections.json   # APr etc.
    python tools/evaluate.py --gt instances_val2017.json --split ovcoco \\
        --checkpoint model.pth --image-root val2017/
    # any checkpoint ovdet writes (a closed-set baseline too), any method of the benchmark table
    python tools/evaluate.py --gt val.json --image-root images/ --split split.json \\
        --checkpoint output/vild/model_final.pt --clip-rescoring       # or --clip-on-proposals
    # OWLv2 from the Hugging Face hub on the same images (pip install 'ovdet[hf]')
    python tools/evaluate.py --gt val.json --image-root images/ --split split.json \\
        --detector hf:google/owlv2-base-patch16-ensemble --score-thresh 0.001
    # a category given by image exemplars (lines "name=image.jpg:x,y,w,h") instead of text
    python tools/evaluate.py --gt val.json --image-root images/ --split split.json \\
        --checkpoint output/vild/model_final.pt --exemplar-file exemplars.txt
    # ... the same with OWLv2 (an exemplar class queried by its boxes' box queries)
    python tools/evaluate.py --gt val.json --image-root images/ --split split.json \
        --detector hf:google/owlv2-base-patch16-ensemble --exemplar-file exemplars.txt
    # CLIP's zero-shot accuracy on the ground-truth boxes (cropped as the ViLD teacher does)
    python tools/evaluate.py --gt val.json --image-root images/ --split split.json \\
        --clip-zero-shot local-dir:output/clip/model

The table goes to stdout, the metrics (optionally) to a JSON file, the log to stderr (and to
log.txt next to --output). Bad input ends the program with one ``error: ...`` line on stderr and
exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Sequence

from ovdet.cli.checks import check_fraction, check_output_file
from ovdet.cli.common import add_common_arguments, close_log_file, log_to_file, setup_logging
from ovdet.cli.exemplars import (
    add_exemplar_arguments,
    exemplar_overrides,
    exemplar_specs_from_args,
)
from ovdet.evaluation import evaluate_coco, evaluate_lvis, format_table, is_lvis
from ovdet.evaluation.ground_truth import load_ground_truth
from ovdet.utils.errors import OvdetError, ResultsError, VocabularyError
from ovdet.utils.io import atomic_write_json
from ovdet.utils.json_input import read_json_file

__all__ = ["build_parser", "main"]

logger = logging.getLogger(__name__)

EXIT_BAD_INPUT = 2


class _UsageError(Exception):
    """A bad combination of command-line arguments."""


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser of ``ovdet-evaluate``."""
    parser = argparse.ArgumentParser(
        description="Box AP of COCO-format detections on base, novel and all categories "
        "(OV-COCO), or AP / APr / APc / APf on LVIS; mask AP too when every detection has a "
        "segmentation (RLE or polygons).",
    )
    parser.add_argument(
        "--gt",
        required=True,
        metavar="JSON",
        help="ground-truth annotations in COCO or LVIS format",
    )
    parser.add_argument(
        "--split",
        default=None,
        metavar="SPEC",
        help="base/novel split: 'ovcoco', 'lvis' (rare categories are novel), or a JSON/YAML "
        "file with 'base' and 'novel' name lists (default: 'lvis' for LVIS annotations, "
        "otherwise every category is base)",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--results",
        metavar="JSON",
        help="detections: a COCO results file, a JSON list of "
        "{image_id, category_id, bbox: [x, y, w, h], score} (and segmentation: an RLE or "
        "polygons, for mask AP)",
    )
    source.add_argument(
        "--checkpoint",
        metavar="PATH",
        help="evaluate this model checkpoint (open-vocabulary or closed-set, as tools/train.py "
        "writes them): run it on the --gt images first",
    )
    source.add_argument(
        "--detector",
        metavar="hf:ID",
        help="evaluate a published detector run by transformers (OWL-ViT, OWLv2): a hub id, "
        "hf:google/owlv2-base-patch16-ensemble, or hf:DIR; run on the --gt images first "
        "(needs pip install 'ovdet[hf]')",
    )
    source.add_argument(
        "--clip-zero-shot",
        metavar="SPEC",
        help="instead of detections: the top-1 accuracy of this CLIP (e.g. local-dir:DIR, "
        "ViT-B-32:openai) classifying the --gt boxes among all --gt categories",
    )
    method = parser.add_mutually_exclusive_group()
    method.add_argument(
        "--clip-rescoring",
        action="store_true",
        help="with --checkpoint: CLIP rescoring (ViLD-text+CLIP: detector and CLIP crop scores "
        "combined)",
    )
    method.add_argument(
        "--clip-on-proposals",
        action="store_true",
        help="with --checkpoint: its RPN proposals classified by its CLIP alone (a baseline)",
    )
    parser.add_argument("--ensemble", action="store_true", help=argparse.SUPPRESS)  # renamed
    parser.add_argument(
        "--score-thresh",
        type=float,
        default=None,
        help="with --checkpoint or --detector: least score of the detections evaluated "
        "(default: the checkpoint's MODEL.ROI_HEADS.SCORE_THRESH_TEST, 0.1 for --detector; the "
        "benchmark uses 0.001)",
    )
    parser.add_argument(
        "--templates",
        default="a",
        help="with --clip-zero-shot: prompt templates, 'a', 'vild', 'openai' or a file "
        "(default: a)",
    )
    parser.add_argument(
        "--image-root",
        metavar="DIR",
        help="folder of the --gt images' file_name paths (needed with --checkpoint and --detector)",
    )
    parser.add_argument(
        "--device",
        default=None,
        help="torch device for --checkpoint and --detector, e.g. cpu or cuda:0 (default: cuda "
        "if available)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=2,
        metavar="N",
        help="images per forward pass with --checkpoint and --detector (default: %(default)s)",
    )
    parser.add_argument(
        "--output",
        metavar="JSON",
        help="also write the metrics to this JSON file (written atomically), and the log to "
        "log.txt in its folder",
    )
    add_exemplar_arguments(parser, file=True)
    add_common_arguments(parser)
    return parser


def _predict(args: argparse.Namespace) -> list[dict]:
    """Detections of ``--checkpoint`` or ``--detector`` on the ``--gt`` images."""
    flag = "--detector" if args.detector is not None else "--checkpoint"
    if args.image_root is None:
        raise _UsageError(f"{flag} needs --image-root")
    if args.batch_size < 1:
        raise _UsageError("--batch-size must be at least 1")
    if args.detector is not None:
        return _predict_hf(args)
    from ovdet.ovbench.predict import predict_with_method

    method = "detector"
    if args.clip_rescoring:
        method = "clip_rescoring"
    elif args.clip_on_proposals:
        method = "clip_on_proposals"
    return predict_with_method(
        args.checkpoint, args.gt, args.image_root, method, _device(args), args.batch_size,
        score_thresh=args.score_thresh, progress=not args.no_progress,
        exemplars=exemplar_specs_from_args(args), overrides=exemplar_overrides(args),
    )  # fmt: skip


def _predict_hf(args: argparse.Namespace) -> list[dict]:
    """Detections of a transformers detector (``--detector hf:...``) on the ``--gt`` images."""
    from ovdet.cli.checks import check_hf_detector_args
    from ovdet.ovbench.predict import predict_with_detector
    from ovdet.owl import OwlDetector

    check_hf_detector_args(args.detector, exemplar_source=args.exemplar_source)
    if not Path(args.gt).is_file():  # before loading a model
        raise _UsageError(f"--gt {args.gt} does not exist")
    specs = exemplar_specs_from_args(args)  # every exemplar read and checked before loading
    detector = OwlDetector.from_spec(
        args.detector, device=_device(args), overrides=exemplar_overrides(args)
    )
    if specs:
        detector = _ExemplarCategories(detector, specs)
    return predict_with_detector(
        detector, args.gt, args.image_root, args.batch_size, score_thresh=args.score_thresh,
        progress=not args.no_progress,
    )  # fmt: skip


class _ExemplarCategories:
    """A detector whose vocabulary, set from the ground truth's category names, gives the
    categories named by exemplar specs by their exemplars (``name=``: instead of their text,
    ``name+=``: beside it), as ``--checkpoint`` does (:func:`~ovdet.ovbench.predict.
    predict_with_method`); everything else is the detector's.

    Args:
        detector: an :class:`~ovdet.owl.OwlDetector`.
        specs: the exemplar classes, each naming a category of the ground truth.
    """

    def __init__(self, detector, specs: Sequence) -> None:
        self._detector = detector
        self._specs = list(specs)

    def set_classes(self, class_names: Sequence[str]) -> None:
        from ovdet.structures.vocabulary import Vocabulary, normalize_name

        known = {normalize_name(n) for n in class_names}
        unknown = [s.name for s in self._specs if normalize_name(s.name) not in known]
        if unknown:
            raise VocabularyError(
                f"exemplar class {unknown[0]!r} is not a category of the ground truth"
            )
        self._detector.set_classes(Vocabulary.from_names(class_names).with_exemplars(self._specs))

    def __getattr__(self, name: str):
        return getattr(self._detector, name)


def _device(args: argparse.Namespace) -> str:
    if args.device is not None:
        return args.device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _clip_zero_shot(args: argparse.Namespace) -> dict:
    """CLIP's zero-shot accuracy on the ``--gt`` boxes; prints its table."""
    if args.image_root is None:
        raise _UsageError("--clip-zero-shot needs --image-root")
    from ovdet.clip import load_clip
    from ovdet.ovbench.clip_zero_shot import box_zero_shot_accuracy

    clip = load_clip(args.clip_zero_shot, _device(args))
    accuracy = box_zero_shot_accuracy(
        clip, args.gt, args.image_root, args.split, templates=args.templates,
        progress=not args.no_progress,
    )  # fmt: skip
    print(f"CLIP zero-shot top-1 accuracy on the ground-truth boxes of {args.gt}")
    print(f"{'group':<8}{'accuracy':>10}")
    for group in ("all", "base", "novel"):
        print(f"{group:<8}{accuracy[group] * 100:>10.1f}")
    print(f"({accuracy['num_crops']} boxes)")
    return {"clip": args.clip_zero_shot, "zero_shot_accuracy": accuracy}


def _is_main_process() -> bool:
    from ovdet.tv.engine.distributed import is_main_process

    return is_main_process()


def _run(args: argparse.Namespace) -> None:
    if args.ensemble:
        raise _UsageError("--ensemble was renamed: use --clip-rescoring")
    check_fraction("--score-thresh", args.score_thresh)
    if args.output:  # fails before any work where it could not be written
        check_output_file("--output", args.output, "metrics.json")
        if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, the main process writes it
            log_to_file(Path(args.output).parent)
    if (args.clip_rescoring or args.clip_on_proposals) and args.checkpoint is None:
        raise _UsageError("--clip-rescoring and --clip-on-proposals need --checkpoint")
    exemplars = args.exemplar or args.exemplar_file
    if exemplars and args.checkpoint is None and args.detector is None:
        raise _UsageError("exemplars need --checkpoint or --detector")
    if args.score_thresh is not None and args.checkpoint is None and args.detector is None:
        raise _UsageError("--score-thresh needs --checkpoint or --detector")
    if args.clip_zero_shot is not None:
        metrics = _clip_zero_shot(args)
        if args.output:
            atomic_write_json(metrics, args.output)
            logger.info("Wrote metrics to %s", args.output)
        return
    dataset = load_ground_truth(args.gt)
    results = args.results if args.results is not None else _predict(args)
    if args.checkpoint is not None and not _is_main_process():
        return  # under torchrun: this process ran its share of the images; rank 0 reports
    if isinstance(results, str):
        results = read_json_file(results, "results file", ResultsError)
    evaluate = evaluate_lvis if args.split == "lvis" or is_lvis(dataset) else evaluate_coco
    metrics = evaluate(dataset, results, split=args.split)
    print(format_table(metrics))
    if _has_masks(results):
        metrics["segm"] = evaluate(dataset, results, split=args.split, iou_type="segm")
        print(format_table(metrics["segm"]))
    if args.output:
        atomic_write_json(metrics, args.output)
        logger.info("Wrote metrics to %s", args.output)


def _has_masks(results) -> bool:
    """Whether results are a non-empty list of detections that all carry a segmentation."""
    return (
        isinstance(results, list)
        and bool(results)
        and all(isinstance(d, dict) and "segmentation" in d for d in results)
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 on success, 2 on bad input.
    """
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    try:
        _run(args)
    except (OvdetError, OSError, _UsageError) as e:
        message = str(e).replace("\n", " ")
        print(f"error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    finally:
        close_log_file()  # this run's log.txt is complete
    return 0

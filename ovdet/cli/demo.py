"""``tools/demo.py``: a web demo (Gradio) of a checkpoint: drop pictures, type names, look.

Serves one page on http://127.0.0.1:7860 (``--host``/``--port`` to change): upload one or more
images or pick an example, type class names, choose the prompt templates, the score threshold and
CLIP rescoring; see the drawn images (novel classes marked ``*``), a table of detections and
the results JSON (the format of ``tools/infer.py``) to download. A video tab does the same for a
video sampled at a frame rate (as ``tools/infer.py --input clip.mp4 --fps``): the drawn video,
the detections of each sampled frame with its time, the results JSON. Bad input (a file that is
not an image or not a whole video, an empty or duplicated vocabulary) shows the command line's
one-line message in the page; the app keeps serving. ``--search-index`` (an index of
``tools/search.py index``) adds a text-search tab: the top hits of a query as a contact sheet and
a table.

Examples::

    make demo                # trains output/synthetic_benchmark/vild/model_final.pt, then:
    python tools/demo.py     # serves it, with the benchmark's 64 classes and held-out images
    python tools/demo.py --checkpoint output/model_final.pt --classes "kite,umbrella" \\
        --examples photos/ --host 0.0.0.0 --port 8080
    python tools/demo.py --detector hf:google/owlv2-base-patch16-ensemble \\
        --classes "kite,umbrella" --examples photos/
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ovdet.cli.common import add_common_arguments, cli_entry, setup_logging
from ovdet.utils.errors import CheckpointError, ConfigError

__all__ = ["DEFAULT_CHECKPOINT", "build_parser", "main"]

logger = logging.getLogger("ovdet.demo")

DEFAULT_CHECKPOINT = "output/synthetic_benchmark/vild/model_final.pt"
MAKE_DEFAULT_CHECKPOINT = "make demo (or: python tools/benchmark_synthetic.py --small)"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="A web demo (Gradio) of an open-vocabulary detector checkpoint.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    p.add_argument(
        "--checkpoint",
        default=DEFAULT_CHECKPOINT,
        help=f"checkpoint written by tools/train.py (default: {DEFAULT_CHECKPOINT}, the one "
        "`make demo` trains)",
    )
    p.add_argument(
        "--detector",
        default=None,
        metavar="hf:ID",
        help="serve a published detector run by transformers instead of --checkpoint: OWL-ViT "
        "or OWLv2 (hf:google/owlv2-base-patch16-ensemble) or a save_pretrained folder (hf:DIR); "
        "needs --classes and pip install 'ovdet[hf]'",
    )
    p.add_argument(
        "--classes",
        default=None,
        help='initial vocabulary in the page: "kite,umbrella", a text file (one class per line, '
        "synonyms after commas) or a COCO JSON (default: for the synthetic benchmark's "
        "checkpoint, its 64 classes; else the checkpoint's training classes)",
    )
    p.add_argument(
        "--examples",
        default=None,
        help="example images offered in the page: a folder or a glob pattern (default: the "
        "synthetic benchmark's held-out images, when serving its checkpoint)",
    )
    p.add_argument(
        "--search-index",
        default=None,
        help="an index written by tools/search.py index: adds a text-search tab (default: none)",
    )
    p.add_argument(
        "--score-thresh",
        type=float,
        default=None,
        help="initial score threshold (default: the model's MODEL.ROI_HEADS.SCORE_THRESH_TEST)",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    p.add_argument(
        "--clip",
        default=None,
        help="CLIP spec replacing the checkpoint's, e.g. ViT-B-32:/path/weights.pt",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default: 127.0.0.1, this machine only; 0.0.0.0 for every interface)",
    )
    p.add_argument("--port", type=int, default=7860, help="port to serve on (default: 7860)")
    p.add_argument(
        "--max-images", type=int, default=16, help="most images per request (default: 16)"
    )
    p.add_argument(
        "--max-video-frames",
        type=int,
        default=300,
        help="most sampled frames per video request; a longer video is refused with a message "
        "(lower the frame rate) (default: 300)",
    )
    add_common_arguments(p)
    return p


def _example_images(spec: str | None) -> list[Path]:
    if not spec:
        return []
    from ovdet.cli.infer import collect_images

    return collect_images(spec)


def _benchmark_defaults(checkpoint: Path) -> tuple[str | None, str | None]:
    """(classes, examples) of a checkpoint inside a synthetic benchmark's output folder."""
    root = checkpoint.resolve().parent.parent
    classes = root / "data" / "annotations" / "instances_val.json"
    examples = root / "held_out_images"
    return (
        str(classes) if classes.is_file() else None,
        str(examples) if examples.is_dir() and any(examples.iterdir()) else None,
    )


@cli_entry
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    if not 0 < args.port < 65536:
        raise ConfigError(f"--port {args.port} is not a port number (1-65535)")
    if args.max_images < 1:
        raise ConfigError("--max-images must be at least 1")
    if args.max_video_frames < 1:
        raise ConfigError("--max-video-frames must be at least 1")
    if args.score_thresh is not None and not 0.0 <= args.score_thresh <= 1.0:
        raise ConfigError(f"--score-thresh {args.score_thresh} is not between 0 and 1")
    try:
        import gradio  # noqa: F401
    except ImportError as e:
        raise ConfigError(f"the web demo needs gradio ({e}): pip install 'ovdet[demo]'") from None
    from ovdet.demo import DemoModel, build_app, format_vocabulary, load_search_index
    from ovdet.structures.vocabulary import Vocabulary

    if args.detector is not None:
        return _serve_hf_detector(args)
    checkpoint = Path(args.checkpoint)
    if not checkpoint.is_file():
        hint = (
            f"; make it with: {MAKE_DEFAULT_CHECKPOINT}"
            if args.checkpoint == DEFAULT_CHECKPOINT
            else ""
        )
        raise CheckpointError(f"checkpoint {checkpoint} does not exist{hint}")
    bench_classes, bench_examples = _benchmark_defaults(checkpoint)
    classes = args.classes or bench_classes
    vocabulary = Vocabulary.parse(classes) if classes else None  # bad ones fail before loading
    examples = _example_images(args.examples or bench_examples)
    logger.info("loading %s", checkpoint)
    model = DemoModel.from_checkpoint(checkpoint, device=args.device, clip=args.clip)
    if vocabulary is None:
        if not model.detector.train_class_names:
            raise CheckpointError(f"{checkpoint} names no training classes; pass --classes")
        vocabulary = Vocabulary.from_names(model.detector.train_class_names)
    index = load_search_index(args.search_index, model) if args.search_index else None
    app = build_app(
        model,
        format_vocabulary(vocabulary),
        examples,
        score_thresh=args.score_thresh,
        max_images=args.max_images,
        progress=not args.no_progress,
        index=index,
        max_video_frames=args.max_video_frames,
    )
    _launch(app, args, checkpoint, examples)
    return 0


def _serve_hf_detector(args) -> int:
    """Serve ``--detector hf:...`` (OWL-ViT / OWLv2) with the ``--classes`` vocabulary."""
    from ovdet.cli.checks import check_hf_detector_args
    from ovdet.demo import DemoModel, build_app, format_vocabulary, load_search_index
    from ovdet.structures.vocabulary import Vocabulary

    check_hf_detector_args(args.detector, clip=args.clip)
    if args.checkpoint != DEFAULT_CHECKPOINT:
        raise ConfigError("give --checkpoint or --detector, not both")
    if not args.classes:
        raise ConfigError(
            f"--detector {args.detector} needs --classes (the page's first vocabulary)"
        )
    vocabulary = Vocabulary.parse(args.classes)  # a bad one fails before loading
    examples = _example_images(args.examples)
    logger.info("loading %s", args.detector)
    model = DemoModel.from_hf_detector(args.detector, device=args.device)
    index = load_search_index(args.search_index, model) if args.search_index else None
    app = build_app(
        model, format_vocabulary(vocabulary), examples, score_thresh=args.score_thresh,
        max_images=args.max_images, progress=not args.no_progress, index=index,
        max_video_frames=args.max_video_frames,
    )  # fmt: skip
    _launch(app, args, args.detector, examples)
    return 0


def _launch(app, args, served, examples: list[Path]) -> None:
    logger.info("serving %s on http://%s:%d (Ctrl+C stops)", served, args.host, args.port)
    app.launch(
        server_name=args.host,
        server_port=args.port,
        allowed_paths=sorted({str(p.resolve().parent) for p in examples}),
        quiet=not args.verbose,
    )

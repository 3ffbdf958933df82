"""``tools/export_onnx.py``: the detector and CLIP's text tower as ONNX graphs, vocabulary open.

Examples::

    python tools/export_onnx.py --checkpoint output/model_final.pt --output export/
    # then, without the checkpoint:
    python -c "from ovdet.export.runtime import OnnxDetector; \\
        print(OnnxDetector('export/').predict('street.jpg', classes='kite,umbrella'))"
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ovdet.cli.common import add_common_arguments, cli_entry, setup_logging
from ovdet.utils.errors import ConfigError

logger = logging.getLogger("ovdet.export_onnx")


def build_parser() -> argparse.ArgumentParser:
    from ovdet.export.onnx import DEFAULT_OPSET

    p = argparse.ArgumentParser(
        description="Export a detector to ONNX with the vocabulary (text embeddings) as an input.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    p.add_argument("--checkpoint", required=True, help="checkpoint written by tools/train.py")
    p.add_argument("--output", required=True, help="the export folder (created)")
    p.add_argument(
        "--opset",
        type=int,
        default=DEFAULT_OPSET,
        help=f"ONNX opset, >= 16 (default {DEFAULT_OPSET})",
    )
    p.add_argument(
        "--clip", default=None, help="CLIP spec replacing the checkpoint's (same embedding size)"
    )
    p.add_argument(
        "--verify",
        default=None,
        metavar="CLASSES",
        help="after export, compare onnxruntime with PyTorch on a generated image for these "
        'classes (e.g. "cat,dog") and print the largest differences',
    )
    add_common_arguments(p)
    return p


def _verify(detector, out_dir: Path, classes: str) -> None:
    import numpy as np

    from ovdet.export.runtime import OnnxDetector

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (200, 260, 3), dtype=np.uint8)
    [ref] = detector.predict(image, classes=classes, score_thresh=0.0)
    [got] = OnnxDetector(out_dir, providers=["CPUExecutionProvider"]).predict(
        image, classes=classes, score_thresh=0.0
    )
    same = len(ref) == len(got) and bool((ref.labels == got.labels).all())
    diff = float(np.abs(ref.scores - got.scores).max()) if same and len(ref) else 0.0
    print(
        f"verify: {len(ref)} vs {len(got)} detections, same labels: {same}, "
        f"max score diff {diff:.2e}"
    )
    if not same:
        raise ConfigError("the ONNX graph disagrees with PyTorch; please report this")


@cli_entry
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    if args.opset < 16:
        raise ConfigError(
            f"--opset must be at least 16 (torchvision's roi_align), got {args.opset}"
        )
    from ovdet.api import OVDetector
    from ovdet.export.onnx import export_onnx
    from ovdet.utils.io import check_writable_dir

    out = check_writable_dir(args.output)
    detector = OVDetector.from_checkpoint(args.checkpoint, device="cpu", clip=args.clip)
    manifest = export_onnx(detector, out, args.opset)
    print(f"wrote {out}: {', '.join(manifest['files'])} (opset {manifest['opset']})")
    if args.verify:
        _verify(detector, out, args.verify)
    return 0

"""``tools/infer.py``: detect any classes in images with a trained checkpoint.

Examples::

    python tools/infer.py --checkpoint output/model_final.pt --classes "kite,umbrella" \\
        --input photos/ --output out/
    python tools/infer.py --checkpoint model.pt --classes classes.txt --input "img/*.jpg" \\
        --output out/ --score-thresh 0.3 --device cuda --batch-size 8
    # a model trained with detectron2 (tools/train_net.py; needs detectron2 installed)
    python tools/infer.py --d2-config configs/d2/ovcoco_vild_R50_FPN.yaml \\
        --weights output/d2/model_final.pth --classes "kite,umbrella" --input img/ --output out/
"""

from __future__ import annotations

import argparse
import glob
import logging
import sys
from pathlib import Path

from ovdet.cli.common import cli_entry, setup_logging
from ovdet.errors import CheckpointError, ConfigError, ImageError

logger = logging.getLogger("ovdet.infer")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Open-vocabulary detection: find the named classes in images.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    model = p.add_mutually_exclusive_group(required=True)
    model.add_argument("--checkpoint", help="checkpoint written by tools/train.py")
    model.add_argument(
        "--d2-config",
        help="a detectron2 config of ovdet.d2 (tools/train_net.py); needs detectron2 and --weights",
    )
    p.add_argument("--weights", default="", help="with --d2-config: the detectron2 .pth weights")
    p.add_argument(
        "--classes",
        required=True,
        help='vocabulary: "kite,umbrella", a text file (one class per line, synonyms after '
        "commas), or a COCO JSON (its categories)",
    )
    p.add_argument("--input", required=True, help="an image file, a folder, or a glob pattern")
    p.add_argument("--output", required=True, help="folder for drawn images and results.json")
    p.add_argument(
        "--score-thresh",
        type=float,
        default=None,
        help="minimum score (default: the model's MODEL.ROI_HEADS.SCORE_THRESH_TEST)",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--batch-size", type=int, default=1, help="images per forward pass")
    p.add_argument(
        "--clip",
        default=None,
        help="CLIP spec replacing the checkpoint's, e.g. ViT-B-32:/path/weights.pt",
    )
    p.add_argument(
        "--ensemble",
        action="store_true",
        help="ViLD-ensemble: combine detector scores with CLIP crop scores",
    )
    p.add_argument("--no-draw", action="store_true", help="write results.json only")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--verbose", action="store_true", help="debug logging")
    return p


def collect_images(spec: str) -> list[Path]:
    """Image paths from a file, a folder (sorted, non-recursive) or a glob."""
    from ovdet.data.image_io import IMAGE_EXTENSIONS

    path = Path(spec)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise ImageError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in folder {path}")
        return files
    if path.is_file():
        return [path]
    files = sorted(Path(p) for p in glob.glob(spec) if Path(p).is_file())
    if not files:
        raise ImageError(f"--input {spec} matches no image file")
    return files


def _load_d2(args, vocabulary):
    """A detectron2-trained model behind the same interface as :class:`OVDetector`."""
    if args.weights and not Path(args.weights).is_file():
        raise CheckpointError(f"--weights {args.weights} does not exist")
    try:
        from ovdet.d2.predictor import D2DetectorAdapter, OpenVocabularyD2Predictor
    except ImportError as e:
        raise ConfigError(
            f"--d2-config needs detectron2 ({e}); install it by its official guide"
        ) from None
    overrides = ["MODEL.OVDET.CLIP", args.clip] if args.clip else []
    if args.ensemble:
        overrides += ["MODEL.OVDET.ENSEMBLE.ENABLED", "True"]
    predictor = OpenVocabularyD2Predictor(
        args.d2_config, args.weights, classes=vocabulary, overrides=overrides,
        device=args.device, batch_size=args.batch_size,
    )  # fmt: skip
    return D2DetectorAdapter(predictor)


@cli_entry
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    if args.batch_size < 1:
        raise ConfigError("--batch-size must be at least 1")
    from tqdm import tqdm

    from ovdet.api import OVDetector
    from ovdet.data.image_io import read_image
    from ovdet.text import Vocabulary
    from ovdet.utils.io import atomic_write_json, check_writable_dir
    from ovdet.viz import draw_detections, save_image

    vocabulary = Vocabulary.parse(args.classes)  # bad vocabularies fail before any loading
    files = collect_images(args.input)
    out_dir = check_writable_dir(args.output)
    if args.d2_config:
        detector = _load_d2(args, vocabulary)
        max_load_pixels = detector.max_load_pixels
    else:
        detector = OVDetector.from_checkpoint(args.checkpoint, device=args.device, clip=args.clip)
        if args.ensemble:
            detector.enable_ensemble(True)
        detector.set_classes(vocabulary)
        max_load_pixels = detector.cfg.INPUT.MAX_LOAD_PIXELS

    results, failed = [], []
    bar = tqdm(total=len(files), desc="detect", disable=args.no_progress, unit="img")
    for start in range(0, len(files), args.batch_size):
        batch, arrays = [], []
        for path in files[start : start + args.batch_size]:
            try:
                arrays.append(read_image(path, max_load_pixels))
                batch.append(path)
            except ImageError as e:
                logger.warning("skipping %s", e)
                failed.append(str(path))
        if arrays:
            for path, array, det in zip(
                batch,
                arrays,
                detector.predict(arrays, score_thresh=args.score_thresh, batch_size=len(arrays)),
            ):
                for box, score, name in zip(det.boxes.tolist(), det.scores.tolist(), det.names):
                    x1, y1, x2, y2 = box
                    results.append(
                        {
                            "file_name": str(path),
                            "category": name,
                            "category_id": detector.class_names.index(name) + 1,
                            "bbox": [
                                round(x1, 2),
                                round(y1, 2),
                                round(x2 - x1, 2),
                                round(y2 - y1, 2),
                            ],
                            "score": round(float(score), 5),
                        }
                    )
                if not args.no_draw:
                    drawn = draw_detections(array, det.boxes, det.scores, det.names)
                    save_image(drawn, out_dir / f"{path.stem}_det.jpg")
        bar.update(len(files[start : start + args.batch_size]))
    bar.close()
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(detector.class_names)]
    atomic_write_json(
        {"categories": categories, "detections": results, "failed": failed},
        out_dir / "results.json",
    )
    done = len(files) - len(failed)
    print(
        f"{done} image(s) processed, {len(results)} detection(s), {len(failed)} skipped; "
        f"wrote {out_dir}"
    )
    if failed:
        print(f"warning: {len(failed)} image(s) could not be read: {failed[:3]}", file=sys.stderr)
    return 0 if done else 2

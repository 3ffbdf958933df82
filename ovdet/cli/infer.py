"""``tools/infer.py``: detect any classes in images with a trained checkpoint.

Examples::

    python tools/infer.py --checkpoint output/model_final.pt --classes "kite,umbrella" \\
        --input photos/ --output out/
    python tools/infer.py --checkpoint model.pt --classes classes.txt --input "img/*.jpg" \\
        --output out/ --score-thresh 0.3 --device cuda --batch-size 8
    # a model trained with detectron2 (tools/train_net.py; needs detectron2 installed)
    python tools/infer.py --d2-config configs/d2/ovcoco_vild_R50_FPN.yaml \\
        --weights output/d2/model_final.pth --classes "kite,umbrella" --input img/ --output out/
    # OWLv2 from the Hugging Face hub (downloaded once by transformers; pip install 'ovdet[hf]')
    python tools/infer.py --detector hf:google/owlv2-base-patch16-ensemble \\
        --classes "kite,umbrella" --input photos/ --output out/
    # ... with a class given by an exemplar box (its box query, as image-guided detection)
    python tools/infer.py --detector hf:google/owlv2-base-patch16-ensemble --classes "kite" \
        --exemplar "my mug=photos/mug.jpg:10,20,64,48" --input photos/ --output out/
    # auto-annotation: a COCO dataset and YOLO labels of the detections scoring >= 0.5
    python tools/infer.py --checkpoint model.pt --classes "kite,umbrella" --input img/ \\
        --output out/ --coco-out out/auto_labels.json --yolo-out out/labels --label-thresh 0.5
    # a video, sampled at 2 frames per second: per-frame detections and a drawn video
    python tools/infer.py --checkpoint model.pt --classes "kite" --input clip.mp4 --fps 2 \\
        --output out/
    # image exemplars: a class given by a box of a photo, beside text classes
    python tools/infer.py --checkpoint model.pt --classes "kite" --input img/ --output out/ \\
        --exemplar "my mug=photos/mug.jpg:10,20,64,48" --exemplar-source region
"""

from __future__ import annotations

import argparse
import glob
import logging
import sys
from pathlib import Path

from ovdet.cli.checks import check_fps, check_fraction, check_hf_detector_args, check_output_file
from ovdet.cli.common import add_common_arguments, cli_entry, log_to_file, setup_logging
from ovdet.cli.exemplars import add_exemplar_arguments, exemplar_overrides, vocabulary_from_args
from ovdet.utils.errors import CheckpointError, ConfigError, ImageError
from ovdet.video.io import VIDEO_EXTENSIONS

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
    model.add_argument(
        "--detector",
        metavar="hf:ID",
        help="a published detector run by transformers: OWL-ViT or OWLv2 from the Hugging Face "
        "hub (hf:google/owlv2-base-patch16-ensemble) or a save_pretrained folder (hf:DIR); "
        "needs pip install 'ovdet[hf]'",
    )
    p.add_argument("--weights", default="", help="with --d2-config: the detectron2 .pth weights")
    p.add_argument(
        "--classes",
        default=None,
        help='vocabulary: "kite,umbrella", a text file (one class per line, synonyms after '
        "commas; name=image:x,y,w,h lines give classes by image exemplars), or a COCO JSON "
        "(its categories); needed unless --exemplar gives every class",
    )
    add_exemplar_arguments(p)
    p.add_argument(
        "--input",
        required=True,
        help=f"an image file, a folder, a glob pattern, or a video ({', '.join(VIDEO_EXTENSIONS)})",
    )
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
        "--clip-rescoring",
        action="store_true",
        help="CLIP rescoring (ViLD-text+CLIP): combine detector scores with CLIP's scores of the "
        "box crops (MODEL.OVDET.CLIP_RESCORING)",
    )
    p.add_argument("--ensemble", action="store_true", help=argparse.SUPPRESS)  # renamed
    p.add_argument(
        "--coco-out",
        default=None,
        metavar="FILE",
        help="also write a COCO dataset of the detections scoring at least --label-thresh "
        "(images with sizes, categories = the vocabulary); trains with tools/train.py",
    )
    p.add_argument(
        "--yolo-out",
        default=None,
        metavar="DIR",
        help="also write YOLO labels (one <image>.txt per image, classes.txt) of the detections "
        "scoring at least --label-thresh",
    )
    p.add_argument(
        "--label-thresh",
        type=float,
        default=0.5,
        help="minimum score of a detection written by --coco-out / --yolo-out (default: 0.5)",
    )
    p.add_argument(
        "--save-embeddings",
        action="store_true",
        help="write the detections' region embeddings to embeddings.npy [N, D] beside "
        "results.json (row = the detection's embedding_index)",
    )
    p.add_argument(
        "--fps",
        type=float,
        default=1.0,
        help="video input: frames per second to detect on (default: 1; 0 = every frame)",
    )
    p.add_argument("--no-draw", action="store_true", help="write results.json only")
    add_common_arguments(p)
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
    overrides += exemplar_overrides(args)
    if args.clip_rescoring:
        overrides += ["MODEL.OVDET.CLIP_RESCORING.ENABLED", "True"]
    predictor = OpenVocabularyD2Predictor(
        args.d2_config, args.weights, classes=vocabulary, overrides=overrides,
        device=args.device, batch_size=args.batch_size,
    )  # fmt: skip
    return D2DetectorAdapter(predictor)


def _load_hf_detector(args):
    """An OWL-ViT / OWLv2 of transformers behind the same interface as :class:`OVDetector`."""
    from ovdet.owl import OwlDetector

    check_hf_detector_args(
        args.detector, clip=args.clip, clip_rescoring=args.clip_rescoring,
        exemplar_source=args.exemplar_source,
    )  # fmt: skip
    return OwlDetector.from_spec(
        args.detector, device=args.device, overrides=exemplar_overrides(args)
    )


def _check_args(args) -> None:
    if args.ensemble:
        raise ConfigError("--ensemble was renamed: use --clip-rescoring")
    if args.batch_size < 1:
        raise ConfigError("--batch-size must be at least 1")
    check_fraction("--score-thresh", args.score_thresh)
    check_fraction("--label-thresh", args.label_thresh)
    check_fps("--fps", args.fps)


def _check_outputs(args) -> Path:
    """Every output path, before the work (a folder where a file goes, unwritable, full);
    returns the --output folder."""
    from ovdet.utils.io import check_writable_dir

    out_dir = check_writable_dir(args.output)
    for name in ("results.json", "embeddings.npy") if args.save_embeddings else ("results.json",):
        if (out_dir / name).is_dir():
            raise ConfigError(
                f"--output {out_dir} holds a folder {name}; remove it or choose another --output"
            )
    if args.coco_out:
        coco = check_output_file("--coco-out", args.coco_out, "auto_labels.json")
        if coco.resolve() == (out_dir / "results.json").resolve():
            raise ConfigError(f"--coco-out {coco} would overwrite results.json; give another name")
    if args.yolo_out:
        check_writable_dir(args.yolo_out)
    return out_dir


def _join_torchrun(args, video: bool) -> bool:
    """Under torchrun: join the process group and run on this process's device (each process
    detects its share of the images, rank 0 writes results.json). Returns whether it did."""
    import torch

    from ovdet.tv.engine import distributed as comm

    if not comm.init_distributed(torch.device(args.device).type):
        return False
    if video or args.coco_out or args.yolo_out or args.save_embeddings:
        raise ConfigError(
            "under torchrun, tools/infer.py detects in image files only; run a video, "
            "--coco-out, --yolo-out or --save-embeddings in one process"
        )
    args.device = str(comm.local_device(args.device))
    return True


def _load_detector(args, vocabulary):
    """(detector with the API of OVDetector, max pixels of a loaded image)."""
    from ovdet.api import OVDetector

    if args.d2_config:
        detector = _load_d2(args, vocabulary)
        return detector, detector.max_load_pixels
    if args.detector:
        detector = _load_hf_detector(args)
        detector.set_classes(vocabulary)
        return detector, detector.cfg.INPUT.MAX_LOAD_PIXELS
    detector = OVDetector.from_checkpoint(
        args.checkpoint, device=args.device, clip=args.clip, overrides=exemplar_overrides(args)
    )
    if args.clip_rescoring:
        detector.enable_clip_rescoring(True)
    detector.set_classes(vocabulary)
    return detector, detector.cfg.INPUT.MAX_LOAD_PIXELS


def _detect_video(args, detector, reader, out_dir: Path, embeddings) -> tuple[list, list, dict]:
    """Detections on the sampled frames of a video (and the drawn video)."""
    from ovdet.video.detection import detect_video

    found = detect_video(
        detector, reader, str(args.input),
        None if args.no_draw else out_dir / f"{Path(args.input).stem}_det.mp4",
        score_thresh=args.score_thresh, predict_kwargs=_embedding_kwargs(args),
        embeddings=embeddings, progress=not args.no_progress,
    )  # fmt: skip
    return found.detections, found.frames, found.video


def _detect_images(args, detector, files, max_load_pixels, out_dir, embeddings, sinks):
    """Detections on image files; returns (results, images, failed)."""
    from tqdm import tqdm

    from ovdet.data.image_io import load_image
    from ovdet.structures.detections import detection_records
    from ovdet.structures.masks import resize_masks
    from ovdet.utils.visualizer import draw_detections, save_image

    results, images, failed = [], [], []
    bar = tqdm(total=len(files), desc="detect", disable=args.no_progress, unit="img")
    for start in range(0, len(files), args.batch_size):
        batch, loaded = [], []
        for path in files[start : start + args.batch_size]:
            try:
                loaded.append(load_image(path, max_load_pixels))
                batch.append(path)
            except ImageError as e:
                logger.warning("skipping %s", e)
                failed.append(str(path))
        if loaded:
            dets = detector.predict(
                loaded, score_thresh=args.score_thresh, batch_size=len(loaded),
                **_embedding_kwargs(args),
            )  # fmt: skip
            for path, image, det in zip(batch, loaded, dets):
                width, height = image.width, image.height  # the original's, as the boxes
                image_id = len(images) + 1
                images.append(
                    {"id": image_id, "file_name": str(path), "width": width, "height": height}
                )
                rows = embeddings.add(det.embeddings) if embeddings is not None else None
                results += detection_records(
                    det, str(path), image_id, detector.class_names, rows, det.class_kinds
                )
                for sink in sinks:
                    sink.add(path, width, height, det.boxes, det.scores, det.labels, det.masks)
                if not args.no_draw:  # on the loaded pixels, perhaps downscaled
                    boxes = det.boxes * image.scale
                    masks = resize_masks(det.masks, image.array.shape[:2])
                    drawn = draw_detections(image.array, boxes, det.scores, det.names, masks=masks)
                    save_image(drawn, out_dir / f"{path.stem}_det.jpg")
        bar.update(len(files[start : start + args.batch_size]))
    bar.close()
    return results, images, failed


@cli_entry
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    _check_args(args)
    from ovdet.annotate.datasets import (
        CocoDatasetWriter,
        EmbeddingWriter,
        YoloLabelWriter,
        common_root,
    )
    from ovdet.tv.engine.distributed import is_main_process
    from ovdet.tv.engine.inference import gather_image_detections, shard_files
    from ovdet.utils.io import atomic_write_json
    from ovdet.video.io import VideoReader, is_video

    # bad vocabularies (and exemplar images and boxes) fail before any loading
    vocabulary = vocabulary_from_args(args.classes, args.exemplar)
    if args.detector:
        check_hf_detector_args(
            args.detector,
            clip=args.clip,
            clip_rescoring=args.clip_rescoring,
            exemplar_source=args.exemplar_source,
        )
    video = is_video(args.input)
    if video and (args.coco_out or args.yolo_out):
        raise ConfigError(
            "--coco-out and --yolo-out label image files; for a video, run on its frames as images"
        )
    reader = VideoReader(args.input, args.fps or None) if video else None
    files = [] if video else collect_images(args.input)
    out_dir = _check_outputs(args)
    distributed = _join_torchrun(args, video)
    if is_main_process():
        log_to_file(out_dir)  # the console's lines, also in OUTPUT/log.txt
    detector, max_load_pixels = _load_detector(args, vocabulary)
    names = detector.class_names
    embeddings = EmbeddingWriter() if args.save_embeddings else None
    coco = (
        CocoDatasetWriter(names, common_root(files), args.label_thresh) if args.coco_out else None
    )
    yolo = YoloLabelWriter(Path(args.yolo_out), names, args.label_thresh) if args.yolo_out else None

    kinds = list(getattr(detector, "class_kinds", [])) or ["text"] * len(names)
    summary: dict = {
        "categories": [
            {"id": i + 1, "name": n, **({"query": k} if k != "text" else {})}
            for i, (n, k) in enumerate(zip(names, kinds))
        ]
    }
    if video:
        results, images, summary["video"] = _detect_video(
            args, detector, reader, out_dir, embeddings
        )
        failed = []
    else:
        sinks = [s for s in (coco, yolo) if s is not None]
        results, images, failed = _detect_images(
            args, detector, shard_files(files, args.batch_size), max_load_pixels, out_dir,
            embeddings, sinks,
        )  # fmt: skip
        results, images, failed = gather_image_detections(files, results, images, failed)
        if distributed and not is_main_process():
            return 0 if images else 2  # rank 0 writes and reports for the whole job
    summary.update(images=images, detections=results, failed=failed)
    if embeddings is not None:
        embeddings.write(out_dir / "embeddings.npy", _embed_dim(detector))
        summary["embeddings"] = "embeddings.npy"
    atomic_write_json(summary, out_dir / "results.json")  # first: secondary outputs may fail
    unit = "frame(s)" if video else "image(s)"
    print(
        f"{len(images)} {unit} processed, {len(results)} detection(s), {len(failed)} skipped; "
        f"wrote {out_dir}"
    )
    if video and summary["video"]["corrupt_frames"]:
        print(
            f"warning: {summary['video']['corrupt_frames']} corrupt frame(s) skipped",
            file=sys.stderr,
        )
    if failed:
        print(f"warning: {len(failed)} image(s) could not be read: {failed[:3]}", file=sys.stderr)
    if coco is not None:
        _write_coco(coco, args.coco_out, out_dir / "results.json")
    return 0 if images else 2


def _write_coco(coco, path: str, results: Path) -> None:
    """Write the --coco-out dataset; a failure is one line saying the results are safe."""
    try:
        coco.write(path)
    except OSError as e:
        raise OSError(
            f"--coco-out {path} could not be written ({e.strerror or e}); the detections are "
            f"in {results}"
        ) from e
    logger.info(
        "wrote %s: %d image(s), %d annotation(s) (image root %s)",
        path, len(coco.images), len(coco.annotations), coco.image_root,
    )  # fmt: skip


def _embedding_kwargs(args) -> dict:
    """The d2 adapter always returns region embeddings; OVDetector on request."""
    return {} if args.d2_config else {"return_embeddings": args.save_embeddings}


def _embed_dim(detector) -> int:
    head = getattr(detector, "head", None) or getattr(detector.predictor, "head", None)
    return int(head.embed_dim) if head is not None else 0

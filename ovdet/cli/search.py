"""``tools/search.py``: search images and videos by text (CLIFS-style) or by an image crop
over a vector index.

Examples::

    # embed the regions and whole images of a folder (and the frames of its videos)
    python tools/search.py index --checkpoint output/model_final.pt --input photos/ \\
        --index out/photos.index
    # later: new files are embedded, changed ones replaced, unchanged ones skipped (an
    # interrupted run resumes); --prune also drops the entries of deleted files
    python tools/search.py index --checkpoint output/model_final.pt --input photos/ \\
        --index out/photos.index --prune
    # the same with OWLv2 from the Hugging Face hub (pip install 'ovdet[hf]')
    python tools/search.py index --detector hf:google/owlv2-base-patch16-ensemble \\
        --input photos/ --index out/photos_owl.index
    # the 10 regions closest to a text, with a contact sheet of the hits
    python tools/search.py query --index out/photos.index --text "a red car" --output out/car
    # ... or closest to an image crop (an image exemplar)
    python tools/search.py query --index out/photos.index --image mug.jpg:10,20,64,48 \\
        --output out/mug
    # precision@10 per class name against COCO ground truth
    python tools/search.py evaluate --index out/val.index --gt instances_val.json \\
        --images images/val --classes "red star,blue circle"
"""

from __future__ import annotations

import argparse
import glob
import logging
from pathlib import Path

from ovdet.cli.checks import check_fps, check_fraction, check_output_file
from ovdet.cli.common import add_common_arguments, cli_entry, setup_logging
from ovdet.utils.errors import ConfigError, DataError, ImageError

logger = logging.getLogger("ovdet.search")

_CLIP_HELP = (
    "CLIP spec replacing the checkpoint's (same embedding size), e.g. "
    "ViT-B-32:/path/weights.pt or local-dir:DIR; default: the one the index was built with"
)


_DETECTOR_HELP = (
    "instead of --checkpoint: an OWL-ViT / OWLv2 run by transformers, hf:HUB_ID or hf:DIR "
    "(needs pip install 'ovdet[hf]')"
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Text search over the regions and images of a collection.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    add_common_arguments(p, progress=False)
    sub = p.add_subparsers(dest="command", required=True, metavar="{index,query,evaluate}")

    ix = sub.add_parser(
        "index", help="embed new and changed files into an index (incremental, resumable)"
    )
    source = ix.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="checkpoint written by tools/train.py")
    source.add_argument("--detector", metavar="hf:ID", help=_DETECTOR_HELP)
    ix.add_argument("--clip", default=None, help=_CLIP_HELP)
    ix.add_argument(
        "--input", required=True, help="an image or video file, a folder of them, or a glob"
    )
    ix.add_argument("--index", required=True, help="the index file (created or extended)")
    ix.add_argument(
        "--region-classes",
        default="object",
        help='vocabulary that proposes the indexed regions (default: "object")',
    )
    ix.add_argument(
        "--min-score",
        type=float,
        default=0.0,
        help="regions must score above this for --region-classes (default: 0, i.e. the "
        "detector's top TEST.DETECTIONS_PER_IMAGE regions after NMS)",
    )
    ix.add_argument(
        "--no-images", action="store_true", help="index regions only, not whole images / frames"
    )
    ix.add_argument(
        "--fps",
        type=float,
        default=1.0,
        help="frames per second sampled from videos (default 1; 0 = every frame)",
    )
    ix.add_argument(
        "--prune",
        action="store_true",
        help="also drop the entries of indexed files that no longer exist (default: keep them)",
    )
    ix.add_argument(
        "--save-every", type=int, default=20, help="save the index every N files (default 20)"
    )
    ix.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    ix.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    q = sub.add_parser(
        "query", help="the top-k regions for a text or an image crop, with a contact sheet"
    )
    q.add_argument("--index", required=True, help="an index built by 'index'")
    what = q.add_mutually_exclusive_group(required=True)
    what.add_argument("--text", help='what to look for, e.g. "a red car"')
    what.add_argument(
        "--image",
        metavar="IMAGE[:x,y,w,h]",
        help="look for what this image crop shows (box left, top, width, height in pixels; no "
        "box: the whole image), embedded as an image exemplar (see --exemplar-source)",
    )
    q.add_argument(
        "--exemplar-source",
        choices=("clip", "region", "both"),
        default=None,
        help="with --image: clip (CLIP's embedding of the crop), region (the detector's region "
        "embedding of the box) or both (default: the checkpoint's MODEL.OVDET.EXEMPLARS.SOURCE; "
        "an index of --detector hf:... has only region: OWL's box query)",
    )
    q.add_argument("--top-k", type=int, default=10, help="number of hits (default 10)")
    q.add_argument(
        "--kind",
        choices=("region", "image", "all"),
        default="region",
        help="search regions, whole images / frames, or both (default: region)",
    )
    q.add_argument("--output", required=True, help="folder for hits.json and contact_sheet.jpg")
    q.add_argument(
        "--checkpoint", default=None, help="the detector (default: the one that built the index)"
    )
    q.add_argument(
        "--detector",
        default=None,
        metavar="hf:ID",
        help=_DETECTOR_HELP + "; default: the one that built the index",
    )
    q.add_argument("--clip", default=None, help=_CLIP_HELP)
    q.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")

    ev = sub.add_parser("evaluate", help="precision@k per class name against COCO ground truth")
    ev.add_argument("--index", required=True, help="an index of the ground truth's images")
    ev.add_argument("--gt", required=True, help="COCO annotation JSON of the indexed images")
    ev.add_argument("--images", required=True, help="the folder its file_name entries are in")
    ev.add_argument(
        "--classes", default=None, help="class names to query (default: every category)"
    )
    ev.add_argument("--k", type=int, default=10, help="precision at this many hits (default 10)")
    ev.add_argument(
        "--iou", type=float, default=0.5, help="a hit is right at this IoU (default 0.5)"
    )
    ev.add_argument("--output", default=None, help="also write the figures to this JSON file")
    ev.add_argument(
        "--checkpoint", default=None, help="the detector (default: the one that built the index)"
    )
    ev.add_argument(
        "--detector",
        default=None,
        metavar="hf:ID",
        help=_DETECTOR_HELP + "; default: the one that built the index",
    )
    ev.add_argument("--clip", default=None, help=_CLIP_HELP)
    ev.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    return p


def collect_media(spec: str) -> list[Path]:
    """Images and videos from a file, a folder (sorted, non-recursive) or a glob."""
    from ovdet.data.image_io import IMAGE_EXTENSIONS
    from ovdet.video.io import VIDEO_EXTENSIONS

    suffixes = tuple(IMAGE_EXTENSIONS) + VIDEO_EXTENSIONS
    path = Path(spec)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in suffixes)
        if not files:
            raise ImageError(f"no images or videos in folder {path}")
        return files
    if path.is_file():
        return [path]
    files = sorted(Path(p) for p in glob.glob(spec) if Path(p).is_file())
    if not files:
        raise ImageError(f"--input {spec} matches no file")
    return files


def _detector(
    checkpoint: str | None,
    device: str,
    clip: str | None,
    detector: str | None = None,
    exemplar_source: str | None = None,
):
    """An ovdet checkpoint, or a transformers detector (``hf:...``) where ``detector`` is set
    (``exemplar_source``: ``MODEL.OVDET.EXEMPLARS.SOURCE``, default the model's)."""
    overrides = ["MODEL.OVDET.EXEMPLARS.SOURCE", exemplar_source] if exemplar_source else []
    if detector is not None:
        from ovdet.cli.checks import check_hf_detector_args
        from ovdet.owl import OwlDetector

        check_hf_detector_args(detector, clip=clip, exemplar_source=exemplar_source)
        return OwlDetector.from_spec(detector, device=device, overrides=overrides)
    from ovdet.api import OVDetector

    return OVDetector.from_checkpoint(checkpoint, device=device, clip=clip, overrides=overrides)


def _index(args) -> int:
    from ovdet.search import Indexer, RegionIndex
    from ovdet.utils.io import check_writable_dir

    if args.save_every < 1:
        raise ConfigError("--save-every must be at least 1")
    check_fps("--fps", args.fps)
    check_fraction("--min-score", args.min_score)
    files = collect_media(args.input)
    path = Path(args.index)
    check_writable_dir(path.parent)
    existing = RegionIndex.load(path) if path.exists() else None
    # Extending an index: its own CLIP (stored absolute), so that it works from any folder.
    clip = args.clip or (existing.meta.get("clip") if existing is not None else None)
    if args.detector is not None:
        clip = args.clip  # an hf: detector embeds with its own CLIP (meta "clip" records it)
    detector = _detector(args.checkpoint, args.device, clip, args.detector)
    indexer = Indexer(detector, args.region_classes, args.min_score, not args.no_images, args.fps)
    if args.detector is not None:
        meta = {**indexer.meta, "detector": detector.spec}
    else:
        meta = {**indexer.meta, "checkpoint": str(Path(args.checkpoint).resolve())}
    if existing is not None:
        changed = {k for k in meta if existing.meta.get(k) != meta[k]}
        if changed:
            raise ConfigError(
                f"index {path} was built with other settings ({', '.join(sorted(changed))}); "
                "use the same ones or a new --index file"
            )
    index = existing or RegionIndex(detector.head.embed_dim, meta)
    stats = indexer.index_files(
        index, files, lambda: index.save(path), args.save_every, not args.no_progress, args.prune
    )
    if args.prune:
        gone = f"{stats['pruned']} deleted file(s) dropped"
    else:
        gone = f"{stats['missing']} deleted file(s) kept (--prune drops them)"
    print(
        f"{stats['indexed']} file(s) indexed ({stats['replaced']} changed), {stats['skipped']} "
        f"unchanged, {stats['failed']} unreadable, {gone}; {stats['vectors']} vector(s) added, "
        f"{len(index)} in {path}"
    )
    return 0 if stats["indexed"] or stats["skipped"] else 2


def _query_vector(index, args):
    source = getattr(args, "exemplar_source", None)
    if args.detector is not None or (args.checkpoint is None and index.meta.get("detector")):
        spec = args.detector or index.meta["detector"]
        detector = _detector(None, args.device, args.clip, spec, source)
    else:
        checkpoint = args.checkpoint or index.meta.get("checkpoint")
        if not checkpoint:
            raise ConfigError("the index records no checkpoint; pass --checkpoint")
        clip = args.clip or index.meta.get("clip")
        detector = _detector(checkpoint, args.device, clip, exemplar_source=source)
    if detector.head.embed_dim != index.embed_dim:
        raise ConfigError(
            f"the detector embeds into {detector.head.embed_dim} dimensions, the index "
            f"{index.embed_dim}"
        )
    return detector


def _query(args) -> int:
    from dataclasses import asdict

    from ovdet.search import RegionIndex, contact_sheet
    from ovdet.utils.io import atomic_write_json, check_writable_dir
    from ovdet.utils.visualizer import save_image

    if args.top_k < 1:
        raise ConfigError("--top-k must be at least 1")
    if args.text is not None and not args.text.strip():
        raise ConfigError("--text is empty")
    crop = None
    if args.image is not None:  # checked before the index and the model load
        from ovdet.core.exemplar_loading import load_exemplars
        from ovdet.structures.exemplars import Exemplar

        crop = Exemplar.parse(args.image)
        load_exemplars([crop])
    index = RegionIndex.load(args.index)
    out = check_writable_dir(args.output)
    detector = _query_vector(index, args)
    if crop is None:
        query = detector.text_embeddings([args.text.strip()])[0].numpy()
        asked = {"text": args.text}
    else:
        query = detector.class_embeddings([], exemplars={"query": crop})[0].numpy()
        asked = {"image": args.image, "exemplar_source": detector.exemplar_embedder.source}
    hits = index.search(query, args.top_k, None if args.kind == "all" else args.kind)
    atomic_write_json(
        {**asked, "kind": args.kind, "hits": [asdict(h) for h in hits]}, out / "hits.json"
    )
    title = args.text if crop is None else f"like {crop.describe()}"
    save_image(contact_sheet(hits, title=title), out / "contact_sheet.jpg")
    for rank, hit in enumerate(hits, 1):
        when = f" t={hit.timestamp:.2f}s" if hit.timestamp is not None else ""
        box = ", ".join(f"{v:.0f}" for v in hit.box)
        print(f"{rank:3d}. {hit.score:.4f}  {hit.file}{when}  [{box}] ({hit.kind})")
    print(f"{len(hits)} hit(s); wrote {out / 'hits.json'} and {out / 'contact_sheet.jpg'}")
    return 0


def _evaluate(args) -> int:
    import json

    from ovdet.clip.text_classifier import Vocabulary
    from ovdet.search import RegionIndex, precision_at_k
    from ovdet.search.evaluation import ground_truth_boxes
    from ovdet.utils.io import atomic_write_json

    if args.k < 1:
        raise ConfigError("--k must be at least 1")
    check_fraction("--iou", args.iou, allow_zero=False)
    if args.output:
        check_output_file("--output", args.output, "precision.json")
    index = RegionIndex.load(args.index)
    try:
        coco = json.loads(Path(args.gt).read_text(encoding="utf-8"))
        all_names = [c["name"] for c in coco["categories"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"--gt {args.gt} is not a readable COCO annotation file: {e}") from None
    names = list(Vocabulary.parse(args.classes).names) if args.classes else all_names
    unknown = [n for n in names if n not in all_names]
    if unknown:
        raise ConfigError(f"--classes not in the ground truth: {', '.join(unknown)}")
    detector = _query_vector(index, args)
    text = detector.text_embeddings(names).numpy()
    figures = {}
    for name, vector in zip(names, text):
        truth = ground_truth_boxes(coco, args.images, name)
        hits = index.search(vector, args.k, "region")
        figures[name] = precision_at_k(hits, truth, args.k, args.iou)
        print(f"{name}: precision@{args.k} = {figures[name]:.2f}")
    mean = sum(figures.values()) / len(figures)
    print(f"mean precision@{args.k} over {len(figures)} class(es): {mean:.3f}")
    if args.output:
        atomic_write_json(
            {"k": args.k, "iou": args.iou, "precision": figures, "mean": mean}, args.output
        )
    return 0


@cli_entry
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    return {"index": _index, "query": _query, "evaluate": _evaluate}[args.command](args)

"""ovdet at the real operating point: R50-FPN at 800 px on JPEG photos, a CLIP of ViT-B/32's
shape, vocabularies of 65 to 21,000 names, and the data loader that feeds it.

Everything is built here with random weights (no download): the detector from ``--config``
(default ``configs/ovcoco_vild_R50_FPN.yaml``, backbone weights off), the CLIP from ``--clip``
(default open_clip's ``ViT-B-32`` architecture, 512-d, 77 tokens, 224 px, random init). Images are
scikit-image's photos, encoded to JPEG files and read back through ovdet's data pipeline
(:class:`ovdet.data.dataset.DetectionDataset`: decode, resize to ``--size``, flip, colour jitter).
Timing is interleaved (``benchmarks/common.py``): a ratio is the median over rounds of per-round
ratios. Sections (``--sections``):

* ``train``: one training step (as ``benchmarks/bench_training.py``: forward, backward, clip,
  optimizer) on a batch of ``--batch`` photos, for the closed-set Faster R-CNN, ViLD-text,
  online ViLD-image (the CLIP teacher on ``DISTILL.NUM_PROPOSALS`` proposals per image, crops at
  the CLIP's input size), offline ViLD-image, an image-labelled batch and F-VLM (ViLD-text on
  the frozen ``--fvlm-clip`` tower + a trained FPN), over ``--train-classes`` classes (48:
  OV-COCO's base classes); ratios to the closed-set step;
* ``memory``: the peak memory per image of each of those training variants (2 steps in a fresh
  process each; CUDA: also each inference configuration of ``infer``);
* ``infer``: inference per image over 65, 1,203 and 21,000 classes, alone and with CLIP
  rescoring of the top proposals (``K x S``: K proposals, S crop scales, one CLIP pass each);
  and F-VLM (``--fvlm-clip``, default open_clip's ``RN50`` architecture, random init, frozen as
  the backbone), alone and with CLIP's scores of its top K regions pooled from that backbone;
* ``text``: the text tower over the 1,203 LVIS names x the template set, cold and cached;
* ``loader``: images/s of one loader worker (JPEG decode + training augmentation), and the
  workers a step of the measured speed needs.

Examples::

    python -m benchmarks.real_scale                     # CPU, batch 2, every section
    python -m benchmarks.real_scale --smoke             # seconds: tiny model and sizes
    python -m benchmarks.real_scale --device cuda --amp --batch 8 --vocab-sizes 80 1203 21000
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from benchmarks.bench_inference import share_weights
from benchmarks.bench_training import Step, build_variant, variant_targets
from benchmarks.common import (
    autocast,
    cuda_peak,
    interleaved_timing,
    machine_lines,
    markdown_table,
    max_rss_mib,
    paired_ratios,
    random_text_embeddings,
    ratio_summary,
    run_probe,
    setup_torch,
    synchronize,
)

SECTIONS = ("train", "memory", "infer", "text", "loader")
TRAIN_VARIANTS = ("closed", "text", "online", "offline", "weak", "fvlm")
#: scikit-image's colour photos (name, height x width): astronaut 512x512, coffee 400x600,
#: chelsea 300x451, rocket 427x640.
PHOTOS = ("coffee", "rocket", "chelsea", "astronaut")


@dataclass(frozen=True)
class Rescoring:
    """A CLIP rescoring variant: ``proposals`` regions per image, ``scales`` crops each
    (0: the teacher's ``DISTILL.CROP_SCALES``)."""

    proposals: int
    scales: int

    @classmethod
    def parse(cls, text: str) -> Rescoring:
        k, _, s = text.partition("x")
        try:
            out = cls(int(k), int(s or 0))
        except ValueError:
            raise SystemExit(f"error: rescoring variant {text!r} is not KxS (e.g. 100x2)") from None
        if out.proposals < 1 or out.scales not in (0, 1, 2):
            raise SystemExit(f"error: rescoring variant {text!r}: K >= 1 and S in 1, 2")
        return out

    def crop_scales(self, teacher_scales: Sequence[float]) -> tuple[float, ...]:
        return tuple(teacher_scales)[: self.scales] if self.scales else tuple(teacher_scales)

    def __str__(self) -> str:
        return f"{self.proposals}x{self.scales}"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where to run")
    p.add_argument("--amp", action="store_true", help="float16 autocast (CUDA only)")
    p.add_argument("--batch", type=int, default=2, help="training images per step (default: 2)")
    p.add_argument(
        "--smoke",
        action="store_true",
        help="seconds, not hours: tiny config and CLIP, 64 px, tiny vocabularies, one round",
    )
    p.add_argument("--config", default="configs/ovcoco_vild_R50_FPN.yaml", help="detector config")
    p.add_argument("--clip", default="ViT-B-32", help="CLIP spec (default: ViT-B/32, random init)")
    p.add_argument("--size", type=int, default=800, help="shorter image side, px (default: 800)")
    p.add_argument(
        "--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS, help="what to measure"
    )
    p.add_argument(
        "--vocab-sizes",
        type=int,
        nargs="+",
        default=[65, 1203, 21000],
        help="inference vocabularies (default: 65 OV-COCO, 1,203 LVIS, 21,000 names)",
    )
    p.add_argument(
        "--rescore-vocab-sizes",
        type=int,
        nargs="*",
        default=None,
        help="vocabularies also timed with CLIP rescoring (default: the second of --vocab-sizes)",
    )
    p.add_argument(
        "--rescoring",
        nargs="*",
        default=["100x2", "100x1", "32x1", "16x1"],
        help="CLIP rescoring variants KxS: K proposals, S crop scales (default: %(default)s)",
    )
    p.add_argument(
        "--train-classes",
        type=int,
        default=48,
        help="classes of the training variants (default: 48, OV-COCO's base classes)",
    )
    p.add_argument(
        "--fvlm-clip",
        default="RN50",
        help="CLIP frozen as F-VLM's backbone in the infer section, a ResNet or a ViT (default: "
        "open_clip's RN50 architecture, random init; '' leaves F-VLM out)",
    )
    p.add_argument(
        "--fvlm-proposals",
        type=int,
        default=100,
        help="F-VLM's regions per image scored by CLIP from its backbone (default: 100)",
    )
    p.add_argument("--infer-images", type=int, default=2, help="photos per inference round")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds (default: 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default: 1)")
    p.add_argument(
        "--text-names",
        type=int,
        default=1203,
        help="LVIS names the text section encodes (default: all 1,203; fewer on a slow CPU: the "
        "report then also gives the cold time scaled to 1,203 at the measured cost per prompt)",
    )
    p.add_argument("--templates", default="vild", help="template set of the text section")
    p.add_argument("--loader-images", type=int, default=40, help="samples the loader times")
    p.add_argument(
        "--clock",
        default="wall",
        choices=("wall", "cpu"),
        help="wall: elapsed time; cpu: this process's CPU time (one thread, a CPU shared with "
        "other load; not for CUDA)",
    )
    p.add_argument(
        "--train-variants",
        nargs="+",
        default=list(TRAIN_VARIANTS),
        choices=TRAIN_VARIANTS,
        help="training variants to time (default: all; ratios are to the first when closed is "
        "not among them)",
    )
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default: 1)")
    p.add_argument(
        "--no-memory",
        action="store_true",
        help="skip the fresh-process memory probes (the memory section and CUDA inference's)",
    )
    p.add_argument("--json", default="", help="also write the results to this JSON file")
    p.add_argument("--probe", default="", help=argparse.SUPPRESS)  # internal: one memory probe
    args = p.parse_args(argv)
    if args.amp and args.device != "cuda":
        p.error("--amp needs --device cuda (CPU runs in float32)")
    if args.clock == "cpu" and args.device == "cuda":
        p.error("--clock cpu times the CPU: use --clock wall with --device cuda")
    args.timer = time.process_time if args.clock == "cpu" else time.perf_counter
    if min(args.batch, args.rounds, args.infer_images, args.train_classes) < 1 or args.warmup < 0:
        p.error("--batch, --rounds, --infer-images, --train-classes must be >= 1, --warmup >= 0")
    if args.smoke:
        args.config, args.clip, args.size = "configs/tiny.yaml", "local-dir:clip/tiny", 64
        args.vocab_sizes, args.rescoring = [5, 40], ["8x2", "4x1"]
        args.fvlm_clip, args.fvlm_proposals = "local-dir:clip/tiny", 8
        args.rounds, args.warmup, args.infer_images = 1, 0, 1
        args.text_names, args.templates, args.loader_images = 12, "a", 4
    if not args.fvlm_clip:
        args.train_variants = [v for v in args.train_variants if v != "fvlm"]
    args.rescoring = [Rescoring.parse(r) for r in args.rescoring]
    if args.rescore_vocab_sizes is None:
        args.rescore_vocab_sizes = args.vocab_sizes[1:2] or args.vocab_sizes[:1]
    args.names = _names()
    return args


# ---------------------------------------------------------------------- vocabularies


def _names() -> dict[str, object]:
    """The OV-COCO names and the LVIS names with where they came from."""
    from ovdet.data.splits import OVCOCO_BASE, OVCOCO_NOVEL

    try:  # the lvis package ships no category list; detectron2 ships LVIS v1's
        from detectron2.data.datasets.lvis_v1_categories import LVIS_CATEGORIES

        lvis = [c["name"].replace("_", " ") for c in LVIS_CATEGORIES]
        source = "detectron2's LVIS v1 categories"
    except ImportError:
        lvis = [f"object {i}" for i in range(1203)]
        source = "generated names (`object 0` ... `object 1202`; detectron2 not installed)"
    return {"base": list(OVCOCO_BASE), "ovcoco": [*OVCOCO_BASE, *OVCOCO_NOVEL], "lvis": lvis,
            "lvis_source": source}  # fmt: skip


# ---------------------------------------------------------------------- data


def write_photos(folder: Path) -> list[Path]:
    """scikit-image's photos as JPEG files (quality 90) in ``folder``."""
    from PIL import Image
    from skimage import data

    paths = []
    for name in PHOTOS:
        path = folder / f"{name}.jpg"
        Image.fromarray(getattr(data, name)()).save(path, quality=90)
        paths.append(path)
    return paths


def photo_dataset(
    cfg, paths: Sequence[Path], is_train: bool, num_classes: int = 48, gt_per_image: int = 4
):
    """A :class:`DetectionDataset` over the photos, ``gt_per_image`` seeded boxes each (labels
    in ``1..num_classes``), through the config's training or test augmentation."""
    from PIL import Image

    from ovdet.data.coco import DatasetRecords, ImageRecord
    from ovdet.data.dataset import DetectionDataset
    from ovdet.data.transforms import build_augmentation

    gen = np.random.default_rng(0)
    records = []
    for i, path in enumerate(paths):
        with Image.open(path) as img:
            w, h = img.size
        xy = gen.uniform(0, 0.6, (gt_per_image, 2)) * (w, h)
        wh = gen.uniform(0.1, 0.4, (gt_per_image, 2)) * (w, h)
        boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
        labels = gen.integers(1, num_classes + 1, gt_per_image)
        records.append(ImageRecord(i, Path(path), w, h, boxes, labels))
    names = [f"class {c}" for c in range(num_classes)]
    recs = DatasetRecords(records, names, list(range(1, num_classes + 1)), None)
    return DetectionDataset(recs, build_augmentation(cfg, is_train))


def training_batch(cfg, paths, batch: int, num_classes: int, embed_dim: int, device: torch.device):
    """``batch`` photos through the training pipeline; targets carry the offline-distillation
    boxes and embeddings (random: ``DISTILL.NUM_PROPOSALS`` per image) as the loader gives
    them from an embeddings file."""
    dataset = photo_dataset(cfg, paths, is_train=True, num_classes=num_classes)
    gen = torch.Generator().manual_seed(1)
    m = cfg.MODEL.OVDET.DISTILL.NUM_PROPOSALS
    images, targets = [], []
    for i in range(batch):
        image, target = dataset[(i % len(dataset), i)]
        h, w = image.shape[1:]
        xy = torch.rand(m, 2, generator=gen) * torch.tensor([w * 0.7, h * 0.7])
        wh = (0.1 + 0.2 * torch.rand(m, 2, generator=gen)) * torch.tensor([w, h])
        images.append(image.to(device))
        targets.append(
            {
                "boxes": target["boxes"].to(device),
                "labels": target["labels"].to(device),
                "distill_boxes": torch.cat([xy, xy + wh], dim=1).to(device),
                "distill_embeddings": random_text_embeddings(m, embed_dim, seed=i).to(device),
            }
        )
    return images, targets


def setup(args: argparse.Namespace):
    """Config (random weights, ``--size`` for training and test), embedding size, the CLIP."""
    from ovdet.clip import load_clip
    from ovdet.config import load_config

    opts = [
        "MODEL.BACKBONE.WEIGHTS", "", "MODEL.OVDET.CLIP", args.clip,
        "INPUT.MIN_SIZE_TRAIN", f"({args.size},)", "INPUT.MIN_SIZE_TEST", str(args.size),
        "SOLVER.AMP.ENABLED", str(args.amp),
    ]  # fmt: skip
    cfg = load_config(args.config, opts, freeze=False)
    clip = load_clip(args.clip, torch.device(args.device))
    embed_dim = cfg.MODEL.OVDET.EMBED_DIM or clip.embed_dim
    return cfg, embed_dim, clip


# ---------------------------------------------------------------------- training


def _variant_args(args: argparse.Namespace) -> argparse.Namespace:
    """What :func:`benchmarks.bench_training.build_variant` reads: the class count."""
    return argparse.Namespace(num_classes=args.train_classes)


def _train_name(variant: str, cfg) -> str:
    return f"online:{cfg.MODEL.OVDET.DISTILL.NUM_PROPOSALS}" if variant == "online" else variant


def build_train_variant(args, cfg, name: str, embed_dim: int, clip, device) -> torch.nn.Module:
    """A training variant: :func:`benchmarks.bench_training.build_variant`'s, or F-VLM."""
    if name == "fvlm":
        return build_fvlm(cfg, args.train_classes, args.fvlm_clip, device)
    return build_variant(cfg, _variant_args(args), name, embed_dim, clip)


def measure_training(args, cfg, embed_dim, clip, paths, device) -> dict:
    images, targets = training_batch(cfg, paths, args.batch, args.train_classes, embed_dim, device)
    vargs = _variant_args(args)
    names = [_train_name(v, cfg) for v in args.train_variants]
    models = {n: build_train_variant(args, cfg, n, embed_dim, clip, device) for n in names}
    reference = models[names[0]]
    for name, model in models.items():
        if model is not reference and name != "fvlm":  # F-VLM's backbone is CLIP's
            share_weights(reference, model)
    steps = {
        n: Step(cfg, m, images, variant_targets(n, targets, vargs, embed_dim), device)
        for n, m in models.items()
    }
    shape = [list(i.shape[1:]) for i in images]
    print(f"train: {len(steps)} variants x {args.rounds} rounds, images {shape}", file=sys.stderr)
    times = interleaved_timing(steps, args.rounds, args.warmup, device, clock=args.timer)
    return {"images": shape, "times": times}


def measure_training_memory(args, cfg) -> dict:
    """Peak memory of each training variant, each in a fresh process (:func:`probe_training`)."""
    memory = {}
    for variant in args.train_variants:
        name = _train_name(variant, cfg)
        print(f"memory probe train:{name}", file=sys.stderr, flush=True)
        memory[name] = run_probe("benchmarks.real_scale", _forwarded(args, f"train:{name}"))
    return memory


def probe_training(args, name: str) -> dict:
    """One training variant in this (fresh) process: peak memory of building it and 2 steps."""
    device = setup_torch(args.device, args.threads)
    cfg, embed_dim, clip = setup(args)
    with tempfile.TemporaryDirectory() as folder:
        images, targets = training_batch(cfg, write_photos(Path(folder)), args.batch,
                                         args.train_classes, embed_dim, device)  # fmt: skip
    clip = clip if name.startswith("online") else None
    base = max_rss_mib()
    vargs = _variant_args(args)
    with cuda_peak(device) as peak:
        model = build_train_variant(args, cfg, name, embed_dim, clip, device)
        step = Step(cfg, model, images, variant_targets(name, targets, vargs, embed_dim), device)
        for _ in range(2):
            step()
    return {"rss_peak_delta_mib": max_rss_mib() - base, **peak}


# ---------------------------------------------------------------------- inference


def build_detector(cfg, num_classes: int, embed_dim: int, clip, device) -> torch.nn.Module:
    """The open-vocabulary detector over ``num_classes`` random text embeddings, with the CLIP
    teacher set (rescoring stays off until asked for)."""
    from ovdet.core import get_head
    from ovdet.tv import build_open_vocabulary_rcnn
    from ovdet.tv.engine.build import build_clip_teacher

    torch.manual_seed(0)
    model = build_open_vocabulary_rcnn(cfg, embed_dim=embed_dim)
    head = get_head(model)
    head.set_vocabulary(random_text_embeddings(num_classes, embed_dim))
    head.set_clip_teacher(build_clip_teacher(cfg, clip))
    return model.to(device).eval()


def fvlm_backbone_name(fvlm_clip: str) -> str:
    """``MODEL.BACKBONE.NAME`` of F-VLM on ``fvlm_clip``: the ViT builder for an open_clip
    architecture whose image tower is a ViT (its ``vision_cfg.layers`` is a depth, a ResNet's a
    list of stage depths), else the ResNet one."""
    from ovdet.clip import ClipSpec
    from ovdet.core.clip_tower import CLIP_BACKBONE_NAME, CLIP_VIT_BACKBONE_NAME

    layers = ClipSpec.parse(fvlm_clip).model_config().get("vision_cfg", {}).get("layers")
    return CLIP_VIT_BACKBONE_NAME if isinstance(layers, int) else CLIP_BACKBONE_NAME


def build_fvlm(cfg, num_classes: int, fvlm_clip: str, device) -> torch.nn.Module:
    """F-VLM: the open-vocabulary detector (ViLD-text, no distillation) on ``fvlm_clip`` frozen
    as its backbone (a ResNet or ViT CLIP, random init), over ``num_classes`` random text
    embeddings of that CLIP's size."""
    from ovdet.clip import ClipSpec
    from ovdet.core import get_head
    from ovdet.tv import build_open_vocabulary_rcnn

    cfg = cfg.clone()
    cfg.MODEL.BACKBONE.NAME, cfg.MODEL.OVDET.CLIP = fvlm_backbone_name(fvlm_clip), fvlm_clip
    cfg.MODEL.OVDET.DISTILL.MODE = "none"  # F-VLM trains ViLD-text only
    embed_dim = ClipSpec.parse(fvlm_clip).embed_dim
    torch.manual_seed(0)
    model = build_open_vocabulary_rcnn(cfg, embed_dim=embed_dim)
    get_head(model).set_vocabulary(random_text_embeddings(num_classes, embed_dim))
    return model.to(device).eval()


def infer_names(args) -> list[str]:
    """``det:C``, ``rescore:C:KxS``; F-VLM: ``fvlm:C`` (alone), ``fvlm:C:K`` (CLIP scores of
    K pooled regions)."""
    names = [f"det:{c}" for c in args.vocab_sizes]
    for c in args.rescore_vocab_sizes:
        names += [f"rescore:{c}:{r}" for r in args.rescoring]
        if args.fvlm_clip:
            names += [f"fvlm:{c}", f"fvlm:{c}:{args.fvlm_proposals}"]
    return names


def inference_runner(model, name: str, images, device, teacher_scales):
    """A function running ``model`` on every image (batch 1), rescoring as ``name`` says."""
    from ovdet.core import ClipRescoringSettings, get_head

    head = get_head(model)
    settings = None
    if name.startswith("rescore:"):
        r = Rescoring.parse(name.split(":")[2])
        settings = ClipRescoringSettings(num_proposals=r.proposals,
                                         crop_scales=r.crop_scales(teacher_scales))  # fmt: skip
    elif name.startswith("fvlm:") and name.count(":") == 2:
        settings = ClipRescoringSettings(num_proposals=int(name.split(":")[2]), source="backbone")

    def run() -> None:
        head.enable_clip_rescoring(settings)
        try:
            with torch.no_grad(), autocast(device):
                for image in images:
                    model([image])
        finally:
            head.enable_clip_rescoring(None)

    return run


def inference_images(cfg, paths, count: int, device) -> list[torch.Tensor]:
    dataset = photo_dataset(cfg, paths, is_train=False)
    return [dataset[(i % len(dataset), 0)][0].to(device) for i in range(count)]


def measure_inference(args, cfg, embed_dim, clip, paths, device) -> dict:
    images = inference_images(cfg, paths, args.infer_images, device)
    sizes = list(dict.fromkeys([*args.vocab_sizes, *args.rescore_vocab_sizes]))
    models = {c: build_detector(cfg, c, embed_dim, clip, device) for c in sizes}
    reference = models[sizes[0]]
    for model in models.values():
        if model is not reference:
            share_weights(reference, model)
    scales = tuple(cfg.MODEL.OVDET.DISTILL.CROP_SCALES)
    names = infer_names(args)
    fvlm = {}
    if args.fvlm_clip:
        fvlm = {c: build_fvlm(cfg, c, args.fvlm_clip, device) for c in args.rescore_vocab_sizes}
        for model in list(fvlm.values())[1:]:
            share_weights(next(iter(fvlm.values())), model)

    def model_of(name: str) -> torch.nn.Module:
        return (fvlm if name.startswith("fvlm:") else models)[int(name.split(":")[1])]

    fns = {n: inference_runner(model_of(n), n, images, device, scales) for n in names}
    shape = [list(i.shape[1:]) for i in images]
    print(f"infer: {len(fns)} configurations x {args.rounds} rounds, images {shape}",
          file=sys.stderr)  # fmt: skip
    times = interleaved_timing(fns, args.rounds, args.warmup, device, clock=args.timer)
    per_image = {n: [t / len(images) for t in ts] for n, ts in times.items()}
    fns.clear()
    models.clear()
    fvlm.clear()
    memory = {}
    if not args.no_memory and device.type == "cuda":  # CPU: docs/speed.md#inference has it
        for name in names:
            print(f"memory probe infer:{name}", file=sys.stderr, flush=True)
            memory[name] = run_probe("benchmarks.real_scale", _forwarded(args, f"infer:{name}"))
    return {"images": shape, "times": per_image, "memory": memory,
            "crop_scales": list(scales)}  # fmt: skip


def probe_inference(args, name: str) -> dict:
    """One inference configuration in this (fresh) process: peak memory of 2 passes."""
    device = setup_torch(args.device, args.threads)
    cfg, embed_dim, clip = setup(args)
    with tempfile.TemporaryDirectory() as folder:
        images = inference_images(cfg, write_photos(Path(folder)), args.infer_images, device)
    base = max_rss_mib()
    with cuda_peak(device) as peak:
        classes = int(name.split(":")[1])
        if name.startswith("fvlm:"):
            model = build_fvlm(cfg, classes, args.fvlm_clip, device)
        else:
            model = build_detector(cfg, classes, embed_dim, clip, device)
        run = inference_runner(model, name, images, device, cfg.MODEL.OVDET.DISTILL.CROP_SCALES)
        for _ in range(2):
            run()
    return {"rss_peak_delta_mib": max_rss_mib() - base, **peak}


# ---------------------------------------------------------------------- text tower and loader


def measure_text(args, clip, device) -> dict:
    """Cold (empty cache) and warm builds of the LVIS vocabulary's classifier."""
    from ovdet.clip.text_classifier import TextClassifierBuilder, load_templates

    names = list(args.names["lvis"])
    names = (names * (args.text_names // len(names) + 1))[: args.text_names]
    names = [n if i < len(args.names["lvis"]) else f"{n} {i}" for i, n in enumerate(names)]
    with tempfile.TemporaryDirectory() as cache:
        builder = TextClassifierBuilder(clip, args.templates, cache, device)
        start = args.timer()
        builder(names)
        synchronize(device)
        cold = args.timer() - start
        calls = builder.num_text_tower_calls
        start = args.timer()
        builder(names)
        warm = args.timer() - start
        if builder.num_text_tower_calls != calls:
            raise SystemExit("error: a cached vocabulary ran the text tower")
    return {"names": len(names), "templates": len(load_templates(args.templates)),
            "cold_s": cold, "warm_s": warm, "text_tower_calls": calls}  # fmt: skip


def measure_loader(args, cfg, paths) -> dict:
    """One worker's samples/s: JPEG decode + the training augmentation, in this process."""
    from ovdet.data.image_io import read_image

    dataset = photo_dataset(cfg, paths, is_train=True)
    decode, sample = [], []
    for i in range(args.loader_images):
        path = dataset.records.images[i % len(dataset)].path
        start = args.timer()
        read_image(path)
        decode.append(args.timer() - start)
        start = args.timer()
        dataset[(i % len(dataset), i)]
        sample.append(args.timer() - start)
    jpeg_bytes = statistics.fmean(p.stat().st_size for p in paths)
    return {"decode_s": statistics.median(decode), "sample_s": statistics.median(sample),
            "samples": len(sample), "jpeg_kib": jpeg_bytes / 1024}  # fmt: skip


# ---------------------------------------------------------------------- report


def _forwarded(args, probe: str) -> list[str]:
    out = ["--device", args.device, "--batch", str(args.batch), "--threads", str(args.threads),
           "--infer-images", str(args.infer_images), "--train-classes", str(args.train_classes),
           "--probe", probe]  # fmt: skip
    if args.smoke:
        return ["--smoke", *out]
    out += ["--config", args.config, "--clip", args.clip, "--size", str(args.size)]
    return out + (["--amp"] if args.amp else [])


def _median(values: Sequence[float]) -> float:
    return statistics.median(values)


def summarize(args, results: dict) -> dict:
    """The figures of the tables, from the raw times (all times in seconds)."""
    out: dict = {}
    train = results.get("train")
    if train:
        t = train["times"]
        rows = {}
        for name in t:
            ratio, q1, q3 = ratio_summary(paired_ratios(t, next(iter(t)), name))
            mem = results.get("memory", {}).get(name, {})
            mem_mib = mem.get("cuda_peak_mib", mem.get("rss_peak_delta_mib"))
            rows[name] = {
                "step_s": _median(t[name]),
                "s_per_image": _median(t[name]) / args.batch,
                "ratio": ratio, "iqr": [q1, q3],
                "memory_mib_per_image": None if mem_mib is None else mem_mib / args.batch,
            }  # fmt: skip
        out["train"] = rows
    memory = results.get("memory")
    if memory and not train:  # the memory section alone
        out["memory"] = {
            name: m.get("cuda_peak_mib", m["rss_peak_delta_mib"]) / args.batch
            for name, m in memory.items()
        }
    infer = results.get("infer")
    if infer:
        t = infer["times"]
        rows = {}
        for name in t:
            c = name.split(":")[1]
            ratio, q1, q3 = ratio_summary(paired_ratios(t, f"det:{c}", name))
            mem = infer["memory"].get(name, {})
            rows[name] = {"s_per_image": _median(t[name]), "ratio_to_detector": ratio,
                          "iqr": [q1, q3], "memory_mib": mem.get("cuda_peak_mib")}  # fmt: skip
            crops = f"rescore:{c}:{args.rescoring[0]}" if args.rescoring else ""
            if name.startswith("fvlm:") and crops in t:  # F-VLM against ViLD's crop rescoring
                rows[name]["ratio_to_crop_rescoring"] = ratio_summary(
                    paired_ratios(t, crops, name)
                )[0]
        out["infer"] = rows
    text = results.get("text")
    if text:
        per_prompt = text["cold_s"] / (text["names"] * text["templates"])
        lvis = len(args.names["lvis"])
        out["text"] = {"cold_ms_per_prompt": per_prompt * 1e3, "lvis_names": lvis,
                       "cold_s_lvis": per_prompt * lvis * text["templates"]}  # fmt: skip
    loader = results.get("loader")
    if loader:
        per_worker = 1.0 / loader["sample_s"]
        needs = {}
        if "train" in out:  # images/s of one step of the measured speed, per variant
            for name, row in out["train"].items():
                needs[name] = (1.0 / row["s_per_image"]) / per_worker
        out["loader"] = {"images_per_s_per_worker": per_worker,
                         "decode_images_per_s": 1.0 / loader["decode_s"],
                         "workers_needed": needs}  # fmt: skip
    return out


def print_report(args, device, cfg, results: dict, summary: dict) -> None:
    label = {
        "closed": f"closed-set Faster R-CNN ({args.train_classes} classes)",
        "text": "ViLD-text",
        "offline": f"ViLD-text + offline ViLD-image ({cfg.MODEL.OVDET.DISTILL.NUM_PROPOSALS} "
        "boxes/img)",
        "weak": f"image-labelled batch (max-size, {cfg.MODEL.OVDET.WEAK.NUM_PROPOSALS} proposals)",
        "fvlm": f"F-VLM: ViLD-text on the frozen `{args.fvlm_clip}` tower + FPN",
    }
    scales = list(cfg.MODEL.OVDET.DISTILL.CROP_SCALES)
    print(f"### Real scale: `{args.config}` at {args.size} px, CLIP `{args.clip}` (random init)\n")
    print("\n".join(machine_lines(device, args.threads)))
    clock = "CPU time of the process" if args.clock == "cpu" else "wall time"
    print(f"- {args.rounds} interleaved rounds after {args.warmup} warm-up rounds, {clock}; "
          f"photos: scikit-image's {', '.join(PHOTOS)} as JPEG; LVIS names: "
          f"{args.names['lvis_source']}\n")  # fmt: skip
    if "train" in summary:
        shapes = ", ".join("x".join(map(str, s)) for s in results["train"]["images"])
        print(f"Training step, batch {args.batch} ({shapes} px), {args.train_classes} classes:\n")
        mem = "peak memory MiB/img" + (" (CUDA)" if device.type == "cuda" else " (maxrss)")
        rows = []
        for name, r in summary["train"].items():
            kind = name.split(":")[0]
            text = label.get(kind) or (
                f"ViLD-text + online ViLD-image ({name.split(':')[1]} proposals/img x "
                f"{len(scales)} crops at {cfg.MODEL.OVDET.DISTILL.CROP_SIZE or 'CLIP size'})"
            )
            m = r["memory_mib_per_image"]
            rows.append([text, f"{r['step_s']:.2f}", f"{1 / r['s_per_image']:.3f}",
                         f"**{r['ratio']:.2f}** [{r['iqr'][0]:.2f}, {r['iqr'][1]:.2f}]",
                         "—" if m is None else f"{m:.0f}"])  # fmt: skip
        first = next(iter(summary["train"]))
        print(markdown_table(["variant", "s/step", "images/s", f"ratio to {first} [IQR]", mem],
                             rows))  # fmt: skip
        print()
    if "memory" in summary:
        mem = "peak memory MiB/img" + (" (CUDA)" if device.type == "cuda" else " (maxrss)")
        print(f"Training, batch {args.batch}, 2 steps in a fresh process per variant:\n")
        rows = [[name, f"{m:.0f}"] for name, m in summary["memory"].items()]
        print(markdown_table(["variant", mem], rows))
        print()
    if "infer" in summary:
        shapes = ", ".join("x".join(map(str, s)) for s in results["infer"]["images"])
        print(f"Inference per image, batch 1 ({shapes} px); rescoring `KxS`: the top K regions, "
              f"S crop scales of {scales}, one CLIP pass per crop:\n")  # fmt: skip
        rows = []
        for name, r in summary["infer"].items():
            parts = name.split(":")
            if parts[0] == "det":
                what = "detector"
            elif parts[0] == "rescore":
                what = f"+ CLIP rescoring {parts[2]}"
            else:
                what = f"F-VLM, frozen `{args.fvlm_clip}`" + (
                    f" + CLIP scores of {parts[2]} pooled regions" if len(parts) == 3 else ""
                )
                if "ratio_to_crop_rescoring" in r:
                    what += (f" ({r['ratio_to_crop_rescoring']:.2f} x rescoring "
                             f"{args.rescoring[0]})")  # fmt: skip
            m = r["memory_mib"]
            rows.append([f"{int(parts[1]):,}", what, f"{r['s_per_image']:.2f}",
                         f"{1 / r['s_per_image']:.3f}",
                         f"**{r['ratio_to_detector']:.2f}** [{r['iqr'][0]:.2f}, "
                         f"{r['iqr'][1]:.2f}]", "—" if m is None else f"{m:.0f}"])  # fmt: skip
        print(markdown_table(["classes", "model", "s/img", "images/s", "ratio to detector [IQR]",
                              "peak CUDA MiB"], rows))  # fmt: skip
        print()
    if "text" in summary:
        t, lo = results["text"], summary["text"]
        print(f"Text tower: {t['names']:,} names x {t['templates']} templates "
              f"(`{args.templates}`) = {t['names'] * t['templates']:,} prompts, "
              f"{t['text_tower_calls']} text-tower calls: cold **{t['cold_s']:.1f} s** "
              f"({lo['cold_ms_per_prompt']:.1f} ms/prompt), cached "
              f"**{t['warm_s'] * 1e3:.0f} ms** (0 text-tower calls).")  # fmt: skip
        if t["names"] != lo["lvis_names"]:
            print(f"Scaled to the {lo['lvis_names']:,} LVIS names at that cost per prompt: cold "
                  f"about **{lo['cold_s_lvis']:.0f} s**.")  # fmt: skip
        print()
    if "loader" in summary:
        lo, raw = summary["loader"], results["loader"]
        print(f"Loader, one worker (this process), {raw['samples']} samples of JPEGs of "
              f"{raw['jpeg_kib']:.0f} KiB: decode alone {lo['decode_images_per_s']:.1f} images/s; "
              f"decode + resize to {args.size} px + flip + colour jitter "
              f"**{lo['images_per_s_per_worker']:.1f} images/s per worker**.")  # fmt: skip
        if lo["workers_needed"]:
            need = ", ".join(f"{n} {v:.2f}" for n, v in lo["workers_needed"].items())
            print(f"Workers a step of the measured speed needs: {need}.")
        print()


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.probe:
        section, _, name = args.probe.partition(":")
        probe = probe_training if section == "train" else probe_inference
        print(json.dumps(probe(args, name)))
        return {}
    device = setup_torch(args.device, args.threads)
    cfg, embed_dim, clip = setup(args)
    results: dict = {}
    with tempfile.TemporaryDirectory() as folder:
        paths = write_photos(Path(folder))
        if "loader" in args.sections:
            results["loader"] = measure_loader(args, cfg, paths)
        if "text" in args.sections:
            results["text"] = measure_text(args, clip, device)
        if "train" in args.sections:
            results["train"] = measure_training(args, cfg, embed_dim, clip, paths, device)
        if "memory" in args.sections and not args.no_memory:
            results["memory"] = measure_training_memory(args, cfg)
        if "infer" in args.sections:
            results["infer"] = measure_inference(args, cfg, embed_dim, clip, paths, device)
    summary = summarize(args, results)
    print_report(args, device, cfg, results, summary)
    report = {"results": results, "summary": summary}
    if args.json:
        tmp = Path(args.json).with_suffix(".tmp")
        tmp.write_text(json.dumps(report, indent=1), encoding="utf-8")
        tmp.replace(args.json)
    return report


if __name__ == "__main__":
    main()

"""ViLD-image ablations on a finished synthetic benchmark folder.

Results and their commands: docs/benchmark_studies.md#vild-image.

Measurements, each on the data and CLIP of ``tools/benchmark_synthetic.py --output DIR``:

* ``teacher``: top-1 accuracy of the CLIP teacher's crop embeddings against the class text
  embeddings on the validation ground-truth boxes, for several crop framings;
* ``proposals``: what online distillation distils: the share of a trained model's top-K RPN
  proposals that cover an object (IoU >= 0.5), and the teacher's accuracy on those;
* ``temperature``: the ViLD-text loss (softmax cross-entropy over the base classes) that the
  teacher's crop embeddings of the validation base objects would get, per classifier
  temperature: what ViLD-text asks of an embedding that ViLD-image pulls towards the teacher;
* ``train``: one detector trained with the benchmark's config plus ``KEY VALUE`` overrides,
  then evaluated (base / novel / all AP50) plain and with the ViLD-ensemble;
* ``image-head``: a detector trained with ``MODEL.OVDET.DISTILL.IMAGE_HEAD`` (ViLD's separate
  ViLD-text and ViLD-image heads), evaluated with both heads' scores joined (as it predicts),
  with the classifier's alone and with the image head's alone.

Examples::

    python -m benchmarks.vild_image_ablation teacher --bench /tmp/bench_small
    python -m benchmarks.vild_image_ablation proposals --bench /tmp/bench_small
    python -m benchmarks.vild_image_ablation temperature --bench /tmp/bench_small --images 250
    python -m benchmarks.vild_image_ablation train --bench /tmp/bench_small --small \\
        --output /tmp/abl/w01 MODEL.OVDET.DISTILL.MODE online MODEL.OVDET.DISTILL.WEIGHT 0.1
    python -m benchmarks.vild_image_ablation image-head --bench /tmp/bench \\
        --checkpoint /tmp/image_head/vild/model_final.pt
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import box_iou

from ovdet.core.teacher import ClipRegionTeacher

logger = logging.getLogger(__name__)

#: Crop framings compared by ``teacher``: name -> (box scales, square windows).
FRAMINGS: dict[str, tuple[tuple[float, ...], bool]] = {
    "1.0x": ((1.0,), False),
    "1.0x + 1.5x (ViLD)": ((1.0, 1.5), False),
    "1.5x": ((1.5,), False),
    "1.5x square": ((1.5,), True),
    "2.0x square": ((2.0,), True),
}


def _square(boxes: torch.Tensor) -> torch.Tensor:
    """Square windows on the boxes' centres, side = the longest side. Tensor[N, 4] -> [N, 4]."""
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]).max(dim=1, keepdim=True).values / 2
    return torch.cat([centres - half, centres + half], dim=1)


def _val_records(bench: Path):
    from ovdet.data.coco import load_coco_detection

    data = bench / "data"
    return load_coco_detection(
        str(data / "annotations" / "instances_val.json"), str(data / "images" / "val"),
        split=None, filter_empty=False,
    )  # fmt: skip


def _image(path) -> torch.Tensor:
    from ovdet.data.image_io import read_image

    return torch.from_numpy(np.array(read_image(str(path)))).permute(2, 0, 1).float()[None] / 255


def _novel_mask(bench: Path, names: list[str]) -> torch.Tensor:
    novel = set(json.loads((bench / "data" / "split.json").read_text())["novel"])
    return torch.tensor([n in novel for n in names])


@dataclass(frozen=True)
class _GroundTruth:
    """The first validation images of a benchmark folder, their boxes and the CLIP's classes."""

    clip: object  # the benchmark's CLIP (a ClipBackend)
    text: torch.Tensor  # Tensor[C, D], the classes' text embeddings
    novel: torch.Tensor  # BoolTensor[C]
    images: list  # per image Tensor[1, 3, H, W], RGB in [0, 1]
    boxes: list  # per image Tensor[N_i, 4]
    labels: torch.Tensor  # LongTensor[sum N_i], 0-based classes of the boxes


def _ground_truth(bench: Path, num_images: int) -> _GroundTruth:
    from ovdet.clip.text_classifier import TextClassifierBuilder

    builder = TextClassifierBuilder(f"local-dir:{bench / 'clip' / 'model'}", "vild")
    records = _val_records(bench)
    kept = records.images[:num_images]
    return _GroundTruth(
        clip=builder.clip,
        text=builder(records.class_names).float(),
        novel=_novel_mask(bench, records.class_names),
        images=[_image(r.path) for r in kept],
        boxes=[torch.from_numpy(r.boxes).float() for r in kept],
        labels=torch.cat([torch.from_numpy(r.labels) - 1 for r in kept]),
    )


def teacher_accuracy(bench: Path, num_images: int) -> None:
    """Prints the teacher's top-1 on ground-truth boxes per framing, base and novel."""
    gt = _ground_truth(bench, num_images)
    text, images, boxes, labels = gt.text, gt.images, gt.boxes, gt.labels
    is_novel = gt.novel[labels]
    print("| crop framing | base | novel | cos(crop, its class's text) |")
    print("|---|---|---|---|")
    for name, (scales, square) in FRAMINGS.items():
        teacher = ClipRegionTeacher.from_clip(gt.clip, scales)
        emb = torch.cat(
            [teacher(im, [_square(b) if square else b]) for im, b in zip(images, boxes)]
        )
        right = (emb @ text.t()).argmax(dim=1) == labels
        cos = (emb * text[labels]).sum(dim=1).mean()
        print(
            f"| {name} | {right[~is_novel].float().mean():.3f} | "
            f"{right[is_novel].float().mean():.3f} | {cos:.3f} |"
        )
    print(f"({len(labels)} boxes on {len(images)} validation images)")


@torch.no_grad()
def teacher_text_loss(bench: Path, num_images: int, temperatures: tuple[float, ...]) -> None:
    """Prints, per temperature, ViLD-text's loss of the teacher's 1.5x crop embeddings of the
    base objects (cross-entropy over the base classes' text embeddings, no background), and of
    the classes' own text embeddings (the least any embedding of the class gets)."""
    gt = _ground_truth(bench, num_images)
    teacher = ClipRegionTeacher.from_clip(gt.clip, (1.5,))
    emb = torch.cat([teacher(image, [boxes]) for image, boxes in zip(gt.images, gt.boxes)])
    base = ~gt.novel
    on_base = base[gt.labels]
    # indices of the base classes in the base-only classifier
    base_index = torch.cumsum(base.long(), 0) - 1
    targets = base_index[gt.labels[on_base]]
    base_text = gt.text[base]
    print("| temperature | teacher's crop embeddings | the classes' own text embeddings |")
    print("|---|---|---|")
    for t in temperatures:
        crop_loss = F.cross_entropy(t * emb[on_base] @ base_text.t(), targets)
        text_loss = F.cross_entropy(t * base_text @ base_text.t(), torch.arange(len(base_text)))
        print(f"| {t:g} | {crop_loss:.3f} | {text_loss:.3f} |")
    print(f"({int(on_base.sum())} base objects on {len(gt.images)} validation images)")


@torch.no_grad()
def proposal_coverage(bench: Path, checkpoint: Path, scales: tuple[float, ...]) -> None:
    """Prints, per top-K, the share of RPN proposals on an object and the teacher's top-1 there."""
    from ovdet.api import OVDetector

    detector = OVDetector.from_checkpoint(checkpoint, device="cpu")
    records = _val_records(bench)
    detector.set_classes(records.class_names)
    text, novel = detector.head.text_embeddings, detector.head.is_novel_class
    teacher = ClipRegionTeacher.from_clip(detector._text.clip, scales)
    model = detector.model
    per_image = []
    for r in records.images:
        image = _image(r.path)
        tensor, scale, _ = detector._prepare(r.path)
        batch, _ = model.transform([tensor])
        proposals, _ = model.rpn(batch, model.backbone(batch.tensors))
        per_image.append((image, proposals[0] / scale, r))
    print("| proposals per image | on an object | on a novel object | teacher top-1 on those |")
    print("|---|---|---|---|")
    for k in (4, 8, 16, 32):
        total = on_object = on_novel = right = 0
        for image, proposals, r in per_image:
            top = proposals[:k]
            total += len(top)
            if len(r.boxes) == 0:
                continue
            best, index = box_iou(top, torch.from_numpy(r.boxes).float()).max(dim=1)
            labels = torch.from_numpy(r.labels)[index] - 1
            covers = best >= 0.5
            predicted = (teacher(image, [top]) @ text.t()).argmax(dim=1)
            on_object += int(covers.sum())
            on_novel += int((covers & novel[labels]).sum())
            right += int(((predicted == labels) & covers).sum())
        print(
            f"| top {k} | {on_object / total:.2f} | {on_novel / total:.2f} | "
            f"{right / max(on_object, 1):.3f} |"
        )


def _ap50(detector, records, bench: Path) -> str:
    """``base | novel | all`` AP50 of a loaded detector on the validation ``records``."""
    from ovdet.evaluation import evaluate_coco
    from ovdet.tv.engine.inference import inference_on_records

    results = inference_on_records(detector.model, records, detector.cfg, "cpu", progress=False)
    data = bench / "data"
    m = evaluate_coco(
        str(data / "annotations" / "instances_val.json"), results, str(data / "split.json")
    )
    return " | ".join(f"{m[g]['AP50']:.3f}" for g in ("base", "novel", "all"))


def train_and_evaluate(bench: Path, output: Path, small: bool, overrides: list[str]) -> None:
    """Trains one detector on the benchmark's data (its config, size and seed, plus
    ``overrides``) and prints AP50 plain and with the ensemble."""
    from ovdet.api import OVDetector
    from ovdet.ovbench.data import BenchmarkData
    from ovdet.ovbench.plan import SIZES, Detector
    from ovdet.ovbench.stages import detector_config
    from ovdet.tv.engine.trainer import Trainer

    # the benchmark's own config of a detector named after the output folder
    size = SIZES["small" if small else "default"]
    cfg = detector_config(
        output.parent, BenchmarkData(bench.resolve() / "data"),
        f"local-dir:{bench / 'clip' / 'model'}", Detector(output.name, tuple(overrides)),
        size, 0, "cpu", (),
    )  # fmt: skip
    if not (output / "model_final.pt").is_file():
        Trainer(cfg, resume=True, progress=False).train()
    detector = OVDetector.from_checkpoint(output / "model_final.pt", device="cpu")
    records = _val_records(bench)
    detector.set_classes(records.class_names)
    for ensemble in (False, True):
        detector.enable_clip_rescoring(ensemble)
        ap50 = _ap50(detector, records, bench).replace(" | ", " / ")
        print(f"{'with' if ensemble else 'without'} the ensemble: AP50 base / novel / all {ap50}")


def image_head_scores(bench: Path, checkpoint: Path) -> None:
    """Prints the AP50 of a detector with ViLD's separate image head, scored three ways."""
    from ovdet.api import OVDetector
    from ovdet.core import get_head
    from ovdet.ovbench.stages import EVAL_SCORE_THRESH

    detector = OVDetector.from_checkpoint(checkpoint, device="cpu")
    head = get_head(detector.model)
    if head.image_projection is None:
        raise SystemExit(f"{checkpoint} has no image head (MODEL.OVDET.DISTILL.IMAGE_HEAD)")
    records = _val_records(bench)
    detector.set_classes(records.class_names)
    image_projection, weights = head.image_projection, head.vild_ensemble
    both = f"both heads (classifier weights {weights.base_weight} / {weights.novel_weight})"
    scorings = {
        both: (image_projection, weights),
        "the classifier alone": (None, weights),
        "the image head alone": (image_projection, replace(weights, base_weight=0, novel_weight=0)),
    }
    print("| scores | base AP50 | novel AP50 | all AP50 |\n|---|---|---|---|")
    try:
        for name, (projection, head.vild_ensemble) in scorings.items():
            head.image_projection = projection
            with head.score_threshold(EVAL_SCORE_THRESH):  # as the benchmark evaluates
                print(f"| {name} | {_ap50(detector, records, bench)} |")
    finally:
        head.image_projection, head.vild_ensemble = image_projection, weights


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "what",
        choices=("teacher", "proposals", "temperature", "train", "image-head"),
        help="measurement",
    )
    parser.add_argument("--bench", type=Path, required=True, help="a finished benchmark folder")
    parser.add_argument(
        "--images", type=int, default=60, help="validation images (teacher, temperature)"
    )
    parser.add_argument(
        "--temperatures", type=float, nargs="+", default=[20.0, 50.0],
        help="classifier temperatures compared (temperature)",
    )  # fmt: skip
    parser.add_argument(
        "--checkpoint", type=Path, default=None,
        help="model whose RPN proposes (proposals; default: BENCH/vild_text/model_final.pt), "
        "or with the image head (image-head)",
    )  # fmt: skip
    parser.add_argument(
        "--scales", type=float, nargs="+", default=[1.5], help="teacher crop scales (proposals)"
    )
    parser.add_argument("--output", type=Path, help="training folder (train)")
    parser.add_argument("--small", action="store_true", help="the --small size (train)")
    parser.add_argument("overrides", nargs="*", help="config KEY VALUE pairs (train)")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_intermixed_args(argv)  # KEY VALUE pairs after the options


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.what == "teacher":
        teacher_accuracy(args.bench, args.images)
    elif args.what == "temperature":
        teacher_text_loss(args.bench, args.images, tuple(args.temperatures))
    elif args.what == "proposals":
        checkpoint = args.checkpoint or args.bench / "vild_text" / "model_final.pt"
        proposal_coverage(args.bench, checkpoint, tuple(args.scales))
    elif args.what == "image-head":
        if args.checkpoint is None:
            build_parser().error("image-head needs --checkpoint")
        image_head_scores(args.bench, args.checkpoint)
    else:
        if args.output is None:
            build_parser().error("train needs --output")
        train_and_evaluate(args.bench, args.output, args.small, args.overrides)


if __name__ == "__main__":
    main()

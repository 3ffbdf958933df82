"""How often the image-label loss gives each label a region that is an object of that label.

The image-label loss (:func:`ovdet.core.weak_supervision.image_label_loss`) never sees a box: it
picks, per label of an image, one of the image's regions (the top ``NUM_PROPOSALS`` proposals
and the whole-image box, :meth:`~ovdet.core.OpenVocabularyHead.weak_regions`) by one of the
rules of :data:`~ovdet.core.weak_supervision.IMAGE_LABEL_REGIONS`, and teaches it the label.
On images whose boxes are known but hidden from training (the synthetic image-labelled split
writes them to ``annotations/instances_weak.json``), this script runs a checkpoint as the loss
would and counts, per rule, the labels whose chosen region overlaps a box of that label at IoU
>= 0.5; and, as the ceiling of any rule, the labels for which some proposal does. With a split
file the counts are per base and novel classes.

The regions come from the checkpoint in inference mode (the test-time RPN and image size), so
they are close to, not the same as, the regions of a training step.

Example (a synthetic benchmark run's box-trained detector (c))::

    python -m benchmarks.weak_region_quality --checkpoint RUN/vild_text/model_final.pt \\
        --boxes RUN/data/annotations/instances_weak.json --images RUN/data/images/weak \\
        --split RUN/data/split.json --max-images 200
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

import torch
from torchvision.ops import box_iou
from tqdm import tqdm

from ovdet.core.weak_supervision import IMAGE_LABEL_REGIONS, choose_label_regions
from ovdet.data.coco import load_coco_detection
from ovdet.utils.errors import DataError

#: IoU from which a chosen region counts as the labelled object (the AP50 criterion).
IOU_THRESH = 0.5


def label_region_hits(
    regions: torch.Tensor,
    logits: torch.Tensor,
    labels: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_classes: torch.Tensor,
    method: str,
) -> torch.Tensor:
    """Whether each label's region under ``method`` is an object of that label.

    Args:
        regions: Tensor[N, 4] (x1, y1, x2, y2), the proposals then the whole-image box last.
        logits: Tensor[N, C + 1], the regions' logits (background last).
        labels: LongTensor[L], the image's distinct labels.
        gt_boxes: Tensor[G, 4] (x1, y1, x2, y2), the image's objects, in the regions' frame.
        gt_classes: LongTensor[G], their classes.
        method: a rule of :data:`~ovdet.core.weak_supervision.IMAGE_LABEL_REGIONS`.

    Returns:
        BoolTensor[L]: the chosen region has IoU >= 0.5 with a box of the label's class.
    """
    chosen = choose_label_regions(regions, logits, labels, method)
    same_class = labels[:, None] == gt_classes[None, :]  # [L, G]
    return ((box_iou(regions[chosen], gt_boxes) >= IOU_THRESH) & same_class).any(dim=1)


def label_region_ceiling(
    regions: torch.Tensor, labels: torch.Tensor, gt_boxes: torch.Tensor, gt_classes: torch.Tensor
) -> torch.Tensor:
    """BoolTensor[L]: some proposal (not the whole-image box, the last region) has IoU >= 0.5
    with a box of each label's class: what the best choice could reach."""
    same_class = labels[:, None, None] == gt_classes[None, None, :]  # [L, 1, G]
    overlaps = box_iou(regions[:-1], gt_boxes)[None] >= IOU_THRESH  # [1, N - 1, G]
    return (overlaps & same_class).any(dim=2).any(dim=1)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--checkpoint", required=True, help="an open-vocabulary checkpoint")
    p.add_argument(
        "--boxes",
        required=True,
        help="COCO instances JSON of the image-labelled images with their (hidden) boxes",
    )
    p.add_argument("--images", required=True, help="folder of its images")
    p.add_argument(
        "--split", default="", help="a split spec, e.g. JSON {'base': [...], 'novel': [...]}"
    )
    p.add_argument(
        "--num-proposals",
        type=int,
        default=0,
        help="proposals the region is chosen from (default: the checkpoint's "
        "MODEL.OVDET.WEAK.NUM_PROPOSALS)",
    )
    p.add_argument("--max-images", type=int, default=0, help="the first N images (0: all)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    p.add_argument("--json", default="", help="also write the counts to this file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


@torch.no_grad()
def main(argv: Sequence[str] | None = None) -> dict:
    from ovdet.api import OVDetector

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    records = load_coco_detection(
        args.boxes, args.images, split=args.split or None, keep=("base", "novel")
    )
    images = records.images[: args.max_images] if args.max_images > 0 else records.images
    if not images:
        raise DataError(
            f"{args.boxes} has no boxes: the region choice cannot be checked against it"
        )
    names, split = records.class_names, records.split
    detector = OVDetector.from_checkpoint(args.checkpoint)
    detector.set_classes(names)
    head, model = detector.head, detector.model
    k = args.num_proposals or detector.cfg.MODEL.OVDET.WEAK.NUM_PROPOSALS
    kinds = ("base", "novel") if split is not None else ("all",)
    counts = {rule: {kind: [0, 0] for kind in kinds} for rule in (*IMAGE_LABEL_REGIONS, "ceiling")}
    for record in tqdm(images, desc="images", unit="img", disable=args.no_progress):
        tensor, scale, _ = detector._prepare(record.path)
        batch, _ = model.transform([tensor.to(detector.device)])
        features = model.backbone(batch.tensors)
        proposals, _ = model.rpn(batch, features)
        regions = head.weak_regions([p[:k] for p in proposals], batch.image_sizes)
        box_features = model.roi_heads.box_features(features, regions, batch.image_sizes)
        logits = head.classifier.logits_from_embeddings(head.embed(box_features)).cpu()
        regions = regions[0].cpu()
        gt = torch.from_numpy(record.boxes).float() * scale.float()
        gt_classes = torch.from_numpy(record.labels) - 1
        labels = torch.unique(gt_classes)
        results = {
            rule: label_region_hits(regions, logits, labels, gt, gt_classes, rule)
            for rule in IMAGE_LABEL_REGIONS
        }
        results["ceiling"] = label_region_ceiling(regions, labels, gt, gt_classes)
        for rule, hits in results.items():
            for label, hit in zip(labels.tolist(), hits.tolist()):
                kind = split.kind(names[label]) if split is not None else "all"
                counts[rule][kind][0] += int(hit)
                counts[rule][kind][1] += 1
    print(f"labels whose region is an object of that label (IoU >= {IOU_THRESH}), {len(images)} "
          f"images, top {k} proposals + the whole-image box:")  # fmt: skip
    print("| region choice | " + " | ".join(kinds) + " |")
    print("|---|" + "---|" * len(kinds))
    for rule, by_kind in counts.items():
        cells = [f"{h / max(n, 1):.3f} ({h}/{n})" for h, n in by_kind.values()]
        print(f"| {rule} | " + " | ".join(cells) + " |")
    report = {"checkpoint": args.checkpoint, "images": len(images), "num_proposals": k,
              "counts": counts}  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()

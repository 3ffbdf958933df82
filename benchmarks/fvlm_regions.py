"""How well CLIP names a region from a crop and from the frozen backbone's pooled features.

F-VLM (``docs/fvlm.md``) scores a region by CLIP's attention pool over the region pooled from
its frozen backbone's res5 map; crop rescoring by CLIP's image tower on the crop. On the
validation images of a synthetic benchmark run with ``--fvlm`` this script takes every
ground-truth box and counts how often each embedding is nearest to the text embedding of the
box's own class among all of the run's class names (zero-shot accuracy): crops at the box and
at 1.5 x the box (the run's CLIP was trained on 1.5 x crops), and regions pooled from the
``fvlm`` detector's frozen tower at the same scales.

Example::

    python -m benchmarks.fvlm_regions RUN   # a --fvlm run's folder
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

import torch
from tqdm import tqdm

#: Box scales of the crops and of the pooled regions.
SCALES = (1.0, 1.5)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="a synthetic benchmark run's folder (with --fvlm)")
    p.add_argument("--max-images", type=int, default=0, help="validation images (0: all)")
    return p.parse_args(argv)


@torch.no_grad()
def region_accuracy(run: Path, max_images: int = 0, progress: bool = True) -> dict:
    """Zero-shot accuracy of crops and pooled regions on ``run``'s validation boxes.

    Returns:
        ``{"crop@S": accuracy, "pooled@S": accuracy, ..., "boxes": N}``.
    """
    from ovdet.api import OVDetector
    from ovdet.core.teacher import ClipRegionTeacher, scale_boxes
    from ovdet.data.coco import load_coco_detection
    from ovdet.data.image_io import load_image

    checkpoint = run / "fvlm" / "model_final.pt"
    if not checkpoint.is_file():
        raise SystemExit(f"error: {run} has no F-VLM detector (run the benchmark with --fvlm)")
    detector = OVDetector.from_checkpoint(checkpoint)
    records = load_coco_detection(
        str(run / "data/annotations/instances_val.json"), str(run / "data/images/val"),
        split=None, filter_empty=False,
    )  # fmt: skip
    detector.set_classes(records.class_names)
    text = detector.head.text_embeddings
    teacher = ClipRegionTeacher.from_clip(detector._text.clip)
    model, tower = detector.model, detector.model.backbone.clip
    hits = {f"{kind}@{s}": 0 for kind in ("crop", "pooled") for s in SCALES}
    count = 0
    images = records.images[:max_images] if max_images else records.images
    for record in tqdm(images, desc="images", disable=not progress):
        if not len(record.boxes):
            continue
        pixels = torch.from_numpy(load_image(record.path).array.copy()).permute(2, 0, 1) / 255
        boxes = torch.as_tensor(record.boxes, dtype=torch.float32)  # x1, y1, x2, y2 pixels
        labels = torch.as_tensor(record.labels) - 1  # 1..C -> index into the class names
        res5 = tower(model.transform([pixels])[0].tensors)["res5"]
        for s in SCALES:
            crops = teacher(pixels[None], [boxes], (s,))
            pooled = tower.region_embeddings(res5, [scale_boxes(boxes, s)])
            for kind, embeddings in (("crop", crops), ("pooled", pooled)):
                right = (embeddings @ text.t()).argmax(dim=1) == labels
                hits[f"{kind}@{s}"] += int(right.sum())
        count += len(labels)
    return {**{k: v / max(1, count) for k, v in hits.items()}, "boxes": count}


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    result = region_accuracy(args.run, args.max_images)
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()

"""Offline ViLD-image distillation: precompute CLIP embeddings of fixed proposals.

ViLD distils CLIP's image embeddings of proposal crops into the detector. Running CLIP in the
training loop (``MODEL.OVDET.DISTILL.MODE online``) costs a CLIP forward pass per proposal per
iteration; the offline mode reads embeddings computed once by :func:`precompute_clip_embeddings`
(``tools/precompute_clip_embeddings.py``) for a fixed set of proposals per image.

The file is a ``torch.save`` of::

    {"images": {image_id: {"boxes": Tensor[M, 4] (x1, y1, x2, y2, pixels of the JSON's
                                                  width x height),
                           "embeddings": Tensor[M, D] (L2-normalised, float32)}},
     "clip": "<CLIP spec>", "crop_scales": [1.0, 1.5], "num_proposals": M}

and is read by :func:`ovdet.data.distill_store.load_distill_store`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
from tqdm import tqdm

from ovdet.data.coco import DatasetRecords
from ovdet.data.image_io import read_image
from ovdet.utils.errors import DataError, ImageError

__all__ = ["precompute_clip_embeddings", "proposals_from_results"]

logger = logging.getLogger(__name__)


def proposals_from_results(results: list[dict], num_proposals: int) -> dict[int, torch.Tensor]:
    """Proposals from COCO-format results (``image_id``, ``bbox`` xywh, optional ``score``).

    Returns:
        image_id -> Tensor[M, 4] xyxy, the ``num_proposals`` highest-scoring boxes.
    """
    per_image: dict[int, list[tuple[float, list[float]]]] = {}
    for i, r in enumerate(results):
        try:
            x, y, w, h = (float(v) for v in r["bbox"])
            per_image.setdefault(int(r["image_id"]), []).append(
                (float(r.get("score", 1.0)), [x, y, x + w, y + h])
            )
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"proposal #{i} needs 'image_id' and 'bbox' [x, y, w, h]: {e}") from e
    out = {}
    for image_id, items in per_image.items():
        items.sort(key=lambda item: -item[0])
        out[image_id] = torch.tensor([b for _, b in items[:num_proposals]], dtype=torch.float32)
    return out


@torch.no_grad()
def _rpn_proposals(detector, image: np.ndarray, num_proposals: int) -> torch.Tensor:
    """The top RPN proposals of an :class:`~ovdet.api.OVDetector` in ``image``'s pixels."""
    tensor, scale, _ = detector._prepare(image)
    model = detector.model
    images_t, _ = model.transform([tensor.to(detector.device)])
    proposals, _ = model.rpn(images_t, model.backbone(images_t.tensors))
    return proposals[0][:num_proposals].float().cpu() / scale  # scale: Tensor[4] (sx, sy, sx, sy)


@torch.no_grad()
def precompute_clip_embeddings(
    records: DatasetRecords,
    teacher,
    output: str | Path,
    *,
    proposals: Mapping[int, torch.Tensor] | None = None,
    detector=None,
    num_proposals: int = 32,
    clip_spec: str = "",
    max_load_pixels: int = 0,
    device: str = "cpu",
    progress: bool = True,
) -> dict[str, int]:
    """Embed fixed proposals of every image with CLIP and write the offline-distillation file.

    Args:
        records: the training images (see :func:`ovdet.data.coco.load_coco_detection`).
        teacher: a :class:`~ovdet.core.ClipRegionTeacher`.
        output: the file to write (atomically).
        proposals: image_id -> Tensor[M, 4] xyxy boxes in the JSON's pixels; or
        detector: an :class:`~ovdet.api.OVDetector` whose RPN proposes the boxes.
        num_proposals: boxes kept per image (the first ones: highest score).
        clip_spec: recorded in the file.
        max_load_pixels: images larger than this are downscaled when read (boxes are not).
        device: where CLIP runs.
        progress: show a progress bar.

    Returns:
        ``{"images": written, "boxes": total, "skipped": unreadable or without proposals}``.
    """
    from ovdet.utils.io import atomic_torch_save

    if (proposals is None) == (detector is None):
        raise ValueError("give exactly one of proposals and detector")
    teacher = teacher.to(device).eval()
    store, skipped, total = {}, 0, 0
    for rec in tqdm(records.images, desc="CLIP embeddings", disable=not progress, unit="img"):
        try:
            image = read_image(rec.path, max_load_pixels)
        except ImageError as e:
            logger.warning("skipping %s", e)
            skipped += 1
            continue
        sx, sy = image.shape[1] / rec.width, image.shape[0] / rec.height
        to_image = torch.tensor([sx, sy, sx, sy])  # JSON pixels -> pixels of the read image
        if detector is not None:
            boxes = _rpn_proposals(detector, image, num_proposals) / to_image
        else:
            boxes = proposals.get(rec.image_id)
            if boxes is None or len(boxes) == 0:
                skipped += 1
                continue
            boxes = boxes[:num_proposals].float()
        boxes = boxes.clamp(min=0) if len(boxes) else boxes.reshape(0, 4)
        pixels = torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1).float() / 255.0
        in_image = boxes * to_image
        embeddings = teacher(pixels[None].to(device), [in_image.to(device)]).float().cpu()
        store[rec.image_id] = {"boxes": boxes.contiguous(), "embeddings": embeddings}
        total += len(boxes)
    if not store:
        raise DataError("no image got proposals; nothing to write")
    atomic_torch_save(
        {
            "images": store,
            "clip": clip_spec,
            "crop_scales": list(teacher.crop_scales),
            "num_proposals": num_proposals,
        },
        output,
    )
    logger.info("wrote CLIP embeddings of %d boxes in %d images to %s", total, len(store), output)
    return {"images": len(store), "boxes": total, "skipped": skipped}

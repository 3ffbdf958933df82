"""Batch inference over a dataset into COCO-format results (sharded over torchrun's processes)."""

from __future__ import annotations

import logging
from typing import Sequence, TypeVar

import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from ovdet.core.masks import paste_masks
from ovdet.data.coco import DatasetRecords
from ovdet.data.dataset import DetectionDataset, collate
from ovdet.data.transforms import build_augmentation
from ovdet.structures.masks import mask_to_rle
from ovdet.tv.engine import distributed as comm
from ovdet.utils.errors import ImageError

__all__ = [
    "detections_to_coco",
    "gather_image_detections",
    "inference_on_records",
    "predict_coco_dataset",
    "shard_files",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")


def detections_to_coco(
    det: dict,
    image_id: int,
    scale: float | tuple[float, float],
    category_ids,
    image_size: tuple[int, int] | None = None,
) -> list[dict]:
    """One image's detections (in resized pixels) -> COCO results (original pixels, xywh).

    ``scale`` is resized / original size: one factor, or (x, y) factors. Detections with
    ``mask_probs`` (``MODEL.MASK_ON``) also get a ``segmentation`` (RLE) of the original image,
    of size ``image_size`` (H, W).
    """
    sx, sy = scale if isinstance(scale, (tuple, list)) else (scale, scale)
    boxes = det["boxes"].float().cpu() / torch.tensor([sx, sy, sx, sy])
    scores = det["scores"].float().cpu().tolist()
    labels = det["labels"].cpu().tolist()
    masks = None
    if "mask_probs" in det and image_size is not None:
        masks = paste_masks(det["mask_probs"].float().cpu(), boxes, image_size).numpy()
    out = []
    for k, ((x1, y1, x2, y2), s, c) in enumerate(zip(boxes.tolist(), scores, labels)):
        out.append(
            {
                "image_id": image_id,
                "category_id": category_ids[c],
                "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                "score": round(float(s), 5),
            }
        )
        if masks is not None:
            out[-1]["segmentation"] = mask_to_rle(masks[k])
    return out


@torch.no_grad()
def inference_on_records(
    model,
    records: DatasetRecords,
    cfg,
    device="cpu",
    batch_size: int = 2,
    closed_set: bool = False,
    progress: bool = True,
    failed: list[str] | None = None,
) -> list[dict]:
    """Run a detector over every image of ``records``.

    Under torchrun the images are dealt out to the processes batch by batch (each batch the one
    a single process runs, :func:`~ovdet.tv.engine.distributed.shard_batches`) and the results
    gathered: every process returns all results, in the order of one process.

    Args:
        model: an :class:`~ovdet.tv.OpenVocabularyFasterRCNN` whose vocabulary is
            ``records.class_names`` (same order), or a closed-set torchvision Faster R-CNN
            (``closed_set=True``; labels 1..C).
        records: the dataset (its ``category_ids`` map class indices to COCO ids).
        failed: if given, extended with one message per image that could not be read (of all
            processes, in image order).

    Returns:
        COCO-format results. Images that cannot be read are skipped with a warning: they get no
        detections.
    """
    dataset = _SkipUnreadable(
        DetectionDataset(
            records,
            build_augmentation(cfg, is_train=False),
            max_load_pixels=cfg.INPUT.MAX_LOAD_PIXELS,
        )
    )
    model.eval()
    per_image: list[tuple[int, list[dict]]] = []  # (image index, its COCO results)
    use_amp = torch.device(device).type == "cuda" and cfg.SOLVER.AMP.ENABLED
    batches = comm.shard_batches(len(dataset), batch_size)
    for batch in tqdm(batches, desc="inference", disable=not progress, leave=False):
        items = [(i, dataset[i]) for i in batch]
        items = [(i, item) for i, item in items if item is not None]
        if not items:
            continue
        images, targets = collate([item for _, item in items])
        with torch.autocast("cuda", enabled=use_amp):
            dets = model([im.to(device) for im in images])
        for (index, _), det, t in zip(items, dets, targets):
            if closed_set:
                det = {**det, "labels": det["labels"] - 1}
            rec = records.images[index]
            coco = detections_to_coco(
                det, t["image_id"], t["scale"], records.category_ids, (rec.height, rec.width)
            )
            per_image.append((index, coco))
    results = [r for image_results in comm.gather_in_order(per_image) for r in image_results]
    unreadable = comm.gather_in_order(dataset.failed)
    if unreadable and comm.is_main_process():
        logger.warning(
            "%d image(s) could not be read and have no detections: %s",
            len(unreadable),
            "; ".join(unreadable[:3]),
        )
    if failed is not None:
        failed.extend(unreadable)
    return results


class _SkipUnreadable(Dataset):
    """A dataset whose unreadable images give ``None`` (and are listed in ``failed``), so that
    one bad file does not throw away the detections of every other image."""

    def __init__(self, dataset: DetectionDataset) -> None:
        self.dataset = dataset
        self.failed: list[tuple[int, str]] = []  # (index, message)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        try:
            return self.dataset[index]
        except ImageError as e:
            self.failed.append((index, str(e)))
            return None


def predict_coco_dataset(
    checkpoint: str,
    gt_json: str,
    image_root: str,
    device: str = "cpu",
    batch_size: int = 2,
    failed: list[str] | None = None,
    score_thresh: float | None = None,
) -> list[dict]:
    """Detect every category of a COCO JSON (the generalized setting) with a checkpoint.

    Started by torchrun, the processes join one group and share the images
    (:func:`inference_on_records`); every process returns all results. ``failed`` as there;
    ``score_thresh`` replaces the checkpoint's test threshold (``None``: keep it).
    """
    from ovdet.core import get_head
    from ovdet.data.coco import load_coco_detection
    from ovdet.tv.predictor import OVDetector

    comm.init_distributed(torch.device(device).type)
    device = str(comm.local_device(device))
    detector = OVDetector.from_checkpoint(checkpoint, device=device)
    records = load_coco_detection(gt_json, image_root, split=None, filter_empty=False)
    detector.set_classes(records.class_names)
    with get_head(detector.model).score_threshold(score_thresh):
        return inference_on_records(
            detector.model, records, detector.cfg, device, batch_size, failed=failed
        )


def shard_files(files: Sequence[T], batch_size: int) -> list[T]:
    """This process's share of ``files`` run ``batch_size`` at a time (all of them without
    torchrun): whole batches of one process (:func:`~ovdet.tv.engine.distributed.shard_batches`)."""
    return [files[i] for batch in comm.shard_batches(len(files), batch_size) for i in batch]


def gather_image_detections(
    files: Sequence, results: list[dict], images: list[dict], failed: list[str]
) -> tuple[list[dict], list[dict], list[str]]:
    """Every process's detections on its :func:`shard_files` share -> those of one process.

    Args:
        files: all the image files, in the order one process runs them.
        results: this process's detections, each with ``image_id`` and ``file_name``.
        images: this process's images, ``{"id", "file_name", ...}`` numbered from 1.
        failed: this process's unreadable files (``str(path)``).

    Returns:
        (results, images, failed) of all processes in file order, the images numbered 1, 2, ...
        as one process numbers them, on every process. Without torchrun, the inputs.
    """
    if not comm.is_distributed():
        return results, images, failed
    position = {str(f): i for i, f in enumerate(files)}
    parts = comm.all_gather_object((results, images, failed))
    all_images = sorted(
        ((position[im["file_name"]], rank, im) for rank, (_, ims, _) in enumerate(parts)
         for im in ims),
        key=lambda x: x[0],
    )  # fmt: skip
    new_id = {(rank, im["id"]): i + 1 for i, (_, rank, im) in enumerate(all_images)}
    merged_images = [{**im, "id": new_id[rank, im["id"]]} for _, rank, im in all_images]
    merged_results = sorted(
        ({**r, "image_id": new_id[rank, r["image_id"]]} for rank, (res, _, _) in enumerate(parts)
         for r in res),
        key=lambda r: r["image_id"],
    )  # fmt: skip
    merged_failed = sorted((f for _, _, fs in parts for f in fs), key=position.__getitem__)
    return merged_results, merged_images, merged_failed

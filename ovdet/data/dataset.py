"""The training/evaluation dataset and its deterministic, resumable sampler."""

from __future__ import annotations

from typing import Iterator

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ovdet.data.coco import DatasetRecords
from ovdet.data.image_io import read_image
from ovdet.data.image_labels import ImageLabelRecords
from ovdet.data.segmentation import decode_masks

__all__ = [
    "DetectionDataset",
    "ImageLabelDataset",
    "ResumableTrainingSampler",
    "collate",
    "mixed_batch_kinds",
]


class DetectionDataset(Dataset):
    """Images and targets of a :class:`DatasetRecords`, through an albumentations pipeline.

    Items are addressed by ``(index, seed)``: the seed fixes the random augmentation of that
    sample, so a resumed run sees exactly the data an uninterrupted run would have seen.

    Args:
        records: the loaded dataset.
        augmentation: an albumentations ``Compose`` (see :func:`build_augmentation`).
        distill_store: optional precomputed CLIP embeddings (offline distillation), a mapping
            image_id -> (boxes float [M, 4] xyxy in original pixels, embeddings [M, D]).
        max_load_pixels: images larger than this are downscaled on load.
    """

    def __init__(self, records: DatasetRecords, augmentation, distill_store=None,
                 max_load_pixels: int = 0) -> None:  # fmt: skip
        self.records = records
        self.augmentation = augmentation
        self.distill_store = distill_store
        self.max_load_pixels = max_load_pixels

    def __len__(self) -> int:
        return len(self.records.images)

    def __getitem__(self, key) -> tuple[torch.Tensor, dict]:
        """``(index, seed)`` or ``index`` -> (Tensor[3, H, W] in [0, 1], target dict).

        The target holds ``boxes`` Tensor[K, 4], ``labels`` Tensor[K] (1..C), ``image_id``,
        ``scale`` (x, y: resized / original size), ``sample_seed`` (the seed of the sample's
        random training-region sampling, ovdet.tv.modeling.sampling), with segmentations
        (records loaded ``with_masks``) ``masks`` uint8 Tensor[K, H, W] moved with the boxes,
        and with a distill store ``distill_boxes`` Tensor[M, 4] and ``distill_embeddings``
        Tensor[M, D].
        """
        index, seed = key if isinstance(key, tuple) else (key, index_seed(key))
        rec = self.records.images[index]
        image = read_image(rec.path, self.max_load_pixels)
        sx, sy = image.shape[1] / rec.width, image.shape[0] / rec.height
        boxes = rec.boxes * np.array([sx, sy, sx, sy], dtype=np.float32)
        labels = rec.labels.tolist()
        num_gt = len(labels)
        distill = None
        if self.distill_store is not None:
            distill = self.distill_store[rec.image_id]
            extra = distill[0].numpy() * np.array([sx, sy, sx, sy], dtype=np.float32)
            boxes = np.concatenate([boxes, extra.astype(np.float32)])
            labels = labels + [0] * len(extra)
        h0, w0 = image.shape[:2]
        boxes = _clip(boxes, w0, h0)
        inputs = {}
        if rec.segmentations is not None:
            inputs["masks"] = _masks_of(rec, image.shape[:2])
        self.augmentation.set_random_seed(int(seed))
        out = self.augmentation(
            image=image, bboxes=boxes, labels=labels, indices=list(range(len(labels))), **inputs
        )
        img = torch.from_numpy(np.array(out["image"], copy=True)).permute(2, 0, 1)
        img = img.float().div_(255.0)
        out_boxes = torch.as_tensor(np.asarray(out["bboxes"]), dtype=torch.float32).reshape(-1, 4)
        indices = torch.as_tensor(np.asarray(out["indices"]), dtype=torch.long).reshape(-1)
        is_gt = indices < num_gt
        target = {
            "boxes": out_boxes[is_gt],
            "labels": torch.as_tensor(rec.labels)[indices[is_gt]],
            "image_id": rec.image_id,
            "scale": (img.shape[2] / rec.width, img.shape[1] / rec.height),
            "sample_seed": int(seed),
        }
        if "masks" in out:
            masks = np.asarray(out["masks"], dtype=np.uint8).reshape(-1, *img.shape[1:])
            target["masks"] = torch.from_numpy(masks[indices[is_gt].numpy()])
        if distill is not None:
            keep = indices[~is_gt] - num_gt
            target["distill_boxes"] = out_boxes[~is_gt]
            target["distill_embeddings"] = distill[1][keep].float()
        return img, target


class ImageLabelDataset(Dataset):
    """Image-labelled images (weak supervision) through an albumentations pipeline.

    Items are addressed by ``(index, seed)`` like :class:`DetectionDataset`; the seed also
    picks the caption of an image with several.

    Args:
        records: the loaded image-labelled data.
        class_index: int64 [C_data]: the training vocabulary index of each of the data's classes.
        augmentation: an albumentations ``Compose`` (resize, flip, colour).
        max_load_pixels: images larger than this are downscaled on load.
    """

    def __init__(self, records: ImageLabelRecords, class_index: np.ndarray, augmentation,
                 max_load_pixels: int = 0) -> None:  # fmt: skip
        if len(class_index) != len(records.class_names):
            raise ValueError("class_index needs one entry per class of the records")
        self.records = records
        self.class_index = np.asarray(class_index, dtype=np.int64)
        self.augmentation = augmentation
        self.max_load_pixels = max_load_pixels

    def __len__(self) -> int:
        return len(self.records.images)

    def __getitem__(self, key) -> tuple[torch.Tensor, dict]:
        """``(index, seed)`` or ``index`` -> (Tensor[3, H, W] in [0, 1], target dict).

        The target holds ``image_labels`` LongTensor[L] and ``neg_labels`` LongTensor[M]
        (0-based indices into the training vocabulary), ``caption`` (one of the image's
        captions, if it has any), empty ``boxes`` Tensor[0, 4] and ``labels``, ``image_id``,
        ``scale`` and ``sample_seed``.
        """
        index, seed = key if isinstance(key, tuple) else (key, index_seed(key))
        rec = self.records.images[index]
        image = read_image(rec.path, self.max_load_pixels)
        h0, w0 = image.shape[:2]
        self.augmentation.set_random_seed(int(seed))
        out = self.augmentation(image=image, bboxes=np.zeros((0, 4), np.float32), labels=[],
                                indices=[])  # fmt: skip
        img = torch.from_numpy(np.array(out["image"], copy=True)).permute(2, 0, 1)
        img = img.float().div_(255.0)
        target = {
            "boxes": torch.zeros(0, 4),
            "labels": torch.zeros(0, dtype=torch.long),
            "image_labels": torch.from_numpy(self.class_index[rec.labels]),
            "neg_labels": torch.from_numpy(self.class_index[rec.neg_labels]),
            "image_id": rec.image_id,
            "scale": (img.shape[2] / w0, img.shape[1] / h0),
            "sample_seed": int(seed),
        }
        if rec.captions:
            target["caption"] = rec.captions[int(seed) % len(rec.captions)]
        return img, target


def mixed_batch_kinds(ratio: list[int] | tuple[int, ...], start: int, count: int) -> list[int]:
    """The kind of each training batch ``start .. start + count - 1`` when box batches (kind 0)
    and image-labelled batches (kind 1) repeat at ``ratio`` (e.g. ``[1, 4]``: one box batch,
    then four image-labelled ones). A fixed order, so that a resumed run and every process see
    the same kinds."""
    if len(ratio) != 2 or min(ratio) < 0 or sum(ratio) == 0:
        raise ValueError(f"DATALOADER.DATASET_RATIO must be two non-negative counts, got {ratio}")
    period = [0] * int(ratio[0]) + [1] * int(ratio[1])
    return [period[k % len(period)] for k in range(start, start + count)]


def _masks_of(rec, size: tuple[int, int]) -> np.ndarray:
    """uint8 [K, H, W] masks of a record's annotations at the loaded image's size (H, W): the
    JSON's size, or smaller where the image was downscaled on load."""
    masks = decode_masks(rec.segmentations, rec.width, rec.height)
    if masks.shape[1:] != tuple(size):
        masks = np.stack(
            [cv2.resize(m, size[::-1], interpolation=cv2.INTER_NEAREST) for m in masks]
        ).reshape(-1, *size)
    return masks


def _clip(boxes: np.ndarray, w: int, h: int) -> np.ndarray:
    boxes = boxes.copy()
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
    return boxes


def index_seed(index: int) -> int:
    return int(index) * 7919 + 17


def collate(batch: list) -> tuple[list[torch.Tensor], list[dict]]:
    """Keep images of different sizes as a list (the model batches and pads them)."""
    images, targets = zip(*batch)
    return list(images), list(targets)


class ResumableTrainingSampler(Sampler):
    """An endless, deterministic stream of ``(index, augmentation_seed)`` pairs.

    Epoch ``e`` is a permutation seeded by ``(seed, e)``; sample ``k`` of the stream gets the
    augmentation seed ``seed * 1_000_003 + k``. Starting at ``start`` (samples already consumed)
    reproduces the rest of an uninterrupted stream exactly. Under DDP each rank takes every
    ``world_size``-th sample, offset by its rank.
    """

    def __init__(self, size: int, seed: int = 0, start: int = 0, rank: int = 0,
                 world_size: int = 1) -> None:  # fmt: skip
        if size <= 0:
            raise ValueError("the dataset is empty")
        self.size, self.seed, self.start = size, seed, start
        self.rank, self.world_size = rank, world_size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        k = self.start * self.world_size + self.rank
        epoch, perm = -1, None
        while True:
            e, pos = divmod(k, self.size)
            if e != epoch:
                gen = torch.Generator().manual_seed(self.seed * 100_003 + e)
                epoch, perm = e, torch.randperm(self.size, generator=gen)
            yield int(perm[pos]), self.seed * 1_000_003 + k
            k += self.world_size

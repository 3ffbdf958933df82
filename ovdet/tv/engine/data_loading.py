"""The torchvision engine's training data: box records, image-labelled data, resumable loaders.

Box batches and, with ``DATASETS.WEAK_TRAIN``, image-labelled batches each come from their own
endless loader (own batch size, image size and :class:`~ovdet.data.dataset.
ResumableTrainingSampler`), in the fixed order of the weak-supervision set-up
(:meth:`~ovdet.core.weak_setup.WeakTraining.batch_kinds`), so that a resumed run and every process
see the same batches. What the data *means* for weak supervision (its vocabulary, class counts,
captions) is the core's (:mod:`ovdet.core.weak_setup`); this module adapts it to the engine's
records and builds the loaders.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ovdet.core.weak_setup import WeakData, WeakTraining, load_weak_data
from ovdet.data.coco import DatasetRecords, load_coco_detection
from ovdet.data.dataset import (
    DetectionDataset,
    ImageLabelDataset,
    ResumableTrainingSampler,
    collate,
)
from ovdet.data.distill_store import load_distill_store
from ovdet.data.transforms import build_augmentation
from ovdet.utils.errors import ConfigError

__all__ = [
    "TrainLoaders",
    "box_image_classes",
    "load_box_records",
    "load_weak_data_for",
    "to_device",
]


def load_box_records(cfg) -> DatasetRecords:
    """The box training data, ``DATASETS.TRAIN_JSON``: base classes only (with a split), and
    their masks with ``MODEL.MASK_ON``."""
    return load_coco_detection(
        cfg.DATASETS.TRAIN_JSON,
        cfg.DATASETS.TRAIN_IMAGES,
        split=cfg.DATASETS.SPLIT or None,
        keep=("base",),
        filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
        with_masks=bool(cfg.MODEL.MASK_ON),
    )


def load_weak_data_for(cfg, records: DatasetRecords) -> WeakData:
    """``DATASETS.WEAK_TRAIN`` (:func:`~ovdet.core.weak_setup.load_weak_data`) beside the box
    data ``records``: captions are searched, by default, for its split's base and novel classes
    (its classes without a split)."""
    split = records.split
    default_tags = split.all if split is not None else records.class_names
    return load_weak_data(cfg, records.class_names, default_tags)


def box_image_classes(records: DatasetRecords) -> Iterator[np.ndarray]:
    """Per box image, int64 [K]: its boxes' 0-based class indices (the records' are 1-based)."""
    return (rec.labels - 1 for rec in records.images)


def to_device(target: dict, device: torch.device) -> dict:
    """A target dict with its tensors on ``device`` (other values as they are)."""
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in target.items()}


class TrainLoaders:
    """The endless training loaders of one process.

    Args:
        cfg: the config (``SOLVER.IMS_PER_BATCH``, ``SOLVER.ACCUMULATE_STEPS``, ``DATALOADER.*``,
            ``INPUT.*``, ``SEED``).
        records: the box data.
        weak: the weak-supervision set-up, or ``None`` (box batches only).
        rank, world_size: this process and the number of processes.
        device: the training device (pinned memory on CUDA).
        distill_offline: box samples carry the precomputed regions of
            ``MODEL.OVDET.DISTILL.EMBEDDINGS_FILE``.
    """

    def __init__(
        self,
        cfg,
        records: DatasetRecords,
        weak: WeakTraining | None,
        rank: int,
        world_size: int,
        device: torch.device,
        distill_offline: bool = False,
    ) -> None:
        self.cfg = cfg
        self.records = records
        self.weak = weak
        self.rank, self.world_size = rank, world_size
        self.device = device
        self.distill_offline = distill_offline

    def batch_kinds(self, start: int, count: int) -> list[int]:
        """The kind of micro-batches ``start .. start + count - 1`` (one per forward pass):
        0 box, 1 image-labelled; all box without weak data."""
        if self.weak is None:
            return [0] * count
        return self.weak.batch_kinds(start, count)

    def iterators(self, start_iter: int) -> list[Iterator]:
        """One endless iterator per batch kind (box; image-labelled with weak data), each
        positioned after the micro-batches of its kind that ``start_iter`` steps consumed."""
        consumed = self.batch_kinds(0, start_iter * self.cfg.SOLVER.ACCUMULATE_STEPS)
        loaders = [iter(self._box_loader(consumed.count(0)))]
        if self.weak is not None:
            loaders.append(iter(self._weak_loader(consumed.count(1))))
        return loaders

    def _batch_size(self, per_step: int, key: str) -> int:
        """Images per process and forward pass, of ``per_step`` images per optimizer step."""
        accum = self.cfg.SOLVER.ACCUMULATE_STEPS
        if per_step % (self.world_size * accum):
            raise ConfigError(
                f"{key} ({per_step}) must be divisible by processes x "
                f"SOLVER.ACCUMULATE_STEPS ({self.world_size} x {accum})"
            )
        return per_step // (self.world_size * accum)

    def _loader(self, dataset: Dataset, batch: int, start_batches: int) -> DataLoader:
        cfg = self.cfg
        sampler = ResumableTrainingSampler(
            len(dataset), cfg.SEED, start_batches * batch, self.rank, self.world_size
        )
        workers = cfg.DATALOADER.NUM_WORKERS
        return DataLoader(
            dataset,
            batch_size=batch,
            sampler=sampler,
            num_workers=workers,
            collate_fn=collate,
            persistent_workers=workers > 0,
            # Its own generator, so that creating the loader does not draw from the global RNG
            # (a resumed run must consume exactly the random numbers an uninterrupted run does).
            generator=torch.Generator().manual_seed(cfg.SEED),
            pin_memory=self.device.type == "cuda",
        )

    def _box_loader(self, start_batches: int) -> DataLoader:
        """Box batches, positioned after ``start_batches`` of them."""
        cfg = self.cfg
        batch = self._batch_size(cfg.SOLVER.IMS_PER_BATCH, "SOLVER.IMS_PER_BATCH")
        store = None
        if self.distill_offline:
            store = load_distill_store(cfg.MODEL.OVDET.DISTILL.EMBEDDINGS_FILE)
        dataset = DetectionDataset(
            self.records,
            build_augmentation(cfg, is_train=True),
            distill_store=store,
            max_load_pixels=cfg.INPUT.MAX_LOAD_PIXELS,
        )
        return self._loader(dataset, batch, start_batches)

    def _weak_loader(self, start_batches: int) -> DataLoader:
        """Image-labelled batches: ``DATALOADER.WEAK_IMS_PER_BATCH`` images per step at
        ``INPUT.WEAK_MIN_SIZE_TRAIN`` / ``WEAK_MAX_SIZE_TRAIN``."""
        cfg = self.cfg
        batch = self._batch_size(cfg.DATALOADER.WEAK_IMS_PER_BATCH, "DATALOADER.WEAK_IMS_PER_BATCH")
        sizes = cfg.clone()
        sizes.defrost()
        sizes.INPUT.MIN_SIZE_TRAIN = list(cfg.INPUT.WEAK_MIN_SIZE_TRAIN)
        sizes.INPUT.MAX_SIZE_TRAIN = cfg.INPUT.WEAK_MAX_SIZE_TRAIN
        dataset = ImageLabelDataset(
            self.weak.data.records,
            self.weak.data.class_index,
            build_augmentation(sizes, is_train=True),
            max_load_pixels=cfg.INPUT.MAX_LOAD_PIXELS,
        )
        return self._loader(dataset, batch, start_batches)

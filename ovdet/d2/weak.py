"""Weak supervision for detectron2: image-labelled batches mixed with box batches (Detic).

The same keys as the torchvision engine: ``DATASETS.WEAK_TRAIN`` (any format of
:mod:`ovdet.data.image_labels`), ``DATASETS.WEAK_TRAIN_IMAGES``, ``DATASETS.WEAK_VOCABULARY``,
``DATALOADER.DATASET_RATIO``, ``DATALOADER.WEAK_IMS_PER_BATCH``, ``INPUT.WEAK_*`` and the losses
of ``MODEL.OVDET.WEAK``, and the same set-up (:mod:`ovdet.core.weak_setup`: data, vocabulary,
class counts, caption embeddings, per-batch vocabulary), which :func:`weak_training` adapts to
detectron2's datasets and model vocabulary. :class:`ImageLabelMapper` maps an image-labelled
sample (no annotations) through detectron2's augmentation at the weak image size;
:class:`MixedBatches` alternates the box loader and the image-labelled loader at the ratio, in
the same fixed order as the torchvision engine, and switches the model to the vocabulary of each
kind of batch.
"""

from __future__ import annotations

import random
from typing import Iterator, Sequence

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data import (
    DatasetCatalog,
    DatasetMapper,
    MetadataCatalog,
    build_detection_train_loader,
)
from torch import nn

from ovdet.core.weak_setup import WeakTraining, build_weak_training, load_weak_data
from ovdet.d2.datasets import get_dataset_split
from ovdet.d2.model_vocabulary import (
    get_roi_heads,
    load_clip_for,
    text_embeddings,
    training_vocabulary,
)
from ovdet.data.image_labels import ImageLabelRecords
from ovdet.utils.errors import ConfigError

__all__ = [
    "ImageLabelMapper",
    "MixedBatches",
    "build_mixed_train_loader",
    "image_label_dicts",
    "weak_training",
]


def image_label_dicts(records: ImageLabelRecords, class_index: np.ndarray) -> list[dict]:
    """detectron2 dataset dicts of image-labelled data: ``file_name``, ``image_id``, no
    ``annotations``, ``image_labels`` (training-vocabulary indices) and ``captions``."""
    return [
        {
            "file_name": str(r.path),
            "image_id": r.image_id,
            "annotations": [],
            "image_labels": class_index[r.labels].tolist(),
            "captions": list(r.captions),
        }
        for r in records.images
    ]


class ImageLabelMapper(DatasetMapper):
    """detectron2's ``DatasetMapper`` for image-labelled samples: the image through the
    training augmentation at ``INPUT.WEAK_MIN_SIZE_TRAIN`` / ``WEAK_MAX_SIZE_TRAIN``, empty
    ``instances``, ``image_labels`` LongTensor[L] and one of the image's captions (``caption``).
    """

    def __init__(self, cfg: CfgNode) -> None:
        sizes = cfg.clone()
        sizes.defrost()
        sizes.INPUT.MIN_SIZE_TRAIN = tuple(cfg.INPUT.WEAK_MIN_SIZE_TRAIN)
        sizes.INPUT.MAX_SIZE_TRAIN = cfg.INPUT.WEAK_MAX_SIZE_TRAIN
        sizes.INPUT.MIN_SIZE_TRAIN_SAMPLING = "choice"
        sizes.INPUT.CROP.ENABLED = False
        super().__init__(sizes, is_train=True)

    def __call__(self, dataset_dict: dict) -> dict:
        out = super().__call__(dataset_dict)
        out["image_labels"] = torch.as_tensor(dataset_dict["image_labels"], dtype=torch.long)
        captions = out.pop("captions", [])
        if captions:
            out["caption"] = random.choice(captions)
        return out


class MixedBatches:
    """Box batches and image-labelled batches at ``DATALOADER.DATASET_RATIO``.

    Before each batch the model's ROI heads get that kind's classifier, and image-labelled
    samples get ``caption_embedding`` (CLIP's text embedding of their caption) when the caption
    loss is on (:meth:`~ovdet.core.weak_setup.WeakTraining.prepare_batch`).

    Args:
        box_loader, weak_loader: detectron2 training loaders (endless).
        model: the detector (its ROI heads' vocabulary is switched).
        weak: the weak-supervision set-up (:func:`weak_training`).
    """

    def __init__(self, box_loader, weak_loader, model: nn.Module, weak: WeakTraining) -> None:
        self.loaders = (box_loader, weak_loader)
        self.model = model
        self.weak = weak

    def __iter__(self) -> Iterator[list[dict]]:
        iterators = [iter(loader) for loader in self.loaders]
        heads = get_roi_heads(self.model)
        # The ROI heads' own set_vocabulary keeps their class count in step with the head's.
        switch = self.weak.vocabulary_switch(heads.head, heads.set_vocabulary)
        k = 0
        while True:
            kind = self.weak.batch_kinds(k, 1)[0]
            k += 1
            batch = next(iterators[kind])
            # Caption embeddings on the CPU, as the rest of the inputs; the model moves them.
            self.weak.prepare_batch(kind, batch, switch, device="cpu")
            yield batch


def _box_data_classes(cfg: CfgNode) -> Sequence[str]:
    """The training data's base and novel classes (the classes looked for in captions)."""
    name = cfg.DATASETS.TRAIN[0]
    meta = MetadataCatalog.get(name)
    if meta.get("base_classes") is not None:
        return (*meta.base_classes, *meta.novel_classes)
    return get_dataset_split(name, cfg.DATASETS.SPLIT).all


def _box_image_classes(cfg: CfgNode) -> Iterator[list[int]]:
    """Per box image, its boxes' contiguous class ids (indices into the box classes): a second
    load of the box data (the box loader did the first), made only for the federated loss."""
    return (
        [a["category_id"] for a in record.get("annotations", [])]
        for name in cfg.DATASETS.TRAIN
        for record in DatasetCatalog.get(name)
    )


def weak_training(cfg: CfgNode) -> WeakTraining:
    """The weak-supervision set-up of ``cfg`` (:mod:`ovdet.core.weak_setup`) with detectron2's
    training vocabulary, datasets, text embeddings (on the CPU) and CLIP."""
    box_vocabulary = training_vocabulary(cfg)
    data = load_weak_data(cfg, box_vocabulary, _box_data_classes(cfg))
    return build_weak_training(
        cfg,
        data,
        text_embeddings(cfg, box_vocabulary),
        embed=lambda names: text_embeddings(cfg, names),
        box_image_classes=lambda: _box_image_classes(cfg),
        load_clip=lambda: load_clip_for(cfg),
    )


def build_mixed_train_loader(cfg: CfgNode, model: nn.Module, box_loader) -> MixedBatches:
    """The training loader with ``DATASETS.WEAK_TRAIN``: ``box_loader`` mixed with a loader of
    the image-labelled data (``DATALOADER.WEAK_IMS_PER_BATCH`` images per step)."""
    if cfg.MODEL.META_ARCHITECTURE != "OpenVocabularyRCNN":
        raise ConfigError("DATASETS.WEAK_TRAIN needs MODEL.META_ARCHITECTURE OpenVocabularyRCNN")
    weak = weak_training(cfg)
    weak_loader = build_detection_train_loader(
        dataset=image_label_dicts(weak.data.records, weak.data.class_index),
        mapper=ImageLabelMapper(cfg),
        total_batch_size=cfg.DATALOADER.WEAK_IMS_PER_BATCH,
        aspect_ratio_grouping=False,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
    )
    return MixedBatches(box_loader, weak_loader, model, weak)

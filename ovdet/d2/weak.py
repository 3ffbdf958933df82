"""Weak supervision for detectron2: image-labelled batches mixed with box batches (Detic).

The same keys as the torchvision engine: ``DATASETS.WEAK_TRAIN`` (any format of
:mod:`ovdet.data.image_labels`), ``DATASETS.WEAK_TRAIN_IMAGES``, ``DATASETS.WEAK_VOCABULARY``,
``DATALOADER.DATASET_RATIO``, ``DATALOADER.WEAK_IMS_PER_BATCH``, ``INPUT.WEAK_*`` and the losses
of ``MODEL.OVDET.WEAK``. :class:`ImageLabelMapper` maps an image-labelled sample (no
annotations) through detectron2's augmentation at the weak image size; :class:`MixedBatches`
alternates the box loader and the image-labelled loader at the ratio, in the same fixed order as
the torchvision engine (:func:`ovdet.data.dataset.mixed_batch_kinds`), and switches the model to
the vocabulary of each kind of batch.
"""

from __future__ import annotations

import logging
import random
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.config import CfgNode
from detectron2.data import (
    DatasetCatalog,
    DatasetMapper,
    MetadataCatalog,
    build_detection_train_loader,
)
from torch import nn

from ovdet.clip.text_classifier import Vocabulary
from ovdet.core.novel_classes import novel_class_mask
from ovdet.core.weak_supervision import TrainingVocabulary
from ovdet.d2.datasets import get_dataset_split
from ovdet.d2.model_vocabulary import (
    get_roi_heads,
    load_clip_for,
    text_embeddings,
    training_vocabulary,
)
from ovdet.data.dataset import mixed_batch_kinds
from ovdet.data.image_labels import (
    ImageLabelRecords,
    load_image_labels,
    weak_class_counts,
    weak_training_vocabulary,
)
from ovdet.utils.errors import ConfigError

__all__ = ["ImageLabelMapper", "MixedBatches", "build_mixed_train_loader", "image_label_dicts"]

logger = logging.getLogger(__name__)


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

    Before each batch the model's ROI heads get that kind's classifier (the head's rule,
    :meth:`~ovdet.core.head.OpenVocabularyHead.training_vocabulary`), and image-labelled samples
    get ``caption_embedding`` (CLIP's text embedding of their caption) when the caption loss is
    on.

    Args:
        box_loader, weak_loader: detectron2 training loaders (endless).
        ratio: box : image-labelled batches.
        model: the detector (its ROI heads' vocabulary is switched).
        vocabularies: the (box, weak) :class:`~ovdet.core.weak_supervision.TrainingVocabulary`;
            the weak one holds the box classes first, then those only image labels name.
        clip: a loaded CLIP for the caption embeddings, or ``None``.
    """

    def __init__(self, box_loader, weak_loader, ratio, model: nn.Module, vocabularies, clip=None):
        self.loaders = (box_loader, weak_loader)
        self.ratio = list(ratio)
        self.model = model
        self.vocabularies = vocabularies
        self.clip = clip

    def __iter__(self) -> Iterator[list[dict]]:
        iterators = [iter(loader) for loader in self.loaders]
        heads = get_roi_heads(self.model)
        k = 0
        while True:
            kind = mixed_batch_kinds(self.ratio, k, 1)[0]
            k += 1
            batch = next(iterators[kind])
            vocabulary = heads.head.training_vocabulary(kind, *self.vocabularies)
            heads.set_vocabulary(vocabulary.text, vocabulary.is_novel)
            heads.head.set_class_frequencies(vocabulary.class_counts)
            if kind == 1 and self.clip is not None:
                self._add_caption_embeddings(batch)
            yield batch

    @torch.no_grad()
    def _add_caption_embeddings(self, batch: list[dict]) -> None:
        embeddings = F.normalize(self.clip.encode_text([x["caption"] for x in batch]).float(), -1)
        for x, e in zip(batch, embeddings.cpu()):
            x["caption_embedding"] = e


def build_mixed_train_loader(cfg: CfgNode, model: nn.Module, box_loader) -> MixedBatches:
    """The training loader with ``DATASETS.WEAK_TRAIN``: ``box_loader`` mixed with a loader of
    the image-labelled data (``DATALOADER.WEAK_IMS_PER_BATCH`` images per step)."""
    d = cfg.DATASETS
    if cfg.MODEL.META_ARCHITECTURE != "OpenVocabularyRCNN":
        raise ConfigError("DATASETS.WEAK_TRAIN needs MODEL.META_ARCHITECTURE OpenVocabularyRCNN")
    try:
        mixed_batch_kinds(cfg.DATALOADER.DATASET_RATIO, 0, 1)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    box_vocabulary = training_vocabulary(cfg)
    if d.WEAK_VOCABULARY:
        tags = Vocabulary.parse(d.WEAK_VOCABULARY)
    else:  # the training data's base and novel classes
        meta = MetadataCatalog.get(d.TRAIN[0])
        if meta.get("base_classes") is not None:
            names = (*meta.base_classes, *meta.novel_classes)
        else:
            names = get_dataset_split(d.TRAIN[0], d.SPLIT).all
        tags = Vocabulary.from_names(names)
    records = load_image_labels(
        d.WEAK_TRAIN, d.WEAK_TRAIN_IMAGES, tags, d.WEAK_CSV_IMAGE_KEY, d.WEAK_CSV_CAPTION_KEY,
        d.WEAK_CSV_SEPARATOR,
    )  # fmt: skip
    names, class_index = weak_training_vocabulary(box_vocabulary.names, records.class_names)
    counts = None
    if cfg.MODEL.OVDET.WEAK.FED_LOSS:  # only the federated loss samples by them
        box_image_classes = (  # a second load of the box data (the box loader did the first)
            [a["category_id"] for a in record.get("annotations", [])]
            for name in d.TRAIN
            for record in DatasetCatalog.get(name)
        )  # contiguous class ids: indices into the box classes
        counts = torch.as_tensor(
            weak_class_counts(len(names), class_index, records, box_image_classes),
            dtype=torch.float32,
        )
    captions = cfg.MODEL.OVDET.WEAK.CAPTION_LOSS
    if captions and not records.has_captions:
        raise ConfigError(
            f"MODEL.OVDET.WEAK.CAPTION_LOSS needs captions; {d.WEAK_TRAIN} has images without"
        )
    weak_loader = build_detection_train_loader(
        dataset=image_label_dicts(records, class_index),
        mapper=ImageLabelMapper(cfg),
        total_batch_size=cfg.DATALOADER.WEAK_IMS_PER_BATCH,
        aspect_ratio_grouping=False,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
    )
    vocabularies = (
        TrainingVocabulary(text_embeddings(cfg, box_vocabulary)),
        TrainingVocabulary(
            text_embeddings(cfg, names),
            novel_class_mask(names, box_vocabulary),
            counts,
        ),
    )
    logger.info(
        "Weak supervision: %d image-labelled images, vocabulary of %d classes, batches "
        "box:image-labelled = %s",
        len(records.images), len(names), list(cfg.DATALOADER.DATASET_RATIO),
    )  # fmt: skip
    clip = load_clip_for(cfg) if captions else None
    return MixedBatches(
        box_loader, weak_loader, cfg.DATALOADER.DATASET_RATIO, model, vocabularies, clip
    )

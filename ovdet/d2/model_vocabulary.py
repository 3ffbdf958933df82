"""The vocabulary of a detectron2 model: which classes, their CLIP text embeddings, swapping them.

The CLIP model and the text-embedding cache are shared per process (one
:class:`~ovdet.clip.text_classifier.TextClassifierBuilder` per CLIP spec, templates, cache folder
and device), so
the training vocabulary, the CLIP teacher and every later vocabulary come from the same CLIP
(which matters for randomly initialised test models) and CLIP is loaded at most once.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from functools import lru_cache
from typing import Iterator, Sequence

import torch
from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog
from torch import nn

from ovdet.clip import LoadedClip
from ovdet.clip.text_classifier import TextClassifierBuilder, Vocabulary
from ovdet.d2.datasets import get_dataset_split, thing_classes
from ovdet.utils.errors import ConfigError

__all__ = [
    "dataset_vocabulary",
    "get_roi_heads",
    "load_clip_for",
    "text_classifier_builder",
    "text_embeddings",
    "training_vocabulary",
    "use_dataset_vocabulary",
    "use_vocabulary",
    "vocabulary_from_metadata",
]

logger = logging.getLogger(__name__)


@lru_cache(maxsize=8)
def _builder(clip: str, templates: str, cache_dir: str, device: str) -> TextClassifierBuilder:
    return TextClassifierBuilder(clip, templates, cache_dir or None, device=device)


def text_classifier_builder(cfg: CfgNode) -> TextClassifierBuilder:
    """The process-wide text classifier builder of ``MODEL.OVDET`` (CLIP, TEMPLATES, cache)."""
    ov = cfg.MODEL.OVDET
    return _builder(ov.CLIP, ov.TEMPLATES, ov.TEXT_CACHE_DIR, cfg.MODEL.DEVICE)


def load_clip_for(cfg: CfgNode) -> LoadedClip:
    """The CLIP model of ``MODEL.OVDET.CLIP`` on ``MODEL.DEVICE``, loaded once per process."""
    return text_classifier_builder(cfg).clip


def text_embeddings(cfg: CfgNode, vocabulary: Vocabulary | str | Sequence[str]) -> torch.Tensor:
    """The text classifier of a vocabulary (cached on disk).

    Returns:
        Tensor[C, D], float32 on CPU, L2-normalised rows.
    """
    return text_classifier_builder(cfg)(vocabulary)


def vocabulary_from_metadata(dataset_name: str) -> Vocabulary:
    """A dataset's ``thing_classes`` (and ``thing_synonyms`` if any) as a vocabulary.

    Underscores become spaces (LVIS writes ``aerosol_can``), as in
    :meth:`~ovdet.clip.text_classifier.Vocabulary.from_coco_json`; the order is that of the
    contiguous class ids.
    """
    classes = thing_classes(dataset_name)
    meta = MetadataCatalog.get(dataset_name)
    if not classes:
        raise ConfigError(
            f"dataset {dataset_name!r} has no thing_classes in its metadata; register it with "
            "ovdet.d2.register_ov_coco_dataset() or set MODEL.OVDET.VOCABULARY"
        )
    names = [c.replace("_", " ").strip() for c in classes]
    synonyms = meta.get("thing_synonyms") or [[] for _ in names]
    extra = []
    for name, syn in zip(names, synonyms):
        cleaned = (s.replace("_", " ").strip() for s in syn)
        extra.append(tuple(s for s in dict.fromkeys(cleaned) if s and s != name))
    return Vocabulary(tuple(names), tuple(extra))


def training_vocabulary(cfg: CfgNode) -> Vocabulary:
    """The classes the detector is trained on, in the order of the training class ids.

    ``MODEL.OVDET.VOCABULARY`` if set; else the ``thing_classes`` of the ``DATASETS.TRAIN``
    datasets, which must all be base classes of their split (register training sets with
    ``base_only=True``) and the same for every training dataset.

    Raises:
        ConfigError: if neither is available, or the training datasets disagree.
    """
    spec = cfg.MODEL.OVDET.VOCABULARY
    if spec:
        return Vocabulary.parse(spec)
    if not cfg.DATASETS.TRAIN:
        raise ConfigError("set MODEL.OVDET.VOCABULARY or DATASETS.TRAIN to define the classes")
    vocabularies = []
    for name in cfg.DATASETS.TRAIN:
        vocabulary = vocabulary_from_metadata(name)
        split = get_dataset_split(name, cfg.DATASETS.SPLIT)
        outside = [n for n in MetadataCatalog.get(name).thing_classes if not split.is_base(n)]
        if outside:
            raise ConfigError(
                f"training dataset {name!r} has {len(outside)} classes that are not base classes "
                f"of split {split.name!r} (e.g. {outside[0]!r}); register it with "
                "ovdet.d2.register_ov_coco_dataset(..., base_only=True)"
            )
        vocabularies.append(vocabulary)
    if any(v.names != vocabularies[0].names for v in vocabularies[1:]):
        raise ConfigError(
            f"the training datasets {tuple(cfg.DATASETS.TRAIN)} have different classes; set "
            "MODEL.OVDET.VOCABULARY or train on datasets with the same thing_classes"
        )
    return vocabularies[0]


def dataset_vocabulary(cfg: CfgNode, dataset_name: str) -> tuple[Vocabulary, torch.Tensor]:
    """A dataset's classes and which of them are novel.

    Returns:
        (vocabulary of ``C`` classes in contiguous-id order, BoolTensor[C] novelty).
    """
    vocabulary = vocabulary_from_metadata(dataset_name)
    split = get_dataset_split(dataset_name, cfg.DATASETS.SPLIT)
    classes = MetadataCatalog.get(dataset_name).thing_classes
    return vocabulary, torch.tensor([split.is_novel(n) for n in classes], dtype=torch.bool)


def get_roi_heads(model: nn.Module) -> nn.Module:
    """The open-vocabulary ROI heads of a (possibly DDP-wrapped) detectron2 model."""
    model = getattr(model, "module", model)
    heads = getattr(model, "roi_heads", None)
    if heads is None or not hasattr(heads, "set_vocabulary"):
        raise ConfigError(
            "the model has no open-vocabulary ROI heads; set MODEL.ROI_HEADS.NAME to "
            "OpenVocabularyROIHeads (FPN) or OpenVocabularyRes5ROIHeads (C4)"
        )
    return heads


@contextmanager
def use_vocabulary(
    model: nn.Module, embeddings: torch.Tensor, is_novel: torch.Tensor | None = None
) -> Iterator[None]:
    """Swap a model's vocabulary for the duration of a ``with`` block, then restore it.

    Args:
        model: a detectron2 model with :class:`~ovdet.d2.roi_heads.OpenVocabularyROIHeads`.
        embeddings: Tensor[C, D] text embeddings.
        is_novel: BoolTensor[C], or ``None`` (all base).
    """
    heads = get_roi_heads(model)
    saved = heads.get_vocabulary()
    heads.set_vocabulary(embeddings, is_novel)
    try:
        yield
    finally:
        heads.set_vocabulary(*saved)


@contextmanager
def use_dataset_vocabulary(model: nn.Module, cfg: CfgNode, dataset_name: str) -> Iterator[None]:
    """Give a model the classes of a dataset (e.g. to evaluate on it), then restore its own."""
    vocabulary, is_novel = dataset_vocabulary(cfg, dataset_name)
    logger.info(
        "Vocabulary of %s: %d classes (%d novel)",
        dataset_name,
        len(vocabulary),
        int(is_novel.sum()),
    )
    with use_vocabulary(model, text_embeddings(cfg, vocabulary), is_novel):
        yield

"""The weak-supervision set-up of both engines (Detic): one rule, one place.

Training with image-labelled data (``DATASETS.WEAK_TRAIN``) needs, besides the losses of
:mod:`ovdet.core.weak_supervision`:

* the data, loaded with the classes looked for in captions (:func:`load_weak_data`), checked
  against the config (the dataset ratio; captions for the caption loss);
* the vocabulary of image-labelled batches: the box classes first, then the classes only image
  labels name (:func:`weak_training_vocabulary`), its text embeddings and novelty, and the image
  counts of its classes for the federated loss (:func:`weak_class_counts`), all built by
  :func:`build_weak_training`;
* per batch, the classifier of the batch's kind (:class:`BatchVocabularySwitch`) and, for
  image-labelled batches with the caption loss, CLIP's embeddings of their captions
  (:func:`add_caption_embeddings`).

An engine supplies only what it alone knows (its box classes and their split, its text
embedder, its box images' classes, how it loads CLIP and sets a vocabulary on its heads) and
builds its own data loaders.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ovdet.core.novel_classes import novel_class_mask
from ovdet.core.weak_supervision import TrainingVocabulary
from ovdet.data.dataset import mixed_batch_kinds
from ovdet.data.image_labels import ImageLabelRecords, load_image_labels
from ovdet.structures.vocabulary import Vocabulary, normalize_name
from ovdet.utils.errors import ConfigError

if TYPE_CHECKING:
    from ovdet.clip.backend import ClipBackend
    from ovdet.core.head import OpenVocabularyHead

__all__ = [
    "BatchVocabularySwitch",
    "WeakData",
    "WeakTraining",
    "add_caption_embeddings",
    "build_weak_training",
    "check_dataset_ratio",
    "load_weak_data",
    "weak_class_counts",
    "weak_tag_vocabulary",
    "weak_training_vocabulary",
]

logger = logging.getLogger(__name__)

Names = Vocabulary | Sequence[str]


# ------------------------------------------------------------------ vocabulary and counts


def weak_tag_vocabulary(spec: str, default_names: Sequence[str]) -> Vocabulary:
    """The classes looked for in captions: ``DATASETS.WEAK_VOCABULARY`` (``spec``, any form of
    :meth:`~ovdet.structures.Vocabulary.parse`) if set, else ``default_names`` (the box data's
    base and novel classes)."""
    return Vocabulary.parse(spec) if spec else Vocabulary.from_names(default_names)


def weak_training_vocabulary(
    box_classes: Sequence[str], weak_classes: Sequence[str]
) -> tuple[list[str], np.ndarray]:
    """The vocabulary of image-labelled batches: the box data's classes, then the weak data's
    classes that are not among them (matched by :func:`~ovdet.core.novel_classes.normalize_name`,
    the one name-matching rule; ``_`` in an added name reads as a space).

    Returns:
        (names, class_index): the vocabulary and int64 [len(weak_classes)], each weak class's
        index in it.
    """
    names = list(box_classes)
    position = {normalize_name(n): i for i, n in enumerate(names)}
    index = []
    for name in weak_classes:
        key = normalize_name(name)
        if key not in position:
            position[key] = len(names)
            names.append(name.replace("_", " ") if "_" in name else name)
        index.append(position[key])
    return names, np.asarray(index, dtype=np.int64)


def weak_class_counts(
    num_classes: int,
    class_index: np.ndarray,
    records: ImageLabelRecords,
    box_image_classes: Iterable[Sequence[int]],
) -> np.ndarray:
    """Images showing each class of the weak vocabulary (the federated loss's frequencies): the
    image-labelled images by their labels, the box images by their boxes' classes.

    Args:
        num_classes: size of the weak vocabulary (:func:`weak_training_vocabulary`).
        class_index: int64 [len(records.class_names)], each weak class's index in it.
        records: the image-labelled images.
        box_image_classes: per box image, its boxes' classes as 0-based indices into the box
            classes (the weak vocabulary's first).

    Returns:
        float64 [num_classes].
    """
    counts = np.zeros(num_classes)
    np.add.at(counts, class_index, records.image_counts())
    for classes in box_image_classes:
        np.add.at(counts, np.unique(np.asarray(classes, dtype=np.int64)), 1)
    return counts


# ------------------------------------------------------------------ data


def check_dataset_ratio(ratio: Sequence[int]) -> None:
    """Raise :class:`~ovdet.utils.errors.ConfigError` unless ``DATALOADER.DATASET_RATIO`` is two
    non-negative counts, not both 0."""
    try:
        mixed_batch_kinds(list(ratio), 0, 1)
    except ValueError as e:
        raise ConfigError(str(e)) from None


@dataclass(frozen=True)
class WeakData:
    """Image-labelled training data and the vocabulary of its batches.

    Attributes:
        records: the images; their labels index ``records.class_names``.
        box_classes: the box data's classes (names, or a Vocabulary with synonyms), in the order
            of the box classifier.
        class_names: the weak vocabulary, ``C`` names: ``box_classes`` first, then the classes
            only image labels name.
        class_index: int64 [len(records.class_names)], each data class's index in
            ``class_names`` (what an image's labels become).
    """

    records: ImageLabelRecords
    box_classes: Names
    class_names: list[str]
    class_index: np.ndarray

    @property
    def num_box_classes(self) -> int:
        return len(self.box_classes)

    @property
    def is_novel(self) -> torch.Tensor:
        """BoolTensor[C]: the weak vocabulary's classes that no box names."""
        return novel_class_mask(self.class_names, self.box_classes)


def load_weak_data(cfg, box_classes: Names, default_tags: Sequence[str]) -> WeakData:
    """Load ``DATASETS.WEAK_TRAIN`` (any format of :mod:`ovdet.data.image_labels`) and check it
    against the config.

    Args:
        cfg: the config (``DATASETS.WEAK_*``, ``DATALOADER.DATASET_RATIO``,
            ``MODEL.OVDET.WEAK.CAPTION_LOSS``), the same keys in both engines.
        box_classes: the box classifier's classes (names or a Vocabulary).
        default_tags: the classes looked for in captions without ``DATASETS.WEAK_VOCABULARY``
            (the box data's base and novel classes).

    Raises:
        ConfigError: a bad ``DATALOADER.DATASET_RATIO``, or the caption loss on data with an
            image without a caption.
        DataError: an unusable file (:func:`~ovdet.data.image_labels.load_image_labels`).
    """
    d = cfg.DATASETS
    check_dataset_ratio(cfg.DATALOADER.DATASET_RATIO)
    records = load_image_labels(
        d.WEAK_TRAIN, d.WEAK_TRAIN_IMAGES, weak_tag_vocabulary(d.WEAK_VOCABULARY, default_tags),
        d.WEAK_CSV_IMAGE_KEY, d.WEAK_CSV_CAPTION_KEY, d.WEAK_CSV_SEPARATOR,
    )  # fmt: skip
    if cfg.MODEL.OVDET.WEAK.CAPTION_LOSS and not records.has_captions:
        raise ConfigError(
            f"MODEL.OVDET.WEAK.CAPTION_LOSS needs captions; {d.WEAK_TRAIN} has images without"
        )
    box_names = list(getattr(box_classes, "names", box_classes))
    names, class_index = weak_training_vocabulary(box_names, records.class_names)
    return WeakData(records, box_classes, names, class_index)


# ------------------------------------------------------------------ training


@dataclass(frozen=True)
class WeakTraining:
    """What an engine's training loop needs for mixed box / image-labelled batches.

    Attributes:
        data: the image-labelled data and its vocabulary.
        box: the classifier of box batches without weak data (the box classes).
        weak: the classifier of image-labelled batches (``data.class_names``), with the class
            counts when the federated loss samples by them.
        ratio: box : image-labelled batches (``DATALOADER.DATASET_RATIO``).
        clip: the loaded CLIP that embeds captions (caption loss), or ``None``.
    """

    data: WeakData
    box: TrainingVocabulary
    weak: TrainingVocabulary
    ratio: tuple[int, int]
    clip: ClipBackend | None = None

    @property
    def vocabularies(self) -> tuple[TrainingVocabulary, TrainingVocabulary]:
        """(box, weak), the arguments of the head's ``training_vocabulary``."""
        return self.box, self.weak

    def batch_kinds(self, start: int, count: int) -> list[int]:
        """The kinds (0 box, 1 image-labelled) of micro-batches ``start .. start + count - 1``,
        a fixed order (:func:`~ovdet.data.dataset.mixed_batch_kinds`)."""
        return mixed_batch_kinds(self.ratio, start, count)

    def vocabulary_switch(
        self,
        head: OpenVocabularyHead,
        set_vocabulary: Callable[[torch.Tensor, torch.Tensor | None], None] | None = None,
    ) -> BatchVocabularySwitch:
        """A :class:`BatchVocabularySwitch` of ``head`` between this run's vocabularies."""
        return BatchVocabularySwitch(head, self.vocabularies, set_vocabulary)

    def prepare_batch(
        self,
        kind: int,
        samples: Sequence[dict],
        switch: BatchVocabularySwitch,
        device: torch.device | str | None = None,
    ) -> None:
        """Before a batch of ``kind``: its classifier on the head, and for image-labelled
        batches with the caption loss each sample's ``caption_embedding`` (on ``device``)."""
        switch(kind)
        if kind == 1 and self.clip is not None:
            add_caption_embeddings(self.clip, samples, device)


def build_weak_training(
    cfg,
    data: WeakData,
    box_text: torch.Tensor,
    embed: Callable[[list[str]], torch.Tensor],
    box_image_classes: Callable[[], Iterable[Sequence[int]]],
    load_clip: Callable[[], ClipBackend],
) -> WeakTraining:
    """The classifiers of both kinds of batch, the class counts and the caption CLIP.

    Args:
        cfg: the config (``MODEL.OVDET.WEAK.FED_LOSS`` / ``CAPTION_LOSS``,
            ``DATALOADER.DATASET_RATIO``).
        data: from :func:`load_weak_data`.
        box_text: Tensor[C_box, D], the box classifier's text embeddings (the classifier of box
            batches).
        embed: names -> Tensor[N, D], the engine's text classifier; it embeds the weak
            vocabulary (box classes first, then the classes only image labels name).
        box_image_classes: returns, per box image, its boxes' 0-based box-class indices; called
            only with the federated loss, the one user of class counts.
        load_clip: returns the loaded CLIP; called only with the caption loss.
    """
    weak_cfg = cfg.MODEL.OVDET.WEAK
    names, num_box = data.class_names, data.num_box_classes
    if box_text.shape[0] != num_box:
        raise ValueError(f"box_text has {box_text.shape[0]} rows for {num_box} box classes")
    # The whole vocabulary is embedded in one batch, as its own classifier: rows of a separate
    # batch would differ from it by float rounding, which moves what training learns.
    text = embed(list(names)).to(device=box_text.device, dtype=box_text.dtype)
    counts = None
    if weak_cfg.FED_LOSS:
        counts = torch.as_tensor(
            weak_class_counts(len(names), data.class_index, data.records, box_image_classes()),
            dtype=torch.float32,
        )
    ratio = tuple(int(r) for r in cfg.DATALOADER.DATASET_RATIO)
    logger.info(
        "Weak supervision: %d image-labelled images, vocabulary of %d classes (%d beyond the box "
        "classes), batches box:image-labelled = %d:%d",
        len(data.records.images), len(names), len(names) - num_box, *ratio,
    )  # fmt: skip
    return WeakTraining(
        data,
        box=TrainingVocabulary(box_text),
        weak=TrainingVocabulary(text, data.is_novel, counts),
        ratio=ratio,
        clip=load_clip() if weak_cfg.CAPTION_LOSS else None,
    )


class BatchVocabularySwitch:
    """Gives a head the classifier of each training batch's kind before the batch: the head's
    rule (:meth:`~ovdet.core.head.OpenVocabularyHead.training_vocabulary`) picks the vocabulary,
    the switch sets its text, novelty and class counts, only when the kind changes.

    Args:
        head: the core head (its ``training_vocabulary`` and ``set_class_frequencies``).
        vocabularies: (box, weak) :class:`~ovdet.core.weak_supervision.TrainingVocabulary`.
        set_vocabulary: ``(text Tensor[C, D], is_novel BoolTensor[C] | None) -> None``, how the
            engine sets a vocabulary (detectron2's ROI heads keep their class count in step);
            default ``head.set_vocabulary``.
    """

    def __init__(
        self,
        head: OpenVocabularyHead,
        vocabularies: tuple[TrainingVocabulary, TrainingVocabulary],
        set_vocabulary: Callable[[torch.Tensor, torch.Tensor | None], None] | None = None,
    ) -> None:
        self.head = head
        self.vocabularies = vocabularies
        self.set_vocabulary = set_vocabulary or head.set_vocabulary
        self.kind: int | None = None  # None: no kind's classifier set yet

    def __call__(self, kind: int) -> None:
        if kind == self.kind:
            return
        vocabulary = self.head.training_vocabulary(kind, *self.vocabularies)
        self.set_vocabulary(vocabulary.text, vocabulary.is_novel)
        self.head.set_class_frequencies(vocabulary.class_counts)
        self.kind = kind

    def reset(self) -> None:
        """Forget the kind set last (call after something else set the head's vocabulary, such
        as an evaluation), so that the next batch sets its own."""
        self.kind = None


@torch.no_grad()
def add_caption_embeddings(
    clip: ClipBackend, samples: Sequence[dict], device: torch.device | str | None = None
) -> None:
    """Each sample's ``caption_embedding`` Tensor[D]: CLIP's L2-normalised text embedding of its
    ``caption`` (the caption loss's targets), on ``device`` (default: CLIP's).

    Args:
        clip: a loaded CLIP (its ``encode_text(list[str]) -> Tensor[B, D]``).
        samples: the batch's targets or inputs, each with a ``caption``.
    """
    embeddings = F.normalize(clip.encode_text([s["caption"] for s in samples]).float(), dim=-1)
    if device is not None:
        embeddings = embeddings.to(device)
    for sample, embedding in zip(samples, embeddings):
        sample["caption_embedding"] = embedding

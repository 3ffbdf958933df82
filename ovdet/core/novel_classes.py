"""Which classes of a vocabulary are novel: the one name-matching rule of every engine."""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Sequence, Union

import torch

from ovdet.structures.vocabulary import normalize_name

if TYPE_CHECKING:
    from ovdet.clip.text_classifier import Vocabulary

__all__ = ["normalize_name", "novel_class_mask"]

Names = Union["Vocabulary", Sequence[str]]


def _spellings(vocabulary: Names) -> list[set[str]]:
    """Per class, the normalised spellings: its name and, for a Vocabulary, its synonyms."""
    names = getattr(vocabulary, "names", None)
    if names is None:
        return [{normalize_name(n)} for n in vocabulary]
    synonyms: Iterable = getattr(vocabulary, "synonyms", None) or [() for _ in names]
    return [
        {normalize_name(n), *(normalize_name(s) for s in syn)} for n, syn in zip(names, synonyms)
    ]


def novel_class_mask(vocabulary: Names, base: Names) -> torch.Tensor:
    """BoolTensor[C]: which classes of ``vocabulary`` are outside the training vocabulary.

    A class is base when its name or one of its synonyms equals, after
    :func:`normalize_name`, the name or a synonym of a training class; otherwise it is novel.
    Used for the ViLD-ensemble weights and for reporting, by both engines.

    Args:
        vocabulary: the current classes (a :class:`~ovdet.structures.Vocabulary` or
        names).
        base: the classes the detector was trained on (a Vocabulary or names).
    """
    known = set().union(*_spellings(base)) if len(base) else set()
    return torch.tensor([not (s & known) for s in _spellings(vocabulary)], dtype=torch.bool)

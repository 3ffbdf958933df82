"""Caption tagging: which classes of a vocabulary a caption names.

The labels of caption data (COCO captions, open_clip_train's caption CSV) for weak supervision
(:mod:`ovdet.data.image_labels`): Detic's captions data takes as an image's labels the class
names found in its captions.
"""

from __future__ import annotations

import re

__all__ = ["CaptionTagger"]


def _plural_forms(word: str) -> set[str]:
    """A word and its English plurals (``box`` -> ``boxes``, ``berry`` -> ``berries``)."""
    forms = {word, word + "s", word + "es"}
    if len(word) > 1 and word.endswith("y") and word[-2] not in "aeiou":
        forms.add(word[:-1] + "ies")
    if word.endswith("s") or word.endswith("x") or word.endswith("ch") or word.endswith("sh"):
        forms.add(word + "es")
    return forms


class CaptionTagger:
    """Finds a vocabulary's classes in captions: names and synonyms, whole words, any case,
    singular or plural (the last word of a name takes ``s`` / ``es`` / ``y -> ies``).

    Where spellings overlap, the longest wins ("hot dogs" is ``hot dog``, not ``dog``).

    Args:
        vocabulary: a :class:`~ovdet.structures.Vocabulary` (names and synonyms) or a list of
            names; ``_`` in names reads as a space (LVIS).
    """

    def __init__(self, vocabulary) -> None:
        names = list(getattr(vocabulary, "names", vocabulary))
        synonyms = list(getattr(vocabulary, "synonyms", None) or [() for _ in names])
        self.class_names = names
        self._owners: dict[str, set[int]] = {}
        for index, (name, syn) in enumerate(zip(names, synonyms)):
            for spelling in (name, *syn):
                words = spelling.replace("_", " ").lower().split()
                if not words:
                    continue
                for last in _plural_forms(words[-1]):
                    self._owners.setdefault(" ".join([*words[:-1], last]), set()).add(index)
        forms = sorted(self._owners, key=len, reverse=True)
        alternatives = "|".join(r"\s+".join(map(re.escape, f.split())) for f in forms)
        self._pattern = re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)

    def __call__(self, caption: str) -> list[int]:
        """The classes named in ``caption``: sorted class indices, each once."""
        found: set[int] = set()
        for match in self._pattern.finditer(caption):
            found |= self._owners[" ".join(match.group(0).lower().split())]
        return sorted(found)

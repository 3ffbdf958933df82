"""The page's class box: its text read as a :class:`~ovdet.structures.Vocabulary`, and back."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Sequence

from ovdet.structures.exemplars import ExemplarSpec
from ovdet.structures.vocabulary import Vocabulary
from ovdet.utils.errors import VocabularyError

__all__ = ["format_vocabulary", "parse_class_box", "vocabulary_or_message"]


def parse_class_box(text: str) -> Vocabulary:
    """The vocabulary typed in the page, in the formats ``tools/infer.py --classes`` takes.

    One line: comma-separated class names (as ``--classes "kite,umbrella"``). Several lines: one
    class per line, synonyms after commas, ``#`` comments (as a ``--classes`` text file). Never
    read as a path: the page cannot make the server open its files.

    Raises:
        VocabularyError: an empty vocabulary, or an empty or duplicated name.
    """
    if "\n" not in text.strip():
        return Vocabulary.from_string(text)
    if any("=" in line.split("#", 1)[0] for line in text.splitlines()):
        # a file's exemplar lines (name=image) would make the server read its own files
        raise VocabularyError(
            "the class list cannot give exemplar classes (name=image); draw a box on an image "
            "under 'Classes by example'"
        )
    with tempfile.TemporaryDirectory(prefix="ovdet-demo-") as tmp:
        path = Path(tmp) / "classes.txt"
        path.write_text(text, encoding="utf-8")
        try:
            return Vocabulary.from_file(path)
        except VocabularyError as e:  # the message names the class box, not a temporary file
            raise VocabularyError(str(e).replace(f"vocabulary file {path}", "the class list")
                                  .replace(str(path), "the class list")) from None  # fmt: skip


def vocabulary_or_message(
    class_text: str | None, messages: list[str], exemplars: Sequence[ExemplarSpec] = ()
) -> Vocabulary | None:
    """:func:`parse_class_box` of the page's class box with the page's exemplar classes (an
    empty box with exemplar classes: those alone); on a bad vocabulary, its one-line message
    appended to ``messages`` and ``None``."""
    try:
        if not (class_text or "").strip() and exemplars:
            return Vocabulary.from_exemplar_specs(list(exemplars))
        return parse_class_box(class_text or "").with_exemplars(list(exemplars))
    except VocabularyError as e:
        messages.append(f"error: {e}")
        return None


def format_vocabulary(vocabulary: Vocabulary) -> str:
    """The inverse of :func:`parse_class_box`: one line, or one class per line with synonyms."""
    if not any(vocabulary.synonyms):
        return ", ".join(vocabulary.names)
    return "\n".join(", ".join((n, *s)) for n, s in zip(vocabulary.names, vocabulary.synonyms))

"""The page's class box: its text read as a :class:`~ovdet.structures.Vocabulary`, and back."""

from __future__ import annotations

import tempfile
from pathlib import Path

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
    with tempfile.TemporaryDirectory(prefix="ovdet-demo-") as tmp:
        path = Path(tmp) / "classes.txt"
        path.write_text(text, encoding="utf-8")
        try:
            return Vocabulary.from_file(path)
        except VocabularyError as e:  # the message names the class box, not a temporary file
            raise VocabularyError(str(e).replace(f"vocabulary file {path}", "the class list")
                                  .replace(str(path), "the class list")) from None  # fmt: skip


def vocabulary_or_message(class_text: str | None, messages: list[str]) -> Vocabulary | None:
    """:func:`parse_class_box` of the page's class box; on a bad vocabulary, its one-line
    message appended to ``messages`` and ``None``."""
    try:
        return parse_class_box(class_text or "")
    except VocabularyError as e:
        messages.append(f"error: {e}")
        return None


def format_vocabulary(vocabulary: Vocabulary) -> str:
    """The inverse of :func:`parse_class_box`: one line, or one class per line with synonyms."""
    if not any(vocabulary.synonyms):
        return ", ".join(vocabulary.names)
    return "\n".join(", ".join((n, *s)) for n, s in zip(vocabulary.names, vocabulary.synonyms))

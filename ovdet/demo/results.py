"""What the image and video tabs show alike: messages about uploads, categories, box text."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ovdet.structures.vocabulary import Vocabulary

__all__ = ["box_text", "category_records", "upload_message"]


def upload_message(error: Exception, path: Path) -> str:
    """The one-line message of a failed upload, naming the file as the user knows it (not the
    server's copy)."""
    return f"error: {error}".replace(str(path), path.name)


def category_records(vocabulary: Vocabulary, is_novel: Sequence[bool]) -> list[dict]:
    """The results' ``categories``: id, name, whether the class is novel and, for a class
    given by image exemplars, ``query`` (``exemplar`` or ``text+exemplar``)."""
    return [
        {"id": i + 1, "name": n, "novel": bool(is_novel[i]),
         **({"query": k} if k != "text" else {})}
        for i, (n, k) in enumerate(zip(vocabulary.names, vocabulary.kinds))
    ]  # fmt: skip


def box_text(bbox: Sequence[float]) -> str:
    """A results entry's COCO ``[x, y, w, h]`` as the table's ``x1, y1, x2, y2``."""
    x, y, w, h = bbox
    return f"{round(x, 1)}, {round(y, 1)}, {round(x + w, 1)}, {round(y + h, 1)}"

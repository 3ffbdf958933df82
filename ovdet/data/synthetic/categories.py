"""The 64 colour x shape categories of the synthetic dataset, their ids and base/novel split.

Class indices (positions in :data:`CLASS_NAMES`, colour-major) are what the renderer works
with; COCO category ids (11..88, with gaps) are what the annotation files hold.
"""

from __future__ import annotations

from ovdet.data.splits import OpenVocabularySplit

__all__ = ["COLORS", "SHAPES", "CLASS_NAMES", "synthetic_categories", "synthetic_split"]

# Colours well separated in RGB (jitter of +-16 per channel keeps them apart).
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 30, 30),
    "green": (35, 165, 45),
    "blue": (35, 70, 225),
    "yellow": (240, 220, 35),
    "purple": (135, 40, 175),
    "orange": (250, 135, 20),
    "white": (245, 245, 245),
    "black": (18, 18, 18),
}
SHAPES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "star",
    "cross",
    "ring",
    "diamond",
    "hexagon",
)
#: The 64 class names, colour-major: "red circle", "red square", ..., "black hexagon".
CLASS_NAMES: tuple[str, ...] = tuple(f"{c} {s}" for c in COLORS for s in SHAPES)

# A composition (colour c, shape s) is novel when (s - c) mod 8 is one of these offsets: a
# Latin-square pattern with 2 novel classes per colour and 2 per shape (16 novel, 48 base).
_NOVEL_OFFSETS = (1, 4)


def _category_id(color_index: int, shape_index: int) -> int:
    """Category id of a composition: 11..18, 21..28, ..., 81..88 (ids are not positions)."""
    return 10 * (color_index + 1) + shape_index + 1


def _is_novel(color_index: int, shape_index: int) -> bool:
    return (shape_index - color_index) % len(SHAPES) in _NOVEL_OFFSETS


def synthetic_categories() -> list[dict]:
    """COCO ``categories`` entries of the 64 classes, sorted by id.

    Returns:
        Dicts with ``id`` (11..88, with gaps), ``name`` ("red circle") and ``supercategory`` (the
        shape).
    """
    return [
        {"id": _category_id(ci, si), "name": f"{c} {s}", "supercategory": s}
        for ci, c in enumerate(COLORS)
        for si, s in enumerate(SHAPES)
    ]


def synthetic_split() -> OpenVocabularySplit:
    """The 48 base / 16 novel split of the synthetic classes.

    Every novel class is a composition whose colour and whose shape each appear in 6 base
    classes; each colour and each shape has exactly 2 novel compositions.
    """
    base, novel = [], []
    for ci, c in enumerate(COLORS):
        for si, s in enumerate(SHAPES):
            (novel if _is_novel(ci, si) else base).append(f"{c} {s}")
    return OpenVocabularySplit(tuple(base), tuple(novel), name="synthetic")

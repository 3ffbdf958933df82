"""Base / novel category splits of open-vocabulary benchmarks.

A split assigns each category *name* to ``base`` (boxes used in training), ``novel`` (never
trained on, evaluated) or neither (dropped from training and evaluation, as OV-COCO drops 15 of
COCO's 80 classes). Categories are always matched by normalised name, never by id or position.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import yaml

from ovdet.structures.vocabulary import normalize_name
from ovdet.utils.errors import DataError

__all__ = [
    "OVCOCO_BASE",
    "OVCOCO_NOVEL",
    "OpenVocabularySplit",
    "normalize_name",
    "load_split",
]

# The OV-COCO split of OVR-CNN, also used by ViLD and Detic: 48 base and 17 novel classes.
OVCOCO_BASE = (
    "person", "bicycle", "car", "motorcycle", "train", "truck", "boat", "bench", "bird",
    "horse", "sheep", "bear", "zebra", "giraffe", "backpack", "handbag", "suitcase", "frisbee",
    "skis", "kite", "surfboard", "bottle", "fork", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "pizza", "donut", "chair", "bed", "toilet", "tv",
    "laptop", "mouse", "remote", "microwave", "oven", "toaster", "refrigerator", "book", "clock",
    "vase", "toothbrush",
)  # fmt: skip
OVCOCO_NOVEL = (
    "airplane", "bus", "cat", "dog", "cow", "elephant", "umbrella", "tie", "snowboard",
    "skateboard", "cup", "knife", "cake", "couch", "keyboard", "sink", "scissors",
)  # fmt: skip


@dataclass(frozen=True)
class OpenVocabularySplit:
    """Names of base and novel categories, in a fixed order.

    Attributes:
        base: names of the categories whose boxes are used for training.
        novel: names of held-out categories (evaluated, never trained on).
        name: a short label for logs ("ovcoco", "lvis", a file name).
    """

    base: tuple[str, ...]
    novel: tuple[str, ...]
    name: str = "custom"
    _kinds: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        kinds = {}
        for kind, names in (("base", self.base), ("novel", self.novel)):
            for n in names:
                key = normalize_name(n)
                if key in kinds:
                    raise DataError(f"split {self.name!r}: category {n!r} is listed twice")
                kinds[key] = kind
        object.__setattr__(self, "_kinds", kinds)

    def kind(self, name: str) -> str | None:
        """``"base"``, ``"novel"`` or ``None`` (neither) for a category name."""
        return self._kinds.get(normalize_name(name))

    def is_base(self, name: str) -> bool:
        return self.kind(name) == "base"

    def is_novel(self, name: str) -> bool:
        return self.kind(name) == "novel"

    @property
    def all(self) -> tuple[str, ...]:
        """Base then novel names: the generalized-setting vocabulary."""
        return self.base + self.novel

    def restrict_to(self, categories: Iterable[dict]) -> OpenVocabularySplit:
        """The split limited to (and ordered like) a dataset's categories.

        Args:
            categories: COCO ``categories`` entries (dicts with ``name``).
        """
        base, novel = [], []
        for cat in categories:
            kind = self.kind(cat["name"])
            if kind == "base":
                base.append(cat["name"])
            elif kind == "novel":
                novel.append(cat["name"])
        return OpenVocabularySplit(tuple(base), tuple(novel), name=self.name)

    def to_dict(self) -> dict:
        return {"name": self.name, "base": list(self.base), "novel": list(self.novel)}


def _lvis_split(categories: Sequence[dict]) -> OpenVocabularySplit:
    base, novel = [], []
    for cat in categories:
        freq = cat.get("frequency")
        if freq not in ("r", "c", "f"):
            raise DataError(
                f"LVIS split: category {cat.get('name')!r} has no 'frequency' of r/c/f "
                f"(got {freq!r}); is this an LVIS annotation file?"
            )
        (novel if freq == "r" else base).append(cat["name"])
    return OpenVocabularySplit(tuple(base), tuple(novel), name="lvis")


def _file_split(path: Path) -> OpenVocabularySplit:
    """Read ``{"base": [...], "novel": [...]}`` from a JSON or YAML file."""
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as e:
        raise DataError(f"cannot read split file {path}: {e}") from e
    if not isinstance(data, dict) or not isinstance(data.get("base"), list):
        raise DataError(
            f"split file {path} must hold a mapping with a 'base' list and a 'novel' list"
        )
    novel = data.get("novel", [])
    if not isinstance(novel, list) or not all(isinstance(n, str) for n in data["base"] + novel):
        raise DataError(f"split file {path}: 'base' and 'novel' must be lists of names")
    return OpenVocabularySplit(tuple(data["base"]), tuple(novel), name=path.stem)


def load_split(spec: str, categories: Sequence[dict] | None = None) -> OpenVocabularySplit:
    """Build a split from a spec.

    Args:
        spec: ``"ovcoco"`` (the 48/17 split), ``"lvis"`` (rare categories are novel; needs
            ``categories`` with ``frequency``), or a path to a JSON/YAML file holding
            ``{"base": [names], "novel": [names]}``.
        categories: COCO/LVIS ``categories`` entries. When given, the split is restricted to
            and ordered like these categories.

    Returns:
        The split.
    """
    if spec == "ovcoco":
        split = OpenVocabularySplit(OVCOCO_BASE, OVCOCO_NOVEL, name="ovcoco")
    elif spec == "lvis":
        if categories is None:
            raise DataError("the 'lvis' split needs the LVIS categories (with 'frequency')")
        return _lvis_split(categories)
    else:
        path = Path(spec)
        if not path.is_file():
            raise DataError(f"split {spec!r} is neither 'ovcoco', 'lvis' nor an existing file")
        split = _file_split(path)
    return split.restrict_to(categories) if categories is not None else split

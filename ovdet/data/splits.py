"""Base / novel category splits of open-vocabulary benchmarks.

A split assigns each category *name* to ``base`` (boxes used in training), ``novel`` (never
trained on, evaluated) or ``excluded`` (dropped from training and evaluation on purpose, as OV-COCO
drops 15 of COCO's 80 classes). Categories are always matched by normalised name, never by id or
position. A split loaded for a dataset (:func:`load_split` with ``categories``) must account for
every category, and a split file's names must each be a category
(:func:`check_split_categories`), so that a typo cannot drop a class silently.
"""

from __future__ import annotations

import difflib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import yaml

from ovdet.structures.vocabulary import normalize_name
from ovdet.utils.errors import DataError

__all__ = [
    "OVCOCO_BASE",
    "OVCOCO_EXCLUDED",
    "OVCOCO_NOVEL",
    "OpenVocabularySplit",
    "check_split_categories",
    "normalize_name",
    "load_split",
]

logger = logging.getLogger(__name__)

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
# The 15 COCO classes OV-COCO leaves out of training and evaluation.
OVCOCO_EXCLUDED = (
    "traffic light", "fire hydrant", "stop sign", "parking meter", "sports ball", "baseball bat",
    "baseball glove", "tennis racket", "wine glass", "hot dog", "potted plant", "dining table",
    "cell phone", "teddy bear", "hair drier",
)  # fmt: skip
# Names shown in a split error before "... (N in all)".
_MAX_NAMES_SHOWN = 8


@dataclass(frozen=True)
class OpenVocabularySplit:
    """Names of base and novel categories, in a fixed order.

    Attributes:
        base: names of the categories whose boxes are used for training.
        novel: names of held-out categories (evaluated, never trained on).
        name: a short label for logs ("ovcoco", "lvis", a file name).
        excluded: names of categories left out of training and evaluation on purpose.
    """

    base: tuple[str, ...]
    novel: tuple[str, ...]
    name: str = "custom"
    excluded: tuple[str, ...] = ()
    _kinds: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        kinds = {}
        for kind, names in (("base", self.base), ("novel", self.novel), (None, self.excluded)):
            for n in names:
                key = normalize_name(n)
                if key in kinds:
                    raise DataError(f"split {self.name!r}: category {n!r} is listed twice")
                kinds[key] = kind
        object.__setattr__(self, "_kinds", kinds)

    def kind(self, name: str) -> str | None:
        """``"base"``, ``"novel"`` or ``None`` (excluded or not listed) for a category name."""
        return self._kinds.get(normalize_name(name))

    def lists(self, name: str) -> bool:
        """Whether the split names a category (base, novel or excluded)."""
        return normalize_name(name) in self._kinds

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
        base, novel, excluded = [], [], []
        for cat in categories:
            kind = self.kind(cat["name"])
            if kind == "base":
                base.append(cat["name"])
            elif kind == "novel":
                novel.append(cat["name"])
            elif self.lists(cat["name"]):
                excluded.append(cat["name"])
        return OpenVocabularySplit(tuple(base), tuple(novel), self.name, tuple(excluded))

    def to_dict(self) -> dict:
        out = {"name": self.name, "base": list(self.base), "novel": list(self.novel)}
        if self.excluded:
            out["excluded"] = list(self.excluded)
        return out


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _quoted(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_MAX_NAMES_SHOWN])
    return shown + (f", ... ({len(names)} in all)" if len(names) > _MAX_NAMES_SHOWN else "")


def _suggestion(name: str, unlisted: Sequence[str], by_key: dict[str, str]) -> str:
    """`` (did you mean 'X'?)`` with the closest category, an unlisted one first; or ``""``."""
    for candidates in ([normalize_name(n) for n in unlisted], list(by_key)):
        close = difflib.get_close_matches(normalize_name(name), candidates, n=1, cutoff=0.6)
        if close:
            return f" (did you mean {by_key[close[0]]!r}?)"
    return ""


def check_split_categories(
    split: OpenVocabularySplit,
    categories: Sequence[dict],
    source: str,
    *,
    names_must_exist: bool = True,
    allow_mismatch: bool = False,
) -> dict[str, int]:
    """Check that a split and a dataset's categories agree, so that no class is lost silently.

    Two mismatches are found (names match after :func:`normalize_name`):

    * a name of the split (base, novel or excluded) that is no category (a typo such as
      ``"blue sta"``); the closest category name is suggested (:mod:`difflib`). Novel (or
      excluded) names are not looked for in a dataset holding none of them (training data of
      base classes); a typo there still leaves its category unlisted, the second kind;
    * a category of the dataset that the split does not list (neither base, novel nor excluded).

    Args:
        split: the split as loaded (not yet restricted to the categories).
        categories: COCO ``categories`` entries (dicts with ``name``).
        source: what the split is, for the message (e.g. ``"split file a/split.json"``).
        names_must_exist: check the first kind (off for a published split such as OV-COCO's,
            which a subset of its dataset may lack classes of).
        allow_mismatch: log one warning with the counts instead of raising.

    Returns:
        Counts: ``unknown_names`` (split names that are no category), ``unlisted_categories``.

    Raises:
        DataError: on any mismatch, unless ``allow_mismatch``; one line naming the names.
    """
    by_key = {normalize_name(c["name"]): c["name"] for c in categories}
    # Base names are always looked for; novel or excluded ones only where the file holds some of
    # them: training data of the base classes rightly lacks the novel and excluded classes. Once
    # something is wrong, every name that is no category is named (the likely typos).
    checked = [*split.base]
    for group in (split.novel, split.excluded):
        if any(normalize_name(n) in by_key for n in group):
            checked += group
    unlisted = [c["name"] for c in categories if not split.lists(c["name"])]
    listed = (*split.base, *split.novel, *split.excluded)
    unknown = [n for n in listed if normalize_name(n) not in by_key] if names_must_exist else []
    if not unlisted and not any(normalize_name(n) not in by_key for n in checked):
        unknown = []
    counts = {"unknown_names": len(unknown), "unlisted_categories": len(unlisted)}
    if not unknown and not unlisted:
        return counts
    problems = []
    if unknown:
        described = [f"{n!r}{_suggestion(n, unlisted, by_key)}" for n in unknown]
        problems.append(
            f"{_count(len(unknown), 'name matches', 'names match')} no category of the "
            f"annotations: {_quoted(described)}"
        )
    if unlisted:
        problems.append(
            f"{_count(len(unlisted), 'category is', 'categories are')} neither base, novel nor "
            f"excluded: {_quoted([repr(n) for n in unlisted])}"
        )
    message = f"{source}: {'; '.join(problems)}"
    if allow_mismatch:
        logger.warning("%s (allowed: those classes are left out)", message)
        return counts
    raise DataError(f"{message} (list a category under 'excluded' to leave it out on purpose)")


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
    """Read ``{"base": [...], "novel": [...], "excluded": [...]}`` (``excluded`` optional) from a
    JSON or YAML file."""
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as e:
        raise DataError(f"cannot read split file {path}: {e}") from e
    if not isinstance(data, dict) or not isinstance(data.get("base"), list):
        raise DataError(
            f"split file {path} must hold a mapping with a 'base' list and a 'novel' list"
        )
    novel, excluded = data.get("novel", []), data.get("excluded", [])
    if not (isinstance(novel, list) and isinstance(excluded, list)) or not all(
        isinstance(n, str) for n in data["base"] + novel + excluded
    ):
        raise DataError(f"split file {path}: 'base', 'novel' and 'excluded' must be lists of names")
    return OpenVocabularySplit(tuple(data["base"]), tuple(novel), path.stem, tuple(excluded))


def load_split(
    spec: str, categories: Sequence[dict] | None = None, *, allow_mismatch: bool = False
) -> OpenVocabularySplit:
    """Build a split from a spec.

    Args:
        spec: ``"ovcoco"`` (the 48/17 split), ``"lvis"`` (rare categories are novel; needs
            ``categories`` with ``frequency``), or a path to a JSON/YAML file holding
            ``{"base": [names], "novel": [names]}`` and optionally ``"excluded": [names]``
            (categories left out on purpose).
        categories: COCO/LVIS ``categories`` entries. When given, the split is checked against
            them (:func:`check_split_categories`: every category listed, and every name of a
            split file a category), then restricted to and ordered like them.
        allow_mismatch: a mismatch with ``categories`` is a warning (with counts), not an
            error; the unlisted categories are then left out.

    Returns:
        The split.

    Raises:
        DataError: a bad spec or file, or a mismatch with ``categories``.
    """
    if spec == "ovcoco":
        split = OpenVocabularySplit(OVCOCO_BASE, OVCOCO_NOVEL, "ovcoco", OVCOCO_EXCLUDED)
    elif spec == "lvis":
        if categories is None:
            raise DataError("the 'lvis' split needs the LVIS categories (with 'frequency')")
        return _lvis_split(categories)
    else:
        path = Path(spec)
        if not path.is_file():
            raise DataError(f"split {spec!r} is neither 'ovcoco', 'lvis' nor an existing file")
        split = _file_split(path)
    if categories is None:
        return split
    source = "split 'ovcoco'" if spec == "ovcoco" else f"split file {spec}"
    check_split_categories(
        split, categories, source, names_must_exist=spec != "ovcoco", allow_mismatch=allow_mismatch
    )
    return split.restrict_to(categories)

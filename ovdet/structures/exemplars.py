"""Image exemplars: classes given by example boxes instead of (or beside) their names.

An :class:`Exemplar` is an image (a file or RGB pixels) and a box in it (``None``: the whole
image). A class of a :class:`~ovdet.structures.Vocabulary` may hold exemplars; its embedding is
then made from them (:mod:`ovdet.core.exemplars`). Written as text (command line, vocabulary
files), a class given by exemplars reads::

    my mug=photos/mug.jpg:10,20,64,48; photos/mug2.jpg     # exemplars only
    mug+=photos/mug.jpg:10,20,64,48                         # the name's text and exemplars

a name, ``=`` (or ``+=`` to keep the name's text embedding too), then exemplars separated by
``;``: an image path and optionally ``:x,y,w,h``, a box in the image's pixels (left, top, width,
height, as COCO).

Kept free of PyTorch, as :mod:`ovdet.structures.vocabulary`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence, Union

import numpy as np

from ovdet.utils.errors import VocabularyError

__all__ = [
    "Exemplar",
    "ExemplarSpec",
    "ExemplarsInput",
    "exemplar_specs",
    "parse_exemplar_spec",
]

ExemplarImage = Union[str, Path, np.ndarray]
"""An exemplar's image: a file path or RGB uint8 pixels [H, W, 3]."""


@dataclass(frozen=True, eq=False)
class Exemplar:
    """One example of a class: a box in an image.

    Attributes:
        image: a file path, or RGB uint8 pixels [H, W, 3].
        box: ``(x, y, w, h)`` in the image's pixels (COCO); ``None`` for the whole image.
    """

    image: ExemplarImage
    box: tuple[float, float, float, float] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.image, Path):
            object.__setattr__(self, "image", str(self.image))
        if not isinstance(self.image, (str, np.ndarray)):
            raise VocabularyError(
                f"an exemplar image must be a path or an RGB array, got {type(self.image).__name__}"
            )
        if self.box is not None:
            box = tuple(float(v) for v in self.box)
            if len(box) != 4:
                raise VocabularyError(f"an exemplar box is x,y,w,h (4 numbers), got {self.box!r}")
            if not all(np.isfinite(box)):
                raise VocabularyError(f"exemplar box {self.box!r} holds a non-finite number")
            object.__setattr__(self, "box", box)

    def describe(self) -> str:
        """The exemplar as errors name it: ``path:x,y,w,h`` (``<array HxW>`` for pixels)."""
        if isinstance(self.image, str):
            where = self.image
        else:
            where = f"<array {self.image.shape[0]}x{self.image.shape[1]}>"
        if self.box is None:
            return where
        return where + ":" + ",".join(f"{v:g}" for v in self.box)

    def key(self) -> tuple:
        """What makes two exemplars the same: image identity and box."""
        image = self.image if isinstance(self.image, str) else id(self.image)
        return (image, self.box)

    @classmethod
    def parse(cls, text: str, relative_to: str | Path | None = None) -> Exemplar:
        """From ``path`` or ``path:x,y,w,h``; a relative path is taken from ``relative_to``."""
        text = text.strip()
        if not text:
            raise VocabularyError("an exemplar is empty; write path or path:x,y,w,h")
        path, box = text, None
        head, sep, tail = text.rpartition(":")
        if sep and tail.count(",") == 3:
            path = head.strip()
            try:
                box = tuple(float(v) for v in tail.split(","))
            except ValueError:
                raise VocabularyError(
                    f"exemplar box {tail!r} of {text!r} is not four numbers x,y,w,h"
                ) from None
        if not path:
            raise VocabularyError(f"exemplar {text!r} names no image")
        if relative_to is not None and not Path(path).is_absolute():
            path = str(Path(relative_to) / path)
        return cls(path, box)  # type: ignore[arg-type]


@dataclass(frozen=True, eq=False)
class ExemplarSpec:
    """A class written as ``name=exemplars`` or ``name+=exemplars``.

    Attributes:
        name: the class's display name.
        exemplars: its example boxes, at least one.
        with_text: whether the name's text embedding is mixed in (``+=``).
    """

    name: str
    exemplars: tuple[Exemplar, ...]
    with_text: bool = False


def parse_exemplar_spec(text: str, relative_to: str | Path | None = None) -> ExemplarSpec:
    """``"name=path:x,y,w,h; path2"`` or ``"name+=..."`` -> :class:`ExemplarSpec`.

    Raises:
        VocabularyError: no ``=``, an empty name, no exemplar, or a bad box.
    """
    name, sep, rest = text.partition("=")
    if not sep:
        raise VocabularyError(f"exemplar class {text!r} has no '='; write name=image.jpg:x,y,w,h")
    with_text = name.endswith("+")
    name = (name[:-1] if with_text else name).strip()
    if not name:
        raise VocabularyError(f"exemplar class {text!r} has no name before '='")
    parts = [p for p in rest.split(";") if p.strip()]
    if not parts:
        raise VocabularyError(f"exemplar class {name!r} has no exemplar after '='")
    exemplars = tuple(Exemplar.parse(p, relative_to) for p in parts)
    return ExemplarSpec(name, exemplars, with_text)


ExemplarsInput = Mapping[str, Union[Exemplar, str, Sequence[Union[Exemplar, str]]]]
"""Exemplars by class name, as the API takes them: per name an :class:`Exemplar`, a
``"path:x,y,w,h"`` string, or a list of them. A name gives the class by its exemplars alone
(``name=...``); a name ending in ``+`` (``"mug+"``) by its text and exemplars (``mug+=...``)."""


def exemplar_specs(
    exemplars: ExemplarsInput | Sequence[ExemplarSpec] | None,
) -> list[ExemplarSpec]:
    """:class:`ExemplarSpec` s from exemplars by class name (:data:`ExemplarsInput`), or from
    specs already made."""
    if not exemplars:
        return []
    if not isinstance(exemplars, Mapping):
        specs = list(exemplars)
        if not all(isinstance(s, ExemplarSpec) for s in specs):
            raise VocabularyError("exemplars must be a mapping from class name to exemplars")
        return specs
    specs = []
    for name, given in exemplars.items():
        items = [given] if isinstance(given, (Exemplar, str)) else list(given)
        if not items:
            raise VocabularyError(f"exemplar class {name!r} has no exemplar")
        parsed = tuple(e if isinstance(e, Exemplar) else Exemplar.parse(str(e)) for e in items)
        name = str(name).strip()
        with_text = name.endswith("+")
        specs.append(ExemplarSpec(name[:-1].strip() if with_text else name, parsed, with_text))
    return specs

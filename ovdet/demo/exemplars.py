"""The page's exemplar classes: a box drawn (or typed) on an image becomes a class.

The image tab keeps the exemplar classes added so far (a ``gradio.State`` list of
:class:`~ovdet.structures.exemplars.ExemplarSpec`); each request adds them to the class box's
vocabulary (:meth:`~ovdet.structures.Vocabulary.with_exemplars`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ovdet.structures.exemplars import Exemplar, ExemplarSpec
from ovdet.utils.errors import OvdetError, VocabularyError

__all__ = ["add_exemplar_class", "drawn_box", "exemplar_list_text", "editor_image"]


def editor_image(value: Any) -> np.ndarray | None:
    """The uploaded picture of the image editor (its background), RGB uint8 [H, W, 3]."""
    if value is None:
        return None
    image = value.get("background") if isinstance(value, dict) else value
    if image is None:
        return None
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    return np.ascontiguousarray(array[:, :, :3]).astype(np.uint8)


def drawn_box(value: Any) -> tuple[float, float, float, float] | None:
    """The box ``(x, y, w, h)`` around what was drawn on the image editor's layers (pixels of
    the layers' alpha above 0); ``None`` where nothing was drawn."""
    layers = value.get("layers") if isinstance(value, dict) else None
    masks = [np.asarray(layer)[:, :, 3] > 0 for layer in layers or [] if layer is not None
             and np.asarray(layer).ndim == 3 and np.asarray(layer).shape[2] == 4]  # fmt: skip
    if not masks or not any(m.any() for m in masks):
        return None
    ys, xs = np.nonzero(np.logical_or.reduce(masks))
    x1, y1 = float(xs.min()), float(ys.min())
    return (x1, y1, float(xs.max()) + 1 - x1, float(ys.max()) + 1 - y1)


def _typed_box(text: str) -> tuple[float, float, float, float] | None:
    text = (text or "").strip()
    if not text:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4:
        raise VocabularyError(f"the box {text!r} is not four numbers x,y,w,h")
    return values  # type: ignore[return-value]


def add_exemplar_class(
    specs: list[ExemplarSpec], name: str, editor: Any, box_text: str, with_text: bool
) -> tuple[list[ExemplarSpec], str]:
    """The exemplar classes with one more exemplar: ``name`` given by the box drawn on the
    editor's image (or typed as ``x,y,w,h``; neither: the whole image). The same name again adds
    an exemplar to its class.

    Returns:
        (the new list, a one-line status; ``error: ...`` and the list unchanged on bad input).
    """
    from ovdet.core.exemplar_loading import load_exemplars
    from ovdet.structures.vocabulary import Vocabulary

    name = (name or "").strip()
    image = editor_image(editor)
    try:
        if not name:
            raise VocabularyError("name the exemplar class")
        if image is None:
            raise VocabularyError("upload an image to draw the exemplar's box on")
        box = _typed_box(box_text) or drawn_box(editor)
        exemplar = Exemplar(image, box)
        load_exemplars([exemplar])  # the box is inside the image and not empty
        spec = ExemplarSpec(name, (exemplar,), bool(with_text))
        Vocabulary.from_exemplar_specs([*specs, spec])  # no conflicting spec
    except OvdetError as e:
        return specs, f"error: {e}"
    specs = [*specs, spec]
    return specs, f"{exemplar_list_text(specs)}"


def exemplar_list_text(specs: list[ExemplarSpec]) -> str:
    """One line: each exemplar class with its number of exemplars."""
    if not specs:
        return "no exemplar class"
    counts: dict[tuple[str, bool], int] = {}
    for spec in specs:
        key = (spec.name, spec.with_text)
        counts[key] = counts.get(key, 0) + len(spec.exemplars)
    return "exemplar classes: " + "; ".join(
        f"{name}{' (+ text)' if text else ''}: {n} box(es)" for (name, text), n in counts.items()
    )

"""Type checks of values parsed from JSON: annotation, image-label and results files.

``json`` gives ``bool`` for ``true`` and ``false``, and ``bool`` is an ``int`` in Python; an id
or a coordinate must not be one.
"""

from __future__ import annotations

import numbers

__all__ = ["is_int", "is_number"]


def is_int(x: object) -> bool:
    """An integer that is not a ``bool``."""
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def is_number(x: object) -> bool:
    """A real number (integer or float, possibly not finite) that is not a ``bool``."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool)

"""Reading JSON input files (annotations, image labels, results) and checking their values.

Every loader reads its file with :func:`read_json_file`, so a missing, unreadable or malformed
file gives the same one-line error wherever it is read, naming what the file was for.
``json`` gives ``bool`` for ``true`` and ``false``, and ``bool`` is an ``int`` in Python: an id
or a coordinate must not be one (:func:`is_int`, :func:`is_number`).
"""

from __future__ import annotations

import json
import numbers
from pathlib import Path
from typing import Any

from ovdet.utils.errors import DataError

__all__ = ["is_int", "is_number", "read_json_file"]


def read_json_file(path: str | Path, what: str, error: type[Exception] = DataError) -> Any:
    """The parsed content of a JSON file.

    Args:
        path: the file.
        what: what the file is, for the message ("annotation file").
        error: the exception to raise.

    Raises:
        ``error``: ``cannot read {what} {path}: ...``, where the file does not exist, cannot be
            read, or is not valid JSON (or UTF-8).
    """
    path = Path(path)
    if not path.exists():
        raise error(f"cannot read {what} {path}: it does not exist")
    try:
        with path.open(encoding="utf-8") as f:
            return json.load(f)
    except OSError as e:
        raise error(f"cannot read {what} {path}: {e.strerror or e}") from e
    except (ValueError, RecursionError) as e:  # ValueError: bad JSON or UTF-8; too deep nesting
        raise error(f"cannot read {what} {path}: not valid JSON ({e})") from e


def is_int(x: object) -> bool:
    """An integer that is not a ``bool``."""
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def is_number(x: object) -> bool:
    """A real number (integer or float, possibly not finite) that is not a ``bool``."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool)

"""Checkpoints written before they held only plain types: read safely, or converted.

Legacy checkpoints hold NumPy's RNG state as a NumPy array. :func:`load_with_numpy_stand_ins`
reads them with stand-ins registered under NumPy's pickle names that rebuild numeric arrays from
their bytes (NumPy's own unpickling code never runs on the file). Anything else needs
:func:`convert_checkpoint`, for trusted files only.
"""

from __future__ import annotations

import io
import logging
import math
import pickle
import threading
from collections import OrderedDict
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import torch

from ovdet.utils.errors import CheckpointError
from ovdet.utils.io import atomic_open
from ovdet.utils.rng_state import upgrade_rng_state

__all__ = ["LEGACY_NUMPY_NAMES", "convert_checkpoint", "load_with_numpy_stand_ins"]

logger = logging.getLogger(__name__)


# NumPy's unpickling functions are not on torch's allow-list, and with reason: they were not
# written for untrusted input. These stand-ins take their names while a legacy checkpoint is
# read and accept only arrays of numbers, which they rebuild from the raw bytes.
_NUMERIC_CODES = frozenset(["b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8"])


class _LegacyDtype:
    """Stands in for ``numpy.dtype``: a numeric type code and its byte order."""

    def __init__(self, code: Any, align: Any = False, copy: Any = True) -> None:
        if not isinstance(code, str) or code not in _NUMERIC_CODES:
            raise pickle.UnpicklingError(f"unsupported NumPy dtype {code!r}")
        self.code, self.byteorder = code, "="

    def __setstate__(self, state: Any) -> None:
        order = state[1] if isinstance(state, tuple) and len(state) > 1 else None
        if order not in ("<", ">", "=", "|"):
            raise pickle.UnpicklingError(f"unsupported NumPy byte order {order!r}")
        self.byteorder = order

    def to_numpy(self) -> np.dtype:
        dtype = np.dtype(self.code)
        return dtype.newbyteorder(self.byteorder) if self.byteorder in "<>" else dtype


class _LegacyArray:
    """Stands in for ``numpy.ndarray``: a numeric array rebuilt from its shape, type and bytes."""

    array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        # ndarray.__reduce__'s state: (version, shape, dtype, is_fortran, raw bytes)
        if not (isinstance(state, tuple) and len(state) == 5):
            raise pickle.UnpicklingError("malformed NumPy array")
        _, shape, dtype, fortran, raw = state
        if not (
            isinstance(dtype, _LegacyDtype)
            and isinstance(raw, (bytes, bytearray))
            and isinstance(shape, tuple)
            and all(isinstance(n, int) and n >= 0 for n in shape)
        ):
            raise pickle.UnpicklingError("malformed NumPy array")
        dt = dtype.to_numpy()
        count = math.prod(shape)
        if len(raw) != count * dt.itemsize:
            raise pickle.UnpicklingError("NumPy array of the wrong size")
        flat = np.frombuffer(bytes(raw), dtype=dt, count=count)
        self.array = flat.reshape(shape, order="F" if fortran else "C").astype(dt.newbyteorder("="))


def _legacy_reconstruct(subtype: Any, shape: Any, code: Any) -> _LegacyArray:
    """Stands in for ``numpy.core.multiarray._reconstruct``: an empty array, filled by BUILD."""
    if subtype is not _LegacyArray:
        raise pickle.UnpicklingError("only plain NumPy arrays are read from legacy checkpoints")
    return _LegacyArray()


# (stand-in, the name it takes), as torch.serialization.safe_globals takes them.
_LEGACY_NUMPY_STAND_INS = [
    (_legacy_reconstruct, "numpy.core.multiarray._reconstruct"),  # NumPy 1
    (_legacy_reconstruct, "numpy._core.multiarray._reconstruct"),  # NumPy 2
    (_LegacyArray, "numpy.ndarray"),
    (_LegacyDtype, "numpy.dtype"),
]
LEGACY_NUMPY_NAMES = frozenset(name for _, name in _LEGACY_NUMPY_STAND_INS)
_STAND_IN_LOCK = threading.Lock()


def load_with_numpy_stand_ins(path: Path) -> Any:
    """The file read with the NumPy stand-ins, or ``None`` where that fails (or torch is too
    old to register globals under another name)."""
    safe_globals = getattr(torch.serialization, "safe_globals", None)  # torch>=2.5
    if safe_globals is None:
        return None
    try:  # torch's allow-list is process-wide: one such read at a time
        with _STAND_IN_LOCK, safe_globals(_LEGACY_NUMPY_STAND_INS):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        logger.debug("%s: reading its NumPy arrays failed: %s", path, e)
        return None
    return _replace_stand_ins(state)


def _replace_stand_ins(value: Any) -> Any:
    if isinstance(value, _LegacyArray):
        if value.array is None:
            raise CheckpointError("a NumPy array in the checkpoint holds no data")
        return value.array
    if isinstance(value, _LegacyDtype):
        return value.to_numpy()
    if isinstance(value, dict):
        for k in list(value):
            value[k] = _replace_stand_ins(value[k])
        return value
    if isinstance(value, list):
        return [_replace_stand_ins(v) for v in value]
    if type(value) is tuple:
        return tuple(_replace_stand_ins(v) for v in value)
    return value


# ------------------------------------------------------------------------------ conversion
class _NotPlain(Exception):
    def __init__(self, where: str, value: Any) -> None:
        super().__init__(f"{where} is a {type(value).__module__}.{type(value).__qualname__}")


def _plain(value: Any, where: str) -> Any:
    """``value`` as tensors and plain types that ``torch.load(weights_only=True)`` reads."""
    if isinstance(value, np.generic):  # before int/float: np.float64 is a float
        return value.item()
    if value is None or type(value) in (bool, int, float, complex, str, bytes):
        return value
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biuf":
            raise _NotPlain(where, value)
        if value.dtype.kind == "u" and value.dtype.itemsize > 1:  # no such tensors in old torch
            value = value.astype(np.int64)
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, (torch.dtype, torch.device, torch.Size)):
        return value
    if isinstance(value, PurePath):
        return str(value)
    for base in (int, float, str):  # subclasses (IntEnum...): the plain value
        if isinstance(value, base):
            return base(value)
    if isinstance(value, dict):
        out: dict = OrderedDict() if isinstance(value, OrderedDict) else {}
        for k, v in value.items():
            out[_plain(k, f"{where} key")] = _plain(v, f"{where}[{k!r}]")
        metadata = getattr(value, "_metadata", None)  # state_dict versions
        if metadata is not None and isinstance(out, OrderedDict):
            out._metadata = _plain(metadata, f"{where}._metadata")
        return out
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if isinstance(value, tuple) else items
    raise _NotPlain(where, value)


def convert_checkpoint(src: str | Path, dst: str | Path) -> list[str]:
    """Rewrite a TRUSTED checkpoint as tensors and plain types, which load safely.

    ``src`` is unpickled in full (``weights_only=False``), which runs any code the file holds:
    only convert files whose source you trust. NumPy arrays become tensors, NumPy scalars and
    paths plain values, a legacy RNG state the current format; a top-level entry other than
    ``model`` that cannot be expressed in plain types is dropped (and reported). The result is
    checked to load with ``weights_only=True`` before it is written (atomically).

    Returns:
        One note per dropped entry.

    Raises:
        CheckpointError: ``src`` is missing or unreadable, has no ``model`` entry, or its
            weights are not plain.
    """
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise CheckpointError(f"checkpoint {src} does not exist")
    try:
        state = torch.load(src, map_location="cpu", weights_only=False)  # trusted by the caller
    except Exception as e:
        reason = " ".join(str(e).split())[:80]
        raise CheckpointError(f"cannot read checkpoint {src} ({type(e).__name__}: {reason})") from e
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{src} is not a checkpoint (no 'model' entry)")
    out: dict[str, Any] = {}
    notes = []
    for key, value in state.items():
        try:
            if key == "rng" and isinstance(value, dict):
                value = upgrade_rng_state(value, f"checkpoint {src}")
            out[_plain(key, "a key")] = _plain(value, repr(key))
        except _NotPlain as e:
            if key == "model":
                raise CheckpointError(f"cannot convert {src}: {e}") from None
            notes.append(f"dropped {key!r}: {e}")
    buffer = io.BytesIO()
    torch.save(out, buffer)
    buffer.seek(0)
    try:
        torch.load(buffer, map_location="cpu", weights_only=True)
    except Exception as e:  # a type _plain let through that torch's safe loader refuses
        reason = " ".join(str(e).split())[:120]
        raise CheckpointError(
            f"cannot convert {src}: the result does not load safely ({reason})"
        ) from e
    with atomic_open(dst, "wb") as f:
        f.write(buffer.getvalue())
    for note in notes:
        logger.warning("%s: %s", src, note)
    logger.info("Wrote %s (loads with weights_only=True)", dst)
    return notes

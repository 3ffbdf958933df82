"""Checkpoints: one file holds weights, config and training state; written atomically.

A checkpoint holds only tensors and plain Python types (dicts, lists, tuples, strings, numbers,
``None``), so every reader loads it with ``torch.load(weights_only=True)``: no file can run code
when it is opened. Checkpoints written before that format held NumPy's RNG state as a NumPy
array; they still load, through stand-ins that rebuild numeric arrays from their bytes without
calling NumPy's unpickling code. Any other pickled object is refused with a one-line
:class:`~ovdet.errors.CheckpointError` that names the command converting a trusted file
(:func:`convert_checkpoint`, ``python -m ovdet.cli.convert_checkpoint OLD NEW``).
"""

from __future__ import annotations

import io
import logging
import math
import pickle
import random
import re
import threading
from collections import OrderedDict
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import torch
from torch import nn

from ovdet.errors import CheckpointError
from ovdet.utils.io import atomic_open, atomic_torch_save

__all__ = [
    "capture_rng_state",
    "convert_checkpoint",
    "find_last_checkpoint",
    "load_checkpoint",
    "load_model_weights",
    "read_torch_file",
    "restore_rng_state",
    "save_checkpoint",
]

logger = logging.getLogger(__name__)

LAST_CHECKPOINT = "last_checkpoint"
CONVERT_COMMAND = "python -m ovdet.cli.convert_checkpoint"


def save_checkpoint(state: dict[str, Any], output_dir: str | Path, name: str) -> Path:
    """Write ``state`` to ``output_dir/name`` atomically and record it as the last checkpoint."""
    path = Path(output_dir) / name
    atomic_torch_save(state, path)
    with atomic_open(Path(output_dir) / LAST_CHECKPOINT, "w") as f:
        f.write(name)
    logger.info("Saved checkpoint %s", path)
    return path


def find_last_checkpoint(output_dir: str | Path) -> Path | None:
    """The checkpoint named by ``output_dir/last_checkpoint``, if any."""
    marker = Path(output_dir) / LAST_CHECKPOINT
    if not marker.is_file():
        return None
    path = Path(output_dir) / marker.read_text().strip()
    return path if path.is_file() else None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint file without running code from it (see :func:`read_torch_file`).

    An RNG state in the format written before checkpoints held only plain types is returned in
    the current format (:func:`capture_rng_state`).

    Raises:
        CheckpointError: missing, truncated, holding pickled objects beyond tensors and plain
            types, or not an ovdet checkpoint.
    """
    path = Path(path)
    state = read_torch_file(path)
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path} is not an ovdet checkpoint (no 'model' entry)")
    if isinstance(state.get("rng"), dict):
        state["rng"] = _upgrade_rng(state["rng"], str(path))
    return state


# ------------------------------------------------------------------------------- safe reading
def read_torch_file(path: str | Path, label: str | None = None) -> Any:
    """``torch.load(path, weights_only=True)`` onto the CPU, with one-line errors.

    Only tensors and plain Python types are unpickled; a file holding anything else (which
    unpickling could turn into running code) is refused. The one exception: NumPy arrays of
    numbers (legacy checkpoints hold NumPy's RNG state) are rebuilt from their bytes by
    stand-ins of ours, registered under NumPy's names only for that second attempt; they come
    back as NumPy arrays.

    Args:
        path: the file.
        label: how errors name the file (default ``"checkpoint PATH"``).

    Raises:
        CheckpointError: missing, truncated or not a PyTorch file, or holding pickled objects
            beyond tensors and plain types (the message says how to convert a trusted file).
    """
    path = Path(path)
    label = label or f"checkpoint {path}"
    if not path.is_file():
        raise CheckpointError(f"{label} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # reading garbage can raise almost anything
        error = e
    refused = _refused_globals(path, error)
    if refused and set(refused) <= _LEGACY_NUMPY_NAMES:
        state = _load_with_numpy_stand_ins(path)
        if state is not None:
            return state
    if refused:
        raise CheckpointError(_refusal_message(label, path, refused)) from None
    # torch's own explanation of weights_only precedes the unpickler's: keep the latter, one line
    reason = str(error).split("WeightsUnpickler error:")[-1]
    reason = " ".join(reason.split())[:80]
    raise CheckpointError(
        f"{label} is truncated or not a PyTorch checkpoint ({type(error).__name__}: {reason})"
    ) from error


# Modules whose functions no checkpoint needs but a crafted one calls to run code or touch files.
_CODE_RUNNING_MODULES = {
    "builtins", "os", "posix", "nt", "subprocess", "sys", "shutil", "io", "_io", "importlib",
    "runpy", "code", "codeop", "ctypes", "socket", "pickle", "_pickle", "marshal", "types",
    "webbrowser", "pty",
}  # fmt: skip


def _refused_globals(path: Path, error: Exception) -> list[str]:
    """The pickled globals (``module.name``) that ``weights_only`` refused, if that was why."""
    scan = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)  # torch>=2.5
    if scan is not None:
        try:  # reads the pickle's opcodes; runs nothing
            found = scan(str(path))
        except Exception:  # not a zip checkpoint: fall back on the error message
            found = []
        if found:
            return sorted(found)
    return sorted(set(re.findall(r"GLOBAL ([\w.]+)", str(error))))


def _refusal_message(label: str, path: Path, refused: list[str]) -> str:
    names = ", ".join(refused[:3]) + (", ..." if len(refused) > 3 else "")
    crafted = [n for n in refused if n.split(".")[0] in _CODE_RUNNING_MODULES or "." not in n]
    if crafted:
        return (
            f"{label} is refused: loading it would call {crafted[0]}, which no checkpoint "
            "needs (a file crafted to run code?); do not use or convert it"
        )
    return (
        f"{label} holds pickled objects other than tensors and plain types ({names}), which "
        "loading could run as code, so it is refused; if you trust its source, convert it with: "
        f"{CONVERT_COMMAND} {path} CONVERTED.pt"
    )


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
_LEGACY_NUMPY_NAMES = frozenset(name for _, name in _LEGACY_NUMPY_STAND_INS)
_STAND_IN_LOCK = threading.Lock()


def _load_with_numpy_stand_ins(path: Path) -> Any:
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


# ------------------------------------------------------------------------------------- RNG
def capture_rng_state() -> dict[str, Any]:
    """The RNG states of Python, NumPy, torch and CUDA as tensors and plain types.

    :func:`restore_rng_state` sets them back exactly.
    """
    version, internal, gauss = random.getstate()
    name, key, pos, has_gauss, cached = np.random.get_state(legacy=True)
    return {
        "python": {
            "version": int(version),
            "state": torch.tensor(internal, dtype=torch.int64),
            "gauss": gauss,
        },
        "numpy": {
            "bit_generator": str(name),
            "key": torch.from_numpy(np.asarray(key, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def restore_rng_state(rng: dict[str, Any], source: str = "checkpoint") -> None:
    """Set the RNG states captured by :func:`capture_rng_state` (or the legacy format).

    Raises:
        CheckpointError: a malformed RNG state.
    """
    try:
        rng = _upgrade_rng(rng, source)
        py, npy = rng["python"], rng["numpy"]
        random.setstate(
            (int(py["version"]), tuple(int(v) for v in py["state"].tolist()), py["gauss"])
        )
        np.random.set_state(
            (
                str(npy["bit_generator"]),
                npy["key"].numpy().astype(np.uint32),
                int(npy["pos"]),
                int(npy["has_gauss"]),
                float(npy["cached_gaussian"]),
            )
        )
        torch.set_rng_state(rng["torch"])
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as e:
        raise CheckpointError(f"{source} holds a malformed RNG state ({e})") from e
    if rng.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def _upgrade_rng(rng: dict[str, Any], source: str) -> dict[str, Any]:
    """The legacy RNG format (``random.getstate()`` and ``np.random.get_state()`` tuples, the
    latter holding a NumPy array) in the current one; the current format is returned as is."""
    rng = dict(rng)
    py, npy = rng.get("python"), rng.get("numpy")
    try:
        if isinstance(py, (tuple, list)):
            version, internal, gauss = py
            rng["python"] = {
                "version": int(version),
                "state": torch.tensor([int(v) for v in internal], dtype=torch.int64),
                "gauss": None if gauss is None else float(gauss),
            }
        if isinstance(npy, (tuple, list)):
            name, key, pos, has_gauss, cached = npy
            rng["numpy"] = {
                "bit_generator": str(name),
                "key": torch.as_tensor(np.asarray(key).astype(np.int64)),
                "pos": int(pos),
                "has_gauss": int(has_gauss),
                "cached_gaussian": float(cached),
            }
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{source} holds a malformed RNG state ({e})") from e
    return rng


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
                value = _upgrade_rng(value, f"checkpoint {src}")
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


# --------------------------------------------------------------------------------- weights
def load_model_weights(
    model: nn.Module, weights: dict[str, torch.Tensor], source: str, strict: bool = True
) -> None:
    """Load detector weights, explaining mismatches instead of a shape traceback.

    The CLIP teacher (``clip_teacher.*``) is never in checkpoints and is ignored.

    Args:
        strict: every weight of the model must be in ``weights`` and nothing else (inference
            and resume: a weight left at random init would silently ruin the results). With
            ``False`` (initialising a fine-tuning run) missing and unexpected weights are only
            logged, unless more than half the model is missing.

    Raises:
        CheckpointError: a weight of another shape, or missing / unexpected weights as above.
    """
    own = {k: v for k, v in model.state_dict().items() if not k.startswith("clip_teacher.")}
    if not isinstance(weights, dict) or not all(torch.is_tensor(v) for v in weights.values()):
        raise CheckpointError(f"{source} holds no weights dict of tensors under 'model'")
    mismatched = [
        f"{k}: checkpoint {tuple(weights[k].shape)} vs model {tuple(v.shape)}"
        for k, v in own.items()
        if k in weights and weights[k].shape != v.shape
    ]
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    if mismatched or len(missing) > 0.5 * len(own) or (strict and (missing or unexpected)):
        detail = (
            mismatched[0]
            if mismatched
            else (
                f"{len(missing)} weights missing and {len(unexpected)} unexpected, e.g. "
                f"{(missing + unexpected)[0]}"
            )
        )
        raise CheckpointError(
            f"{source} does not fit this model (another architecture, backbone or CLIP "
            f"dimension?): {detail}"
        )
    if missing or unexpected:
        logger.warning(
            "%s: %d missing and %d unexpected weights (e.g. %s)",
            source,
            len(missing),
            len(unexpected),
            (missing + unexpected)[:2],
        )
    model.load_state_dict(weights, strict=False)

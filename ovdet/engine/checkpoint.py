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

import logging
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ovdet.engine.legacy_checkpoint import (
    LEGACY_NUMPY_NAMES,
    convert_checkpoint,
    load_with_numpy_stand_ins,
)
from ovdet.engine.rng_state import capture_rng_state, restore_rng_state, upgrade_rng_state
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
        state["rng"] = upgrade_rng_state(state["rng"], str(path))
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
    if refused and set(refused) <= LEGACY_NUMPY_NAMES:
        state = load_with_numpy_stand_ins(path)
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

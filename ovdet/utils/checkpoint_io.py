"""Reading PyTorch files without running code from them: tensors and plain types only.

Shared by both engines' checkpoint loading: a file holding pickled objects beyond tensors and
plain Python types is refused with a one-line :class:`~ovdet.utils.errors.CheckpointError`,
except NumPy arrays of numbers (legacy checkpoints), rebuilt by stand-ins of ours.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from ovdet.utils.errors import CheckpointError
from ovdet.utils.legacy_checkpoint import LEGACY_NUMPY_NAMES, load_with_numpy_stand_ins

__all__ = ["CONVERT_COMMAND", "read_torch_file"]

CONVERT_COMMAND = "python -m ovdet.cli.convert_checkpoint"


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

"""Atomic file writes: a reader never sees a half-written file, even after SIGKILL."""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any, Iterator

__all__ = ["atomic_open", "atomic_torch_save", "atomic_write_json", "check_writable_dir"]

_UMASK = os.umask(0o022)  # read the process umask (only settable), then restore it
os.umask(_UMASK)


@contextmanager
def atomic_open(path: str | Path, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success it replaces ``path`` atomically.

    On any exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **kwargs) as f:
            os.fchmod(f.fileno(), 0o666 & ~_UMASK)  # mkstemp makes 0600; open() would not
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` through :func:`atomic_open`."""
    import torch  # here, so that tools which write no tensors do not import torch

    with atomic_open(path, "wb") as f:
        torch.save(obj, f)


def atomic_write_json(obj: Any, path: str | Path, indent: int | None = 2) -> None:
    """``json.dump`` through :func:`atomic_open`."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=indent)


def check_writable_dir(path: str | Path, min_free_bytes: int = 1 << 20) -> Path:
    """Create ``path`` if needed and check it can be written, before long work starts.

    Raises:
        OSError: with a one-line message if the folder cannot be created or written, or has
            less than ``min_free_bytes`` free.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as e:
        raise OSError(f"output folder {path} is not writable: {e.strerror or e}") from e
    free = os.statvfs(path).f_bavail * os.statvfs(path).f_frsize
    if free < min_free_bytes:
        raise OSError(f"output folder {path} has only {free} bytes free")
    return path

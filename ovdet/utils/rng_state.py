"""RNG states of Python, NumPy, torch and CUDA as tensors and plain types (safe to load)."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from ovdet.utils.errors import CheckpointError

__all__ = ["capture_rng_state", "restore_rng_state", "upgrade_rng_state"]


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
        rng = upgrade_rng_state(rng, source)
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


def upgrade_rng_state(rng: dict[str, Any], source: str) -> dict[str, Any]:
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

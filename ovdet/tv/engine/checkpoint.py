"""Checkpoints: one file holds weights, config and training state; written atomically.

A checkpoint holds only tensors and plain Python types (dicts, lists, tuples, strings, numbers,
``None``), so every reader loads it with ``torch.load(weights_only=True)``: no file can run code
when it is opened. Checkpoints written before that format held NumPy's RNG state as a NumPy
array; they still load, through stand-ins that rebuild numeric arrays from their bytes without
calling NumPy's unpickling code. Any other pickled object is refused with a one-line
:class:`~ovdet.utils.errors.CheckpointError` that names the command converting a trusted file
(:func:`convert_checkpoint`, ``python -m ovdet.cli.convert_checkpoint OLD NEW``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ovdet.utils.checkpoint_io import read_torch_file
from ovdet.utils.errors import CheckpointError
from ovdet.utils.io import atomic_open, atomic_torch_save
from ovdet.utils.legacy_checkpoint import convert_checkpoint
from ovdet.utils.rng_state import capture_rng_state, restore_rng_state, upgrade_rng_state

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

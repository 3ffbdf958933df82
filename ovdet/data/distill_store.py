"""Precomputed CLIP region embeddings for offline ViLD-image distillation."""

from __future__ import annotations

from pathlib import Path

import torch

from ovdet.utils.errors import DataError

__all__ = ["load_distill_store"]


def load_distill_store(path: str | Path) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Read a file written by ``tools/precompute_clip_embeddings.py``.

    Returns:
        image_id -> (boxes Tensor[M, 4] xyxy in original image pixels, embeddings Tensor[M, D]).
    """
    path = Path(path)
    if not str(path) or not path.is_file():
        raise DataError(
            f"distillation embeddings file {path} does not exist (MODEL.OVDET.DISTILL."
            "EMBEDDINGS_FILE; write it with tools/precompute_clip_embeddings.py)"
        )
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
        store = {int(k): (v["boxes"], v["embeddings"]) for k, v in data["images"].items()}
    except Exception as e:
        raise DataError(f"cannot read distillation embeddings {path}: {e}") from e
    return store

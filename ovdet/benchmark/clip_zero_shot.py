"""Zero-shot classification accuracy of a CLIP on labelled crops (a caption CSV)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ovdet.data.splits import OpenVocabularySplit
from ovdet.errors import DataError

__all__ = ["crop_zero_shot_accuracy"]


def _read_labelled_crops(captions_csv: Path) -> list[tuple[Path, str]]:
    if not captions_csv.is_file():
        raise DataError(f"caption CSV {captions_csv} does not exist")
    with open(captions_csv, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if not rows or "label" not in rows[0] or "filepath" not in rows[0]:
        raise DataError(f"{captions_csv} needs tab-separated 'filepath' and 'label' columns")
    return [(captions_csv.parent / r["filepath"], r["label"]) for r in rows]


@torch.no_grad()
def crop_zero_shot_accuracy(
    clip,
    captions_csv: str | Path,
    split: OpenVocabularySplit,
    templates: str = "a",
    batch_size: int = 256,
) -> dict[str, float]:
    """Top-1 accuracy of CLIP classifying each crop among all ``split`` classes.

    Args:
        clip: a loaded CLIP (:class:`ovdet.clip.ClipBackend`) or a CLIP spec string.
        captions_csv: a CSV with ``filepath`` and ``label`` columns (the synthetic dataset's
            ``captions/val.csv``).
        split: base and novel class names; the vocabulary is their union.
        templates: prompt templates (see :func:`ovdet.text.load_templates`).
        batch_size: crops per image-tower call.

    Returns:
        ``{"all": acc, "base": acc, "novel": acc}`` over the crops of each group (``nan`` for a
        group without crops).
    """
    from ovdet.clip import load_clip
    from ovdet.text import TextClassifierBuilder, Vocabulary

    clip = load_clip(clip) if isinstance(clip, str) else clip
    names = list(split.base) + list(split.novel)
    text = TextClassifierBuilder(clip, templates, cache_dir="")(Vocabulary.from_names(names))
    index = {n.lower(): i for i, n in enumerate(names)}
    crops = _read_labelled_crops(Path(captions_csv))
    unknown = sorted({label for _, label in crops if label.lower() not in index})
    if unknown:
        raise DataError(f"crop labels outside the split: {unknown[:5]}")
    mean = torch.tensor(clip.mean).view(1, 3, 1, 1)
    std = torch.tensor(clip.std).view(1, 3, 1, 1)
    predictions = []
    for start in range(0, len(crops), batch_size):
        batch = [
            np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) / 255.0
            for p, _ in crops[start : start + batch_size]
        ]
        pixels = torch.stack([torch.from_numpy(a).permute(2, 0, 1) for a in batch])
        pixels = F.interpolate(pixels, size=(clip.image_size,) * 2, mode="bilinear")
        features = F.normalize(clip.encode_image((pixels - mean) / std), dim=-1)
        predictions.append((features @ text.t()).argmax(dim=1))
    predicted = torch.cat(predictions).tolist()
    truth = [index[label.lower()] for _, label in crops]
    correct = torch.tensor(predicted) == torch.tensor(truth)
    is_base = torch.tensor(truth) < len(split.base)
    groups = {"all": torch.ones_like(is_base), "base": is_base, "novel": ~is_base}
    result = {}
    for group, member in groups.items():
        result[group] = correct[member].float().mean().item() if member.any() else float("nan")
    return result

"""The result type of detection, shared by :class:`ovdet.api.OVDetector` and the ONNX runtime,
and its entries in a ``results.json`` (``tools/infer.py``, the demo).

Kept free of PyTorch: :mod:`ovdet.export.runtime` returns it without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence, Union

import numpy as np
from PIL import Image

from ovdet.structures.loaded_image import LoadedImage
from ovdet.structures.masks import mask_to_rle

__all__ = ["Detections", "ImageInput", "as_image_list", "detection_records"]

ImageInput = Union[str, Path, np.ndarray, Image.Image, LoadedImage]
"""What ``predict`` takes per image: a path, an RGB uint8 array [H, W, 3], a PIL image or a
:class:`~ovdet.structures.loaded_image.LoadedImage` (pixels downscaled on load, with the
original's size: the boxes are in the original's pixels)."""


@dataclass
class Detections:
    """Detections in one image, in the image's original pixel coordinates.

    Attributes:
        boxes: float32 [K, 4] (x1, y1, x2, y2).
        scores: float32 [K].
        labels: int64 [K], indices into ``class_names``.
        class_names: the vocabulary the labels index.
        embeddings: float32 [K, D] region embeddings, if requested.
        class_kinds: per class of ``class_names``, how it was given: ``text``, ``exemplar`` or
            ``text+exemplar`` (image exemplars); empty where unknown (all text).
        masks: bool [K, H, W] instance masks in the original image, from a detector with a
            mask head (``MODEL.MASK_ON``); ``None`` otherwise.
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    class_names: list[str] = field(repr=False)
    embeddings: np.ndarray | None = field(default=None, repr=False)
    class_kinds: list[str] = field(default_factory=list, repr=False)
    masks: np.ndarray | None = field(default=None, repr=False)

    @property
    def names(self) -> list[str]:
        """The class name of each detection."""
        return [self.class_names[i] for i in self.labels]

    def __len__(self) -> int:
        return len(self.scores)


def as_image_list(images: ImageInput | Sequence[ImageInput]) -> list[ImageInput]:
    """One image or a sequence of them, as a list (an array or a path is one image)."""
    if isinstance(images, (str, Path, np.ndarray, Image.Image, LoadedImage)):
        return [images]
    return list(images)


def detection_records(
    det: Detections,
    file_name: str,
    image_id: int,
    class_names: Sequence[str],
    embedding_rows: Sequence[int] | None = None,
    class_kinds: Sequence[str] = (),
) -> list[dict]:
    """``results.json`` entries of one image's detections: COCO xywh boxes, rounded, and each
    mask (if the detector predicts them) as a COCO RLE ``segmentation``.

    Args:
        det: the image's detections.
        file_name: the image as the results name it.
        image_id: its id in the results' ``images``.
        class_names: the vocabulary the labels index (``category_id`` is label + 1).
        embedding_rows: per detection, its row in the run's ``embeddings.npy``.
        class_kinds: per class, how it was given (:attr:`Detections.class_kinds`); a detection
            of a class given by exemplars is marked with ``"query": "exemplar"`` (or
            ``"text+exemplar"``).
    """
    out = []
    for i, (box, score, label) in enumerate(
        zip(det.boxes.tolist(), det.scores.tolist(), det.labels.tolist())
    ):
        x1, y1, x2, y2 = box
        record = {
            "image_id": image_id,
            "file_name": file_name,
            "category": class_names[label],
            "category_id": int(label) + 1,
            "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
            "score": round(float(score), 5),
        }
        if class_kinds and class_kinds[label] != "text":
            record["query"] = class_kinds[label]
        if det.masks is not None:
            record["segmentation"] = mask_to_rle(det.masks[i])
        if embedding_rows is not None:
            record["embedding_index"] = embedding_rows[i]
        out.append(record)
    return out

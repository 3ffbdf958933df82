"""Auto-annotation: detections written as datasets a closed-set detector trains on.

:class:`CocoDatasetWriter` builds a complete COCO detection dataset (images with sizes,
categories from the vocabulary, one annotation per detection scoring at least a threshold) that
``tools/train.py`` reads as it is (``DATASETS.TRAIN_JSON`` and ``DATASETS.TRAIN_IMAGES`` =
the writer's image root). :class:`YoloLabelWriter` writes the same annotations as YOLO text
labels, one ``<image stem>.txt`` per image. :class:`EmbeddingWriter` collects the region
embeddings of the detections into one ``.npy`` file, keyed by each detection's
``embedding_index``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ovdet.structures.masks import mask_to_polygon, mask_to_rle
from ovdet.utils.io import atomic_open, atomic_write_json

__all__ = ["CocoDatasetWriter", "EmbeddingWriter", "YoloLabelWriter", "common_root"]


def common_root(files: Sequence[Path]) -> Path:
    """The deepest folder holding every file (the image root of a COCO dataset of them)."""
    parents = [str(Path(f).resolve().parent) for f in files]
    return Path(os.path.commonpath(parents)) if parents else Path(".")


def _kept(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, thresh: float, masks=None):
    """(boxes, scores, labels, masks) of the detections scoring at least ``thresh``; masks
    ``None`` each when there are none."""
    keep = np.asarray(scores) >= thresh
    kept_masks = [None] * int(keep.sum()) if masks is None else list(np.asarray(masks)[keep])
    return np.asarray(boxes)[keep], np.asarray(scores)[keep], np.asarray(labels)[keep], kept_masks


class CocoDatasetWriter:
    """Collects detections per image; :meth:`write` saves a COCO dataset (an instance
    segmentation dataset when the detections carry masks: RLE ``segmentation``, mask area).

    Args:
        class_names: the vocabulary; category ``i + 1`` is ``class_names[i]``.
        image_root: the folder ``file_name`` entries are relative to.
        score_thresh: detections scoring at least this become annotations.
    """

    def __init__(self, class_names: Sequence[str], image_root: Path, score_thresh: float) -> None:
        self.class_names = list(class_names)
        self.image_root = Path(image_root).resolve()
        self.score_thresh = float(score_thresh)
        self.images: list[dict] = []
        self.annotations: list[dict] = []

    def add(
        self,
        path: Path,
        width: int,
        height: int,
        boxes: np.ndarray,
        scores: np.ndarray,
        labels: np.ndarray,
        masks: np.ndarray | None = None,
    ) -> int:
        """Add one image and its detections (boxes float [K, 4] x1, y1, x2, y2 in pixels,
        scores [K], labels [K] indexing ``class_names``, optional masks bool [K, H, W]);
        returns the image id."""
        image_id = len(self.images) + 1
        file_name = os.path.relpath(Path(path).resolve(), self.image_root)
        self.images.append(
            {"id": image_id, "file_name": file_name, "width": int(width), "height": int(height)}
        )
        kept = _kept(boxes, scores, labels, self.score_thresh, masks)
        for (x1, y1, x2, y2), score, label, mask in zip(*kept):
            w, h = float(x2 - x1), float(y2 - y1)
            annotation = {
                "id": len(self.annotations) + 1,
                "image_id": image_id,
                "category_id": int(label) + 1,
                "bbox": [round(float(x1), 2), round(float(y1), 2), round(w, 2), round(h, 2)],
                "area": round(w * h, 2),
                "iscrowd": 0,
                "score": round(float(score), 5),
            }
            if mask is not None:
                annotation["segmentation"] = mask_to_rle(mask)
                annotation["area"] = float(mask.sum())
            self.annotations.append(annotation)
        return image_id

    def to_dict(self) -> dict:
        """The dataset: ``images``, ``annotations``, ``categories`` (and ``info``)."""
        return {
            "info": {
                "description": "auto-annotated by ovdet (tools/infer.py --coco-out)",
                "image_root": str(self.image_root),
                "score_thresh": self.score_thresh,
            },
            "images": self.images,
            "annotations": self.annotations,
            "categories": [{"id": i + 1, "name": n} for i, n in enumerate(self.class_names)],
        }

    def write(self, path: str | Path) -> None:
        """Save atomically."""
        atomic_write_json(self.to_dict(), path)


class YoloLabelWriter:
    """YOLO labels: per image ``<stem>.txt`` with one ``class cx cy w h`` line per detection
    scoring at least the threshold (centre and size normalised to [0, 1]), or, for
    detections with masks, YOLO's segmentation line ``class x1 y1 x2 y2 ...`` (the outline of
    the mask's largest part, normalised; the box's corners for an empty mask), and
    ``classes.txt`` (one class name per line, line ``i`` is class ``i``).

    Args:
        out_dir: the labels folder.
        class_names: the vocabulary.
        score_thresh: detections scoring at least this become labels.
    """

    def __init__(self, out_dir: Path, class_names: Sequence[str], score_thresh: float) -> None:
        self.out_dir = Path(out_dir)
        self.class_names = list(class_names)
        self.score_thresh = float(score_thresh)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with atomic_open(self.out_dir / "classes.txt", "w", encoding="utf-8") as f:
            f.write("".join(f"{n}\n" for n in self.class_names))

    def add(
        self,
        path: Path,
        width: int,
        height: int,
        boxes: np.ndarray,
        scores: np.ndarray,
        labels: np.ndarray,
        masks: np.ndarray | None = None,
    ) -> Path:
        """Write one image's label file (empty without detections); returns its path."""
        lines = []
        kept = _kept(boxes, scores, labels, self.score_thresh, masks)
        for (x1, y1, x2, y2), _, label, mask in zip(*kept):
            if mask is not None:
                polygon = mask_to_polygon(mask)
                if len(polygon) < 3:
                    polygon = np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], np.float32)
                points = (polygon / np.array([width, height], np.float32)).clip(0, 1).ravel()
                lines.append(f"{int(label)} " + " ".join(f"{v:.6f}" for v in points) + "\n")
                continue
            cx, cy = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height
            w, h = (x2 - x1) / width, (y2 - y1) / height
            lines.append(f"{int(label)} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n")
        target = self.out_dir / f"{Path(path).stem}.txt"
        with atomic_open(target, "w", encoding="utf-8") as f:
            f.write("".join(lines))
        return target


class EmbeddingWriter:
    """Region embeddings of a run in one float32 ``.npy`` file [N, D]: row ``i`` belongs to the
    detection whose ``embedding_index`` is ``i``."""

    def __init__(self) -> None:
        self._rows: list[np.ndarray] = []
        self._count = 0

    def add(self, embeddings: np.ndarray) -> list[int]:
        """Append Tensor[K, D] (numpy); returns the K row indices."""
        embeddings = np.asarray(embeddings, dtype=np.float32)
        start = self._count
        self._rows.append(embeddings)
        self._count += len(embeddings)
        return list(range(start, self._count))

    def write(self, path: str | Path, embed_dim: int) -> None:
        """Save atomically (an empty [0, embed_dim] array without detections)."""
        rows = [r for r in self._rows if len(r)]
        array = np.concatenate(rows) if rows else np.zeros((0, embed_dim), np.float32)
        with atomic_open(path, "wb") as f:
            np.save(f, array)

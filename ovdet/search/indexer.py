"""Filling a :class:`~ovdet.search.store.RegionIndex` from folders of images and videos."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from ovdet.search.store import RegionIndex, file_key
from ovdet.utils.errors import ImageError

__all__ = ["Indexer"]

logger = logging.getLogger(__name__)


class Indexer:
    """Embeds the regions and whole images (or sampled frames) of files into an index.

    Regions are the detections of ``region_classes`` (default a single generic ``"object"``)
    scoring above ``min_score``, with the detector's region embeddings; whole images are
    embedded by CLIP's image tower (the detector's CLIP, as ViLD's teacher crops them), or by
    the detector itself where it has ``embed_images`` (an :class:`~ovdet.owl.OwlDetector`: OWL's
    CLIP image embedding). Both live in CLIP's space, so one text query ranks them together.

    Args:
        detector: an :class:`~ovdet.api.OVDetector` or an :class:`~ovdet.owl.OwlDetector`.
        region_classes: the vocabulary that selects regions.
        min_score: regions must score strictly above it.
        whole_images: also index whole images / frames.
        fps: frames per second sampled from videos.
    """

    def __init__(
        self,
        detector,
        region_classes: str | Sequence[str] = "object",
        min_score: float = 0.0,
        whole_images: bool = True,
        fps: float = 1.0,
    ) -> None:
        from ovdet.tv.engine.build import build_clip_teacher

        self.detector = detector
        self.region_classes = region_classes
        self.min_score = float(min_score)
        self.fps = fps
        self.teacher = None
        self.whole_images = whole_images
        if whole_images and not hasattr(detector, "embed_images"):
            self.teacher = build_clip_teacher(detector.cfg, detector.clip).to(detector.device)

    @property
    def meta(self) -> dict:
        """What the vectors depend on; an index is only extended by a matching indexer. The CLIP
        spec is stored with absolute paths (:meth:`~ovdet.clip.spec.ClipSpec.absolute`), so that
        the index is queried with the same CLIP from any folder."""
        from ovdet.clip.spec import ClipSpec

        return {
            "clip": str(ClipSpec.parse(str(self.detector.cfg.MODEL.OVDET.CLIP)).absolute()),
            "embed_dim": int(self.detector.head.embed_dim),
            "region_classes": str(self.region_classes),
            "min_score": self.min_score,
            "whole_images": self.whole_images,
            "fps": self.fps,
        }

    @torch.no_grad()
    def _image_embedding(self, image: np.ndarray) -> np.ndarray:
        """CLIP embedding of a whole RGB uint8 image [H, W, 3] -> float [1, D]."""
        if self.teacher is None:  # a detector that embeds whole images itself (OWL)
            return self.detector.embed_images([image])
        h, w = image.shape[:2]
        tensor = torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1)[None].float() / 255
        box = torch.tensor([[0.0, 0.0, float(w), float(h)]])
        device = self.detector.device
        return self.teacher(tensor.to(device), [box.to(device)]).float().cpu().numpy()

    def embed_image(
        self, image: np.ndarray, file: str, timestamp: float | None = None
    ) -> tuple[np.ndarray, list[dict]]:
        """Embeddings float [K, D] and entries of one image's regions (and the image)."""
        [det] = self.detector.predict(
            [image], classes=self.region_classes, score_thresh=self.min_score,
            return_embeddings=True,
        )  # fmt: skip
        vectors = [det.embeddings.reshape(-1, self.detector.head.embed_dim)]
        entries = [
            {"file": file, "kind": "region", "box": [round(float(v), 2) for v in box],
             "score": round(float(score), 4), "timestamp": timestamp}
            for box, score in zip(det.boxes.tolist(), det.scores.tolist())
        ]  # fmt: skip
        if self.whole_images:
            h, w = image.shape[:2]
            vectors.append(self._image_embedding(image))
            entries.append(
                {"file": file, "kind": "image", "box": [0.0, 0.0, float(w), float(h)],
                 "score": 1.0, "timestamp": timestamp}
            )  # fmt: skip
        return np.concatenate(vectors), entries

    def _file_vectors(self, path: Path) -> Iterable[tuple[np.ndarray, list[dict]]]:
        from ovdet.video.io import VideoReader, is_video

        if is_video(path):
            reader = VideoReader(path, self.fps or None)
            for frame in reader:
                yield self.embed_image(frame.image, file_key(path), round(frame.timestamp, 4))
            if reader.corrupt_frames:
                logger.warning("%s: %d corrupt frame(s) skipped", path, reader.corrupt_frames)
        else:
            from ovdet.data.image_io import read_image

            yield self.embed_image(
                read_image(path, self.detector.cfg.INPUT.MAX_LOAD_PIXELS), file_key(path)
            )

    def index_files(
        self,
        index: RegionIndex,
        files: Sequence[Path],
        save: Callable[[], None],
        save_every: int = 20,
        progress: bool = True,
        prune: bool = False,
    ) -> dict:
        """Bring ``index`` up to date with ``files``: embed the new ones, replace the entries of
        the changed ones (another content; a file only touched is unchanged), skip the rest, and
        with ``prune`` drop the entries of indexed files that no longer exist. ``save`` is called
        every ``save_every`` files and at the end, so that an interrupted run resumes where it
        stopped; a file's old entries go only together with its new ones being added.

        Returns:
            Counts: ``indexed`` files (new or changed), ``replaced`` (changed, among
            ``indexed``), ``skipped`` (unchanged), ``failed`` (unreadable, listed in
            ``failed_files``; a changed file that became unreadable loses its entries),
            ``pruned`` (deleted files dropped), ``missing`` (deleted files kept: no ``prune``),
            ``vectors`` added.
        """
        from tqdm import tqdm

        from ovdet.clip.spec import file_digest

        stats = {"indexed": 0, "replaced": 0, "skipped": 0, "failed": 0, "pruned": 0,
                 "missing": 0, "vectors": 0, "failed_files": []}  # fmt: skip
        missing = index.missing_files()
        if prune:
            for key in missing:
                index.remove_file(key)
            stats["pruned"] = len(missing)
        elif missing:
            stats["missing"] = len(missing)
            logger.info("%d indexed file(s) no longer exist; --prune drops them", len(missing))
        todo = []
        for path in dict.fromkeys(Path(file_key(f)) for f in files):
            status = index.file_status(path)
            if status == "unchanged":
                stats["skipped"] += 1
            else:
                todo.append((path, status == "changed"))
        if stats["skipped"]:
            logger.info("%d file(s) unchanged, %d new or changed", stats["skipped"], len(todo))
        since_save = 0
        for path, changed in tqdm(todo, desc="index", unit="file", disable=not progress):
            try:
                digest = file_digest(path)
                parts = list(self._file_vectors(path))
            except (ImageError, OSError) as e:
                logger.warning("skipping %s", e)
                stats["failed"] += 1
                stats["failed_files"].append(str(path))
                index.remove_file(path)  # a changed file's entries describe what is gone
                continue
            if changed:
                index.remove_file(path)
                stats["replaced"] += 1
            for vectors, entries in parts:
                index.add(vectors, entries)
                stats["vectors"] += len(entries)
            index.mark_indexed(path, digest)
            stats["indexed"] += 1
            since_save += 1
            if since_save >= save_every:
                save()
                since_save = 0
        save()
        return stats

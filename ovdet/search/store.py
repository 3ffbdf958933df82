"""The vector index of a search collection: faiss inner product + one metadata entry per row."""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ovdet.utils.errors import DataError
from ovdet.utils.io import atomic_open

__all__ = ["Hit", "RegionIndex"]

FORMAT_VERSION = 1


def _faiss():
    try:
        import faiss
    except ImportError as e:  # pragma: no cover - faiss-cpu is a dependency
        raise DataError(f"text search needs faiss (pip install faiss-cpu): {e}") from None
    return faiss


@dataclass
class Hit:
    """One search result.

    Attributes:
        score: cosine similarity with the query.
        file: the image or video file.
        kind: ``"region"`` (a detector region) or ``"image"`` (a whole image or frame).
        box: (x1, y1, x2, y2) in the image's pixels (the whole image for ``"image"``).
        timestamp: seconds into the video, or None for images.
    """

    score: float
    file: str
    kind: str
    box: tuple[float, float, float, float]
    timestamp: float | None = None


class RegionIndex:
    """L2-normalised embeddings [N, D] in a ``faiss.IndexFlatIP`` (exact cosine search) with
    one entry per row, and the files already indexed (path -> size and mtime).

    Saved to one file (:meth:`save`, atomic: a crash leaves the previous version), so that the
    vectors and their entries can never disagree.

    Args:
        embed_dim: ``D``.
        meta: what built it (checkpoint, CLIP spec, ...), checked by the indexer on reuse.
    """

    def __init__(self, embed_dim: int, meta: dict | None = None) -> None:
        self.embed_dim = int(embed_dim)
        self.meta = dict(meta or {})
        self.index = _faiss().IndexFlatIP(self.embed_dim)
        self.entries: list[dict] = []
        self.files: dict[str, dict] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, embeddings: np.ndarray, entries: Sequence[dict]) -> None:
        """Add vectors float [K, D] (normalised here) with their K entries."""
        embeddings = np.ascontiguousarray(np.asarray(embeddings, dtype=np.float32))
        if embeddings.ndim != 2 or embeddings.shape[1] != self.embed_dim:
            raise ValueError(f"embeddings must be [K, {self.embed_dim}], got {embeddings.shape}")
        if len(entries) != len(embeddings):
            raise ValueError(f"{len(embeddings)} embeddings but {len(entries)} entries")
        if len(embeddings):
            norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
            self.index.add(embeddings / np.maximum(norms, 1e-12))
            self.entries.extend(dict(e) for e in entries)

    def mark_indexed(self, path: str | Path) -> None:
        """Record a file as done (its size and modification time)."""
        st = Path(path).stat()
        self.files[str(path)] = {"size": st.st_size, "mtime": st.st_mtime}

    def is_indexed(self, path: str | Path) -> bool:
        """Whether ``path`` is indexed and unchanged since."""
        info = self.files.get(str(path))
        if info is None:
            return False
        st = Path(path).stat()
        return info["size"] == st.st_size and info["mtime"] == st.st_mtime

    def search(self, query: np.ndarray, k: int = 10, kind: str | None = None) -> list[Hit]:
        """The ``k`` entries most similar to ``query`` (float [D]), best first.

        Args:
            kind: only ``"region"`` or only ``"image"`` entries; None for both.
        """
        if not len(self):
            return []
        query = np.asarray(query, dtype=np.float32).reshape(1, -1)
        query = query / max(float(np.linalg.norm(query)), 1e-12)
        n = len(self) if kind else min(k, len(self))
        scores, rows = self.index.search(query, n)
        hits = []
        for score, row in zip(scores[0].tolist(), rows[0].tolist()):
            if row < 0:
                continue
            entry = self.entries[row]
            if kind and entry["kind"] != kind:
                continue
            hits.append(
                Hit(float(score), entry["file"], entry["kind"], tuple(entry["box"]),
                    entry.get("timestamp"))
            )  # fmt: skip
            if len(hits) == k:
                break
        return hits

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | Path) -> None:
        """Write the index, entries and file list to one file, atomically."""
        header = {
            "version": FORMAT_VERSION,
            "embed_dim": self.embed_dim,
            "meta": self.meta,
            "entries": self.entries,
            "files": self.files,
        }
        vectors = _faiss().serialize_index(self.index)
        buffer = io.BytesIO()
        np.savez(buffer, faiss=vectors, header=np.frombuffer(json.dumps(header).encode(), np.uint8))
        with atomic_open(path, "wb") as f:
            f.write(buffer.getvalue())

    @classmethod
    def load(cls, path: str | Path) -> RegionIndex:
        """Read an index written by :meth:`save`.

        Raises:
            DataError: missing, truncated or not an index file.
        """
        path = Path(path)
        if not path.is_file():
            raise DataError(f"index {path} does not exist; build it with 'ovdet-search index'")
        try:
            with np.load(path, allow_pickle=False) as data:
                header = json.loads(data["header"].tobytes().decode())
                vectors = data["faiss"]
            index = cls(header["embed_dim"], header["meta"])
            index.index = _faiss().deserialize_index(vectors)
            index.entries, index.files = header["entries"], header["files"]
        except (OSError, ValueError, KeyError, RuntimeError, zipfile.BadZipFile) as e:
            raise DataError(f"{path} is not a readable search index (truncated?): {e}") from None
        if header.get("version") != FORMAT_VERSION or index.index.ntotal != len(index.entries):
            raise DataError(f"{path} is not a search index of this version of ovdet")
        return index

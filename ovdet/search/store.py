"""The vector index of a search collection: faiss inner product + one metadata entry per row."""

from __future__ import annotations

import io
import json
import math
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ovdet.utils.errors import DataError
from ovdet.utils.io import atomic_open

__all__ = ["Hit", "RegionIndex", "file_key"]

FORMAT_VERSION = 1
KINDS = ("region", "image")


def _faiss():
    try:
        import faiss
    except ImportError as e:  # pragma: no cover - faiss-cpu is a dependency
        raise DataError(f"text search needs faiss (pip install faiss-cpu): {e}") from None
    return faiss


def file_key(path: str | Path) -> str:
    """How an index names a file: its absolute path (so that hits open from any folder)."""
    return os.path.abspath(os.path.expanduser(str(path)))


def _number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _header_problem(header: object) -> str | None:
    """What makes a decoded header unusable (first problem found), or None."""
    if not isinstance(header, dict):
        return f"its header is a {type(header).__name__}, not a mapping"
    dim = header.get("embed_dim")
    if not (isinstance(dim, int) and not isinstance(dim, bool) and dim > 0):
        return f"its header has no positive integer 'embed_dim' (got {dim!r:.40})"
    if not isinstance(header.get("meta"), dict):
        return "its header has no 'meta' mapping"
    entries, files = header.get("entries"), header.get("files")
    if not isinstance(entries, list):
        return "its header has no 'entries' list"
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or not isinstance(e.get("file"), str):
            return f"entry {i} has no 'file'"
        if e.get("kind") not in KINDS:
            return f"entry {i} has no 'kind' of {' or '.join(KINDS)} (got {e.get('kind')!r:.40})"
        box = e.get("box")
        if not (isinstance(box, list) and len(box) == 4 and all(map(_number, box))):
            return f"entry {i} has no 'box' of 4 finite numbers"
        if e.get("timestamp") is not None and not _number(e["timestamp"]):
            return f"entry {i} has a 'timestamp' that is not a number"
    if not isinstance(files, dict) or not all(
        isinstance(v, dict) and _number(v.get("size")) and _number(v.get("mtime"))
        for v in files.values()
    ):
        return "its header has no 'files' mapping of file -> size and mtime"
    return None


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
    one entry per row, and the files already indexed (absolute path -> size, mtime and SHA-256
    of the content), so that a re-index skips unchanged files and replaces changed ones.

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

    def mark_indexed(self, path: str | Path, digest: str | None = None) -> None:
        """Record a file as done: its size, modification time and content digest (SHA-256)."""
        from ovdet.clip.spec import file_digest

        st = Path(path).stat()
        self.files[file_key(path)] = {
            "size": st.st_size,
            "mtime": st.st_mtime,
            "sha256": digest or file_digest(path),
        }

    def file_status(self, path: str | Path) -> str:
        """``"new"`` (not indexed), ``"unchanged"`` or ``"changed"`` (its entries are stale).

        Same size and modification time mean unchanged; otherwise the content digest decides
        (a file only touched is unchanged, and its recorded time is brought up to date).
        """
        from ovdet.clip.spec import file_digest

        info = self.files.get(file_key(path))
        if info is None:
            return "new"
        st = Path(path).stat()
        if info["size"] == st.st_size and info["mtime"] == st.st_mtime:
            return "unchanged"
        if info["size"] == st.st_size and info.get("sha256") == file_digest(path):
            info["mtime"] = st.st_mtime
            return "unchanged"
        return "changed"

    def is_indexed(self, path: str | Path) -> bool:
        """Whether ``path`` is indexed and unchanged since."""
        return self.file_status(path) == "unchanged"

    def remove_file(self, path: str | Path) -> int:
        """Drop a file's entries, vectors and record; returns how many entries went."""
        key = file_key(path)
        rows = [i for i, e in enumerate(self.entries) if e["file"] == key]
        if rows:
            self.index.remove_ids(np.asarray(rows, dtype=np.int64))  # keeps the others' order
            self.entries = [e for e in self.entries if e["file"] != key]
        self.files.pop(key, None)
        return len(rows)

    def missing_files(self) -> list[str]:
        """Indexed files that no longer exist."""
        return sorted(f for f in self.files if not os.path.exists(f))

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
            DataError: missing, empty, truncated or not an index file, or one whose entries or
                vectors are damaged (one line: ``X is not a readable search index ...``).
        """
        path = Path(path)
        if not path.is_file():
            raise DataError(f"index {path} does not exist; build it with 'ovdet-search index'")
        unreadable = f"{path} is not a readable search index"
        try:
            data = np.load(path, allow_pickle=False)
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise ValueError("an .npy array, not an .npz archive")
            with data:
                header = json.loads(data["header"].tobytes().decode())
                vectors = data["faiss"]
        except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile) as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise DataError(f"{unreadable} (truncated?): {reason}") from None
        if isinstance(header, dict) and header.get("version") != FORMAT_VERSION:
            raise DataError(f"{path} is not a search index of this version of ovdet")
        problem = _header_problem(header)
        if problem is None and vectors.dtype != np.uint8:
            problem = f"its vectors are {vectors.dtype}, not a faiss blob"
        if problem is not None:
            raise DataError(f"{unreadable}: {problem}")
        try:
            faiss_index = _faiss().deserialize_index(vectors)
        except (RuntimeError, TypeError, ValueError) as e:
            raise DataError(f"{unreadable}: {str(e).splitlines()[0]}") from None
        if faiss_index.d != header["embed_dim"]:
            raise DataError(
                f"{unreadable}: its vectors have {faiss_index.d} dimensions, its header "
                f"{header['embed_dim']}"
            )
        if faiss_index.ntotal != len(header["entries"]):
            raise DataError(
                f"{unreadable}: {faiss_index.ntotal} vectors but {len(header['entries'])} entries"
            )
        index = cls(header["embed_dim"], header["meta"])
        index.index = faiss_index
        index.entries, index.files = header["entries"], header["files"]
        return index

"""The text-search tab, without the page: a query's hits in an index of ``tools/search.py``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ovdet.demo.model_cache import DemoModel
from ovdet.utils.errors import ConfigError, OvdetError

if TYPE_CHECKING:
    from PIL import Image

    from ovdet.search import RegionIndex

__all__ = ["SEARCH_HEADERS", "load_search_index", "search_index"]

SEARCH_HEADERS = ["rank", "score", "file", "kind", "box (x1, y1, x2, y2)", "time (s)"]


def search_index(
    model: DemoModel, index: RegionIndex, text: str, top_k: int = 10, kind: str = "all"
) -> tuple[Image.Image | None, list[list[Any]], str]:
    """One query of the search tab (as ``tools/search.py query``), without the page.

    Args:
        model: the served checkpoint; its text classifier embeds the query.
        index: a :class:`~ovdet.search.RegionIndex` of the same embedding size.
        text: the query, e.g. "a red square".
        top_k: number of hits.
        kind: "region", "image" or "all".

    Returns:
        (contact sheet or None, table rows (:data:`SEARCH_HEADERS`), status line); bad input is
        an ``error: ...`` status.
    """
    from ovdet.search import contact_sheet

    text = (text or "").strip()
    if not text:
        return None, [], "error: the query is empty; type what to search for"
    if kind not in ("region", "image", "all"):
        return None, [], f"error: kind {kind!r} is not region, image or all"
    try:
        query = model.embed_query(text)
    except (OvdetError, OSError) as e:
        return None, [], f"error: {e}"
    hits = index.search(query, int(top_k), None if kind == "all" else kind)
    rows = [
        [rank, round(h.score, 4), Path(h.file).name, h.kind,
         ", ".join(f"{v:.0f}" for v in h.box), h.timestamp]
        for rank, h in enumerate(hits, 1)
    ]  # fmt: skip
    return contact_sheet(hits, title=text), rows, f"{len(hits)} hit(s) for {text!r}"


def load_search_index(path: str | Path, model: DemoModel) -> RegionIndex:
    """The index of ``--search-index``, checked to embed as ``model`` does.

    Raises:
        ConfigError: a missing index, or one of another embedding size.
    """
    from ovdet.search import RegionIndex

    if not Path(path).is_file():
        raise ConfigError(
            f"--search-index {path} does not exist; make it with tools/search.py index"
        )
    index = RegionIndex.load(path)
    if index.embed_dim != model.detector.head.embed_dim:
        raise ConfigError(
            f"the detector embeds into {model.detector.head.embed_dim} dimensions, the index "
            f"{index.embed_dim}"
        )
    return index

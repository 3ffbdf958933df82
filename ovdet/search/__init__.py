"""Text search over the regions and whole images (or video frames) of a collection (CLIFS-style).

* :class:`RegionIndex` (:mod:`ovdet.search.store`): a faiss inner-product index of L2-normalised
  embeddings with one entry per vector (file, box, timestamp, kind), saved atomically in one file;
* :class:`Indexer` (:mod:`ovdet.search.indexer`): embeds the regions (detector region embeddings)
  and whole images or frames (CLIP image tower) of folders and videos, incrementally (new files
  embedded, changed ones replaced, unchanged ones skipped, deleted ones pruned on request) and
  resumably (saved every few files);
* :func:`contact_sheet` (:mod:`ovdet.search.contact_sheet`): the hits of a query in one picture;
* :func:`precision_at_k` (:mod:`ovdet.search.evaluation`): retrieval precision against COCO
  ground truth.
"""

from ovdet.search.contact_sheet import contact_sheet
from ovdet.search.evaluation import precision_at_k
from ovdet.search.indexer import Indexer
from ovdet.search.store import Hit, RegionIndex

__all__ = ["Hit", "Indexer", "RegionIndex", "contact_sheet", "precision_at_k"]

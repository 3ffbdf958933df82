"""Image exemplars as OWL queries: a class given by example boxes of images.

OWL-ViT's image-guided (one-shot) detection makes a query of a region of an image; ovdet makes
one of each exemplar's box (:meth:`~ovdet.owl.OwlDetector.box_query_embeddings`), OWL's own
region embedding of the box. That is the ``region`` exemplar source of ovdet's detectors
(``MODEL.OVDET.EXEMPLARS.SOURCE``) and the only one an OWL detector has: it has no CLIP image
tower of crops beside its detector.

The rows are used as transformers' ``image_guided_detection`` uses its query: not calibrated
(ovdet's own detectors calibrate region rows, :class:`~ovdet.core.exemplar_rows.RegionCalibration`),
since OWL's class head scores every query through its own learned per-region logit shift and
scale. They are L2-normalised: OWL's class head divides every query by its norm before the
cosine, so the norm changes no score. The rule that averages a class's exemplars and mixes them
with its text is the core's (:func:`~ovdet.core.exemplars.class_embeddings`); the box queries are
cached by the core's :class:`~ovdet.core.exemplars.ExemplarEmbedder`.
"""

from __future__ import annotations

import json
from typing import Callable

import numpy as np
import torch

from ovdet.clip.text_classifier import default_cache_dir
from ovdet.core.exemplars import ExemplarEmbedder
from ovdet.utils.errors import ConfigError

__all__ = [
    "OWL_EXEMPLAR_SOURCE",
    "check_owl_exemplar_source",
    "owl_exemplar_embedder",
    "owl_weights_key",
]

#: The exemplar source of an OWL detector: its own region embedding of the box (its box query).
OWL_EXEMPLAR_SOURCE = "region"


def check_owl_exemplar_source(source: str, spec: str = "") -> str:
    """``source`` if an OWL detector can embed exemplars by it (``region``), else a ConfigError.

    Args:
        source: ``MODEL.OVDET.EXEMPLARS.SOURCE`` (``--exemplar-source``).
        spec: the ``hf:`` spec, for the message.
    """
    if source != OWL_EXEMPLAR_SOURCE:
        who = f"--detector {spec}" if spec else "an OWL detector"
        raise ConfigError(
            f"exemplar source {source!r} needs CLIP's image tower on the crop; {who} embeds "
            f"exemplars by its own box queries only (exemplar source {OWL_EXEMPLAR_SOURCE!r}, "
            "its default)"
        )
    return source


def owl_exemplar_embedder(
    box_queries: Callable[[np.ndarray, torch.Tensor], torch.Tensor],
    weights_key: Callable[[], str],
    cfg,
) -> ExemplarEmbedder:
    """The core's exemplar embedder (on-disk cache, every exemplar checked first) over OWL's box
    queries.

    Args:
        box_queries: (RGB uint8 [H, W, 3], Tensor[N, 4] x1, y1, x2, y2 in its pixels) ->
            Tensor[N, D], L2-normalised (:meth:`~ovdet.owl.OwlDetector.box_query_embeddings`).
        weights_key: what identifies the model and its image processing (the cache key).
        cfg: the detector's config: ``MODEL.OVDET.EXEMPLARS.SOURCE`` (checked),
            ``MODEL.OVDET.TEXT_CACHE_DIR``, ``INPUT.MAX_LOAD_PIXELS``.

    Raises:
        ConfigError: an exemplar source other than ``region``.
    """
    ov = cfg.MODEL.OVDET
    source = check_owl_exemplar_source(ov.EXEMPLARS.SOURCE, str(ov.CLIP or ""))
    return ExemplarEmbedder(
        source,
        None,
        box_queries,
        clip_key=lambda: "",
        region_key=weights_key,
        cache_dir=ov.TEXT_CACHE_DIR or default_cache_dir(),
        max_load_pixels=int(cfg.INPUT.MAX_LOAD_PIXELS or 0),
    )


def owl_weights_key(model_id: str, weights_digest: str, image_processor, max_pixels: int) -> str:
    """The cache key of an OWL model's box queries: the model, its weights, the image
    processing that feeds it and the rule that picks a box's region (versioned)."""
    return json.dumps(
        ["owl-box-query-1", model_id, weights_digest, image_processor.to_json_string(), max_pixels]
    )

"""Class embeddings from image exemplars, mixed with text embeddings in one vocabulary.

A class given by exemplars (:mod:`ovdet.structures.exemplars`) is embedded from its example
boxes, by ``MODEL.OVDET.EXEMPLARS.SOURCE``:

* ``clip``: CLIP's image embedding of the crop, framed as the region teacher frames its crops
  (``DISTILL.CROP_SCALES``), as ViLD-image distils; in the detector's rows centred in its
  regions' cone (:class:`RegionCalibration` without rescaling), in CLIP rescoring's rows as it
  is;
* ``region``: the detector's own region embedding of the box (one-shot, as OWL-ViT's
  image-guided detection), calibrated (:class:`RegionCalibration`);
* ``both``: the two, L2-normalised, summed and re-normalised.

The ``K`` exemplars of a class are averaged and L2-normalised; how the rows are calibrated and a
class's name mixed in: :mod:`ovdet.core.exemplar_rows`. With CLIP rescoring on, the name of a
class given by the detector's region embeddings is scored by CLIP alone (its rescoring row mixes
text and CLIP crops); the detector scores its exemplars (``clip_rescoring`` of
:func:`class_embeddings`): the detector's own text scores of a name it was never trained on are
its weakest (ViLD's reason for rescoring), and the region exemplars are in its own space. CLIP
rescoring scores CLIP's crops against CLIP-space rows, so there such classes are given by their
CLIP crop embeddings, unmoved (:func:`rescoring_class_embeddings`).

Every engine goes through :func:`class_embeddings`, so both build the same ``Tensor[C, D]`` for
a vocabulary.

Exemplar embeddings are cached in memory and on disk beside the text classifier's, keyed by the
image's bytes, the box, the source and the weights that embed it. Every exemplar is read and
checked before any is embedded (:mod:`ovdet.core.exemplar_loading`), so a bad one leaves nothing
written.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import pickle
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ovdet.core.exemplar_loading import LoadedExemplar, load_exemplars
from ovdet.core.exemplar_rows import (
    RegionCalibration,
    mix_by_scores,
    mix_class_embeddings,
    reference_boxes,
    unused_direction,
)
from ovdet.structures.exemplars import Exemplar
from ovdet.structures.vocabulary import Vocabulary
from ovdet.utils.errors import ConfigError
from ovdet.utils.io import atomic_torch_save

__all__ = [
    "EXEMPLAR_SOURCES",
    "ExemplarEmbedder",
    "ExemplarRows",
    "RegionCalibration",
    "LoadedExemplar",
    "class_embeddings",
    "exemplar_embedder_from_config",
    "load_exemplars",
    "mix_by_scores",
    "mix_class_embeddings",
    "module_weights_digest",
    "reference_boxes",
    "rescoring_class_embeddings",
]

logger = logging.getLogger(__name__)

EXEMPLAR_SOURCES = ("clip", "region", "both")

#: Embeds boxes of one image: (RGB uint8 pixels [H, W, 3], Tensor[N, 4] x1, y1, x2, y2 in those
#: pixels) -> Tensor[N, D], L2-normalised.
BoxEmbedder = Callable[[np.ndarray, torch.Tensor], torch.Tensor]


def check_exemplar_source(source: str) -> str:
    """``source`` if it is one of :data:`EXEMPLAR_SOURCES`, else a ConfigError."""
    if source not in EXEMPLAR_SOURCES:
        raise ConfigError(f"exemplar source {source!r} is not one of {', '.join(EXEMPLAR_SOURCES)}")
    return source


class ExemplarRows(NamedTuple):
    """Class rows made of exemplars, and what their mixing with text needs.

    Attributes:
        rows: Tensor[G, D], one unit row per class.
        unused: Tensor[D], a unit direction the regions scored against the rows hardly use
            (:func:`mix_by_scores`), or ``None`` where not looked for.
    """

    rows: torch.Tensor
    unused: torch.Tensor | None


def module_weights_digest(module: nn.Module) -> str:
    """A hash of a module's parameters and buffers (the region embeddings' cache key)."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class ExemplarEmbedder:
    """Embeds exemplars by one source, through an on-disk cache.

    Args:
        source: one of :data:`EXEMPLAR_SOURCES`.
        clip_boxes: CLIP crop embeddings of boxes (the region teacher), or ``None`` where not
            available; loaded on first use when given as a zero-argument factory.
        region_boxes: the detector's region embeddings of boxes, or ``None`` for a detector
            without them (closed-set).
        clip_key: what identifies ``clip_boxes``'s weights and crop framing (cache key).
        region_key: a zero-argument function giving what identifies the detector's weights.
        cache_dir: the cache folder (``exemplars/`` is made in it); ``None``: the embeddings
            are kept in memory only (by this embedder and its :meth:`with_source` copies).
        max_load_pixels: images above it are downscaled on load (``INPUT.MAX_LOAD_PIXELS``).
    """

    def __init__(
        self,
        source: str,
        clip_boxes: Callable[[], BoxEmbedder] | None,
        region_boxes: BoxEmbedder | None,
        clip_key: Callable[[], str],
        region_key: Callable[[], str],
        cache_dir: str | Path | None = None,
        max_load_pixels: int = 0,
    ) -> None:
        self.source = check_exemplar_source(source)
        if source in ("region", "both") and region_boxes is None:
            raise ConfigError(
                f"exemplar source {source!r} needs a detector with region embeddings (an "
                "open-vocabulary one); this one is closed-set"
            )
        self._clip_factory = clip_boxes
        self._clip: BoxEmbedder | None = None
        self.region_boxes = region_boxes
        self._keys = {"clip": clip_key, "region": region_key}
        self._key_values: dict[str, str] = {}
        self.cache_dir = Path(cache_dir) / "exemplars" if cache_dir else None
        self._memory: dict[str, torch.Tensor] = {}  # shared by with_source copies
        self.max_load_pixels = max_load_pixels
        self.num_embedded = 0
        self.clip_space = False

    def for_clip_rescoring(self) -> ExemplarEmbedder:
        """The same embedder (weights, cache) making CLIP rescoring's rows: CLIP crop rows as
        they are, not centred in the detector's regions' cone."""
        other = self.with_source("clip")
        other.clip_space = True
        return other

    def with_source(self, source: str) -> ExemplarEmbedder:
        """The same embedder (weights, cache) embedding by another source."""
        other = copy.copy(self)
        other.source = check_exemplar_source(source)
        return other

    def _embedder(self, source: str) -> BoxEmbedder:
        if source == "region":
            return self.region_boxes  # type: ignore[return-value]
        if self._clip is None:
            if self._clip_factory is None:
                raise ConfigError("exemplar source 'clip' needs CLIP's image tower")
            self._clip = self._clip_factory()
        return self._clip

    def _key(self, source: str) -> str:
        if source not in self._key_values:
            self._key_values[source] = self._keys[source]()
        return self._key_values[source]

    def __call__(self, exemplars: Sequence[Exemplar]) -> torch.Tensor:
        """Exemplar embeddings: Tensor[N, D], float32 on CPU, L2-normalised, in order.

        Raises:
            ImageError, VocabularyError: an exemplar is unreadable or its box bad (before
                anything is embedded or cached).
        """
        loaded = load_exemplars(exemplars, self.max_load_pixels)
        sources = ("clip", "region") if self.source == "both" else (self.source,)
        total = sum(self._embed(loaded, s) for s in sources)
        return F.normalize(total, dim=-1)

    def class_rows(self, groups: Sequence[Sequence[Exemplar]], text: torch.Tensor) -> torch.Tensor:
        """One row per class from its exemplars: Tensor[G, D], float32 on CPU, unit rows
        (:meth:`embed_classes`'s ``rows``)."""
        return self.embed_classes(groups, text).rows

    def embed_classes(
        self, groups: Sequence[Sequence[Exemplar]], text: torch.Tensor, with_unused: bool = False
    ) -> ExemplarRows:
        """One row per class from its exemplars, and a direction the scored regions hardly use.

        Args:
            groups: per class, its exemplars (averaged).
            text: Tensor[T, D], the vocabulary's text rows (the region rows' calibration).
            with_unused: find ``unused`` also for the ``clip`` source (it costs CLIP's
                embeddings of :func:`reference_boxes` on each exemplar image, cached); the
                region sources find it anyway (their calibration's).

        Raises:
            ImageError, VocabularyError: an exemplar is unreadable or its box bad (before
                anything is embedded or cached).
        """
        loaded = load_exemplars([e for g in groups for e in g], self.max_load_pixels)
        counts = [len(g) for g in groups]

        def means(source: str) -> torch.Tensor:
            rows = torch.split(self._embed(loaded, source), counts)
            return torch.stack([F.normalize(r.mean(0), dim=-1) for r in rows])

        # the detector's regions sampled on the exemplar images, where its rows are made
        in_detector = not self.clip_space and self.region_boxes is not None
        regions = self._reference(loaded) if in_detector else None
        total, unused = torch.zeros(0), None
        if self.source in ("clip", "both"):
            total = means("clip")
            if regions is not None:  # centred, not rescaled
                total = RegionCalibration.fit(regions, total, total[:0])(total)
        if self.source in ("region", "both"):  # (never in CLIP's space: for_clip_rescoring)
            region = means("region")
            calibration = RegionCalibration.fit(regions, region, text)
            logger.info("region exemplars calibrated: scale %.3f", calibration.scale)
            total = total + calibration(region) if len(total) else calibration(region)
            unused = calibration.null
        elif with_unused:
            reference = self._reference(loaded, "clip")
            unused = unused_direction(reference, F.normalize(reference.mean(0), dim=0))
        return ExemplarRows(F.normalize(total, dim=-1), unused)

    def _recall(self, *key: str) -> tuple[str, torch.Tensor | None]:
        """``(name, embedding)`` of what ``key`` names: from memory, else from the cache folder
        (``None`` where neither has it)."""
        name = hashlib.sha256(json.dumps(list(key)).encode()).hexdigest()[:40]
        if name not in self._memory and self.cache_dir is not None:
            tensor = self._cached(self.cache_dir / f"{name}.pt")
            if tensor is not None:
                self._memory[name] = tensor
        return name, self._memory.get(name)

    def _keep(self, name: str, tensor: torch.Tensor) -> None:
        """Keep an embedding in memory and in the cache folder."""
        self._memory[name] = tensor
        if self.cache_dir is not None:
            path = self.cache_dir / f"{name}.pt"
            try:
                atomic_torch_save({"embedding": tensor}, path)
            except OSError as e:
                logger.warning("Cannot write the exemplar cache %s: %s", path, e)

    def _embed(self, loaded: list[LoadedExemplar], source: str) -> torch.Tensor:
        names, rows = zip(*(self._recall(source, self._key(source), i.digest) for i in loaded))
        rows = list(rows)
        missing = [i for i, row in enumerate(rows) if row is None]
        if missing:
            embed = self._embedder(source)
            with torch.no_grad():
                for i in missing:
                    item = loaded[i]
                    rows[i] = F.normalize(
                        embed(item.image.array, item.box[None]).float().cpu()[0], dim=-1
                    )
                    self.num_embedded += 1
            for i in missing:
                self._keep(names[i], rows[i])  # type: ignore[arg-type]
        return torch.stack(rows)  # type: ignore[arg-type]

    def _reference(self, loaded: list[LoadedExemplar], source: str = "region") -> torch.Tensor:
        """The embeddings by ``source`` (the detector's regions, or CLIP's crops) of
        :func:`reference_boxes` on each exemplar image: Tensor[M, D], cached per image."""
        images = {item.image_digest: item.image for item in loaded}
        out = []
        for digest, image in images.items():
            kind = "reference" if source == "region" else f"reference-{source}"
            name, rows = self._recall(kind, self._key(source), digest)
            if rows is None:
                boxes = reference_boxes(image.width, image.height) * torch.from_numpy(image.scale)
                embed = self._embedder(source)
                with torch.no_grad():
                    rows = F.normalize(embed(image.array, boxes).float().cpu(), dim=-1)
                self._keep(name, rows)
            out.append(rows)
        return torch.cat(out)

    @staticmethod
    def _cached(path: Path) -> torch.Tensor | None:
        if not path.is_file():
            return None
        try:
            return torch.load(path, map_location="cpu", weights_only=True)["embedding"]
        except (OSError, RuntimeError, KeyError, EOFError, pickle.UnpicklingError) as e:
            logger.warning("Ignoring unreadable exemplar cache %s: %s", path, e)
            return None


def class_embeddings(
    vocabulary: Vocabulary,
    text: Callable[[Vocabulary], torch.Tensor],
    exemplars: Callable[[Sequence[Exemplar]], torch.Tensor] | None,
    text_weight: float,
    clip_rescoring: bool = False,
) -> torch.Tensor:
    """The ``Tensor[C, D]`` classifier of a vocabulary of text and exemplar classes.

    Args:
        vocabulary: the classes, in order.
        text: the text classifier (a :class:`~ovdet.clip.TextClassifierBuilder`).
        exemplars: embeds exemplars: an :class:`ExemplarEmbedder` (averaged per class, region
            rows calibrated against the text rows, text mixed in by scores,
            :func:`mix_by_scores`), or any function of exemplars giving Tensor[N, D] (averaged
            per class, text mixed in by ``normalise(w * text + (1 - w) * exemplars)``); needed
            only where a class has exemplars.
        text_weight: ``EXEMPLARS.TEXT_WEIGHT``, for classes given by name and exemplars.
        clip_rescoring: the detector's scores are joined with CLIP rescoring's, whose rows
            (:func:`rescoring_class_embeddings`) hold the names: a class given by its name and
            the detector's region embeddings (source ``region`` or ``both``) is then given here
            by its exemplars alone.

    Returns:
        Tensor[C, D], float32 on CPU, L2-normalised rows.
    """
    if not vocabulary.has_exemplars:
        return text(vocabulary)
    if exemplars is None:
        raise ConfigError("this detector cannot embed exemplar classes")
    text_vocabulary, text_index = vocabulary.text_classes()
    exemplar_index = [i for i, ex in enumerate(vocabulary.exemplars) if ex]
    groups = [vocabulary.exemplars[i] for i in exemplar_index]
    text_rows = None if text_vocabulary is None else text(text_vocabulary)
    unused = None
    if isinstance(exemplars, ExemplarEmbedder):  # averaged, calibrated (every one checked first)
        mixed = bool(set(text_index) & set(exemplar_index))
        calibration_text = text_rows if text_rows is not None else torch.zeros(0)
        rows, unused = exemplars.embed_classes(groups, calibration_text, with_unused=mixed)
        per_class = [row[None] for row in rows]
        if clip_rescoring and exemplars.source != "clip" and text_rows is not None:
            keep = [j for j, i in enumerate(text_index) if i not in set(exemplar_index)]
            text_rows, text_index = text_rows[keep], [text_index[j] for j in keep]
    else:
        embedded = exemplars([e for g in groups for e in g])
        per_class = list(torch.split(embedded, [len(g) for g in groups]))
    if text_rows is None:
        text_rows = torch.zeros(0, per_class[0].shape[1])
    return mix_class_embeddings(
        len(vocabulary), text_rows, text_index, per_class, exemplar_index, text_weight, unused
    )


def rescoring_class_embeddings(
    vocabulary: Vocabulary,
    text: Callable[[Vocabulary], torch.Tensor],
    exemplars: ExemplarEmbedder | None,
    text_weight: float,
) -> torch.Tensor | None:
    """The rows CLIP rescoring scores CLIP's crop embeddings against, where they differ from
    :func:`class_embeddings`'s: exemplar classes are given there by their CLIP crop embeddings
    as they are (source ``clip``; not the detector's region embeddings of sources ``region`` and
    ``both``, nor the crop rows centred in its regions' cone that the detector scores), the
    space of CLIP's image tower, mixed by scores with their names' text where given by both.
    ``None`` for a vocabulary of text classes only.

    Returns:
        Tensor[C, D], float32 on CPU, unit rows, or ``None``.
    """
    if exemplars is None or not vocabulary.has_exemplars:
        return None
    return class_embeddings(vocabulary, text, exemplars.for_clip_rescoring(), text_weight)


def exemplar_embedder_from_config(
    cfg,
    clip: Callable[[], object],
    region_boxes: BoxEmbedder | None,
    detector: nn.Module | None,
    device: str | torch.device = "cpu",
) -> ExemplarEmbedder:
    """The :class:`ExemplarEmbedder` of ``MODEL.OVDET.EXEMPLARS`` (either engine's config).

    Args:
        cfg: the detector's config (``MODEL.OVDET``, ``INPUT.MAX_LOAD_PIXELS`` if present).
        clip: gives the loaded CLIP (a :class:`~ovdet.clip.ClipBackend`), called on first use.
        region_boxes: the detector's region embeddings of boxes (``None``: closed-set).
        detector: the module whose weights key the cached region embeddings.
        device: where CLIP's image tower runs.
    """
    from ovdet.core.teacher import ClipRegionTeacher

    ov = cfg.MODEL.OVDET
    scales, crop_size = tuple(ov.DISTILL.CROP_SCALES), int(ov.DISTILL.CROP_SIZE)

    def clip_boxes() -> BoxEmbedder:
        teacher = ClipRegionTeacher.from_clip(clip(), scales, crop_size).to(device)

        def embed(array: np.ndarray, boxes: torch.Tensor) -> torch.Tensor:
            image = torch.tensor(array).permute(2, 0, 1).float().div_(255.0)[None]
            return teacher(image.to(device), [boxes.to(device)])

        return embed

    def clip_key() -> str:
        loaded = clip()
        return json.dumps([loaded.model_id, loaded.weights_digest(), scales, crop_size])

    return ExemplarEmbedder(
        ov.EXEMPLARS.SOURCE,
        clip_boxes,
        region_boxes,
        clip_key,
        lambda: module_weights_digest(detector) if detector is not None else "",
        cache_dir=ov.TEXT_CACHE_DIR or _default_cache_dir(),
        max_load_pixels=int(getattr(getattr(cfg, "INPUT", None), "MAX_LOAD_PIXELS", 0) or 0),
    )


def _default_cache_dir() -> Path:
    from ovdet.clip.text_classifier import default_cache_dir

    return default_cache_dir()

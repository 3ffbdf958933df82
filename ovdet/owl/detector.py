"""OWL-ViT / OWLv2 with the interface of :class:`ovdet.api.OVDetector`."""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import box_convert, box_iou, generalized_box_iou

from ovdet.clip.hf import pooled_features
from ovdet.clip.text_classifier import TextClassifierBuilder, Vocabulary
from ovdet.config import get_cfg, merge_overrides
from ovdet.core.exemplars import ExemplarEmbedder, class_embeddings
from ovdet.core.novel_classes import novel_class_mask
from ovdet.data.image_io import as_loaded_image
from ovdet.owl.exemplars import (
    OWL_EXEMPLAR_SOURCE,
    check_owl_exemplar_source,
    owl_exemplar_embedder,
    owl_weights_key,
)
from ovdet.owl.head import OwlQueryHead
from ovdet.owl.loading import OwlModel, load_owl_model
from ovdet.owl.text import OwlTextTower
from ovdet.structures.detections import Detections, ImageInput, as_image_list
from ovdet.structures.exemplars import ExemplarsInput, exemplar_specs
from ovdet.structures.loaded_image import LoadedImage
from ovdet.utils.errors import ConfigError

__all__ = ["DEFAULT_SCORE_THRESH", "DEFAULT_TEMPLATES", "OwlDetector"]

logger = logging.getLogger(__name__)

#: transformers' default threshold of ``post_process_object_detection``.
DEFAULT_SCORE_THRESH = 0.1
#: CLIP's 80 ImageNet prompts, averaged per class (``a photo of a {}.`` is one of them).
DEFAULT_TEMPLATES = "openai"


def owl_config(
    score_thresh: float = DEFAULT_SCORE_THRESH,
    templates: str = DEFAULT_TEMPLATES,
    spec: str = "",
    overrides: Sequence[str] = (),
):
    """The ovdet config keys an :class:`OwlDetector` reads (the rest are ovdet's defaults):
    ``MODEL.ROI_HEADS.SCORE_THRESH_TEST``, ``MODEL.OVDET.TEMPLATES``,
    ``MODEL.OVDET.TEXT_CACHE_DIR``, ``MODEL.OVDET.EXEMPLARS.SOURCE`` (``region``, the only one
    OWL has: its box queries) and ``TEXT_WEIGHT``, ``TEST.DETECTIONS_PER_IMAGE``,
    ``INPUT.MAX_LOAD_PIXELS``; ``MODEL.OVDET.CLIP`` records the ``hf:`` spec (``spec``), the
    model whose text tower embeds the queries (e.g. in a search index's settings).

    Args:
        overrides: config ``KEY VALUE`` pairs (e.g. ``MODEL.OVDET.EXEMPLARS.TEXT_WEIGHT 0.3``).

    Raises:
        ConfigError: a bad override, or an exemplar source OWL does not have.
    """
    cfg = get_cfg()
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = float(score_thresh)
    cfg.MODEL.OVDET.TEMPLATES = templates
    cfg.MODEL.OVDET.EXEMPLARS.SOURCE = OWL_EXEMPLAR_SOURCE
    if spec:
        cfg.MODEL.OVDET.CLIP = spec
    merge_overrides(cfg, list(overrides))
    check_owl_exemplar_source(
        cfg.MODEL.OVDET.EXEMPLARS.SOURCE, cfg.MODEL.OVDET.CLIP if spec else ""
    )
    cfg.freeze()
    return cfg


class OwlDetector:
    """OWL-ViT or OWLv2 (transformers) as an ovdet detector: ``predict`` returns
    :class:`~ovdet.structures.Detections` in the original image's pixels, for any vocabulary.

    Each of the model's patches is one region: its box, its best class among the vocabulary's
    queries and that class's sigmoid score, as transformers' ``post_process_object_detection``
    computes them (no NMS); boxes are clipped to the image, and detections score strictly above
    the threshold, have a box that is not empty after clipping, best first, at most
    ``TEST.DETECTIONS_PER_IMAGE`` per image. The region embeddings
    are OWL's class embeddings (L2-normalised), in the space of its text queries.

    Text queries come from ovdet's text cache with the templates of ``MODEL.OVDET.TEMPLATES``
    (averaged over templates and synonyms) through the model's own text tower. A class given by
    image exemplars is queried by its boxes' :meth:`box_query_embeddings`, averaged (and mixed
    with its text by ``MODEL.OVDET.EXEMPLARS.TEXT_WEIGHT`` where given by both), as
    :meth:`ovdet.api.OVDetector.set_classes` does with region embeddings
    (:mod:`ovdet.owl.exemplars`).

    Args:
        model: the loaded model (:func:`~ovdet.owl.load_owl_model`).
        cfg: an ovdet config (:func:`owl_config`); its keys named there are used.
        train_class_names: classes counted as base (OWL's are unknown: none by default).
        device: where it runs.
    """

    def __init__(
        self, model: OwlModel, cfg=None, train_class_names: Sequence[str] = (), device="cpu"
    ) -> None:
        self.cfg = cfg if cfg is not None else owl_config()
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.train_class_names = list(train_class_names)
        self.head = OwlQueryHead(model, self.cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST)
        ov = self.cfg.MODEL.OVDET
        self._text = TextClassifierBuilder(
            OwlTextTower(model), ov.TEMPLATES, cache_dir=ov.TEXT_CACHE_DIR or None
        )
        self.class_names: list[str] = []
        self.class_kinds: list[str] = []  # per class: text, exemplar, text+exemplar ([]: unsaid)
        self._exemplars: ExemplarEmbedder | None = None
        self._vocabulary: Vocabulary | None = None  # whose text queries are set

    @classmethod
    def from_spec(
        cls,
        spec: str,
        device: str = "cpu",
        score_thresh: float | None = None,
        templates: str | None = None,
        overrides: Sequence[str] = (),
    ) -> OwlDetector:
        """Load ``hf:HUB_ID`` or ``hf:FOLDER`` (see :func:`~ovdet.owl.load_owl_model`).

        Args:
            score_thresh: default threshold (default: 0.1, transformers' default).
            templates: prompt templates (a set name, a file; default: ``openai``).
            overrides: config ``KEY VALUE`` pairs (:func:`owl_config`), checked before the model
                loads.
        """
        if torch.device(device).type == "cuda" and not torch.cuda.is_available():
            raise ConfigError("--device cuda was asked for but no CUDA device is available")
        score_thresh = DEFAULT_SCORE_THRESH if score_thresh is None else score_thresh
        templates = templates or DEFAULT_TEMPLATES
        owl_config(score_thresh, templates, spec, overrides)  # bad overrides: before loading
        model = load_owl_model(spec, device)
        cfg = owl_config(score_thresh, templates, str(model.spec.absolute()), overrides)
        return cls(model, cfg, device=device)

    @property
    def clip(self) -> OwlTextTower:
        """The text tower that embeds the queries."""
        return self._text.clip

    def enable_clip_rescoring(self, enabled: bool = True) -> None:
        """Refused for OWL (it scores its regions itself); turning it off is a no-op."""
        self.head.enable_clip_rescoring(True if enabled else None)

    def text_embeddings(self, classes: str | Sequence[str] | Vocabulary) -> torch.Tensor:
        """The text queries of a vocabulary (templates, cache): Tensor[C, D], float32,
        L2-normalised, on CPU. The vocabulary in use is not changed."""
        return self._text(Vocabulary.parse(classes))

    @property
    def exemplar_embedder(self) -> ExemplarEmbedder:
        """Embeds image exemplars by their box queries (:meth:`box_query_embeddings`), through
        the core's exemplar cache (source ``region``, see :mod:`ovdet.owl.exemplars`).

        Raises:
            ConfigError: ``MODEL.OVDET.EXEMPLARS.SOURCE`` is not ``region``.
        """
        if self._exemplars is None:
            self._exemplars = owl_exemplar_embedder(
                self.box_query_embeddings, self._exemplar_weights_key, self.cfg
            )
        return self._exemplars

    def _exemplar_weights_key(self) -> str:
        return owl_weights_key(
            f"owl:{self.model.model_type}",
            str(self.model.spec.weights_digest()),
            self.model.processor.image_processor,
            int(self.cfg.INPUT.MAX_LOAD_PIXELS),
        )

    def class_embeddings(
        self,
        classes: str | Sequence[str] | Vocabulary,
        exemplars: ExemplarsInput | None = None,
    ) -> torch.Tensor:
        """The queries of a vocabulary of text and exemplar classes: Tensor[C, D], float32,
        L2-normalised, on CPU (see :meth:`set_classes`). The vocabulary in use is not changed."""
        vocab = Vocabulary.from_classes_and_exemplars(classes, exemplar_specs(exemplars))
        return self._class_embeddings(vocab)

    def _class_embeddings(self, vocab: Vocabulary) -> torch.Tensor:
        # per exemplar, its box query (cached); averaged and mixed by the core's rule, not
        # calibrated as ovdet's region rows are (an ExemplarEmbedder itself would be)
        embed = self.exemplar_embedder.__call__ if vocab.has_exemplars else None
        weight = float(self.cfg.MODEL.OVDET.EXEMPLARS.TEXT_WEIGHT)
        return class_embeddings(vocab, self._text, embed, weight)

    def set_classes(
        self,
        classes: str | Sequence[str] | Vocabulary,
        exemplars: ExemplarsInput | None = None,
    ) -> None:
        """Swap the vocabulary: a comma-separated string, a file, a list or a Vocabulary.

        A class is novel where it matches none of ``train_class_names`` (given: none is).

        Args:
            classes: the classes by name (a vocabulary file may also give exemplar classes).
            exemplars: image exemplars by class name, e.g. ``{"mug": ["mug.jpg:10,20,64,48"]}``
                (see :func:`~ovdet.structures.exemplars.exemplar_specs`): a name among
                ``classes`` mixes its text query with them
                (``MODEL.OVDET.EXEMPLARS.TEXT_WEIGHT``), another name is a class given by
                exemplars alone, after the others. A class's exemplar query is the mean of its
                boxes' :meth:`box_query_embeddings`, L2-normalised.

        Raises:
            VocabularyError, ImageError: a bad class list, exemplar box or image (the vocabulary
                in use is then kept).
        """
        vocab = Vocabulary.from_classes_and_exemplars(classes, exemplar_specs(exemplars))
        if vocab == self._vocabulary and not vocab.has_exemplars:
            return
        novel = novel_class_mask(vocab, self.train_class_names) if self.train_class_names else None
        self.set_queries(self._class_embeddings(vocab), vocab.names, novel, vocab.kinds)
        self._vocabulary = vocab

    def set_queries(
        self,
        queries: torch.Tensor,
        names: Sequence[str],
        is_novel: torch.Tensor | None = None,
        kinds: Sequence[str] = (),
    ) -> None:
        """Use any query embeddings Tensor[C, D] as the vocabulary (text or image queries,
        or a mix), one per name (``is_novel``: BoolTensor[C], default none novel; ``kinds``:
        per class how it was given, :attr:`~ovdet.structures.Detections.class_kinds`, default
        unsaid)."""
        if len(names) != len(queries):
            raise ConfigError(f"{len(queries)} queries but {len(names)} class names")
        if kinds and len(kinds) != len(names):
            raise ConfigError(f"{len(kinds)} class kinds but {len(names)} class names")
        self.head.set_vocabulary(queries, is_novel)
        self.class_names = list(names)
        self.class_kinds = list(kinds)
        self._vocabulary = None  # not the text queries of a vocabulary (set_classes says so)

    @property
    def spec(self) -> str:
        """The ``hf:`` spec of the model, its folder absolute (loads it again from anywhere)."""
        return str(self.model.spec.absolute())

    @torch.no_grad()
    def embed_images(self, images: ImageInput | Sequence[ImageInput]) -> np.ndarray:
        """Whole-image embeddings, float32 [B, D], not normalised, in the space of the text
        queries: the image embedding of OWL's CLIP (``get_image_features``) on the processed
        images. Text search indexes whole images with it."""
        loaded = [as_loaded_image(im, self.cfg.INPUT.MAX_LOAD_PIXELS) for im in as_image_list(
            images)]  # fmt: skip
        output = self.model.base_model.get_image_features(pixel_values=self._pixels(loaded))
        return pooled_features(output).float().cpu().numpy()

    # ------------------------------------------------------------------ image queries

    @torch.no_grad()
    def image_query_embeddings(self, query_images: ImageInput | Sequence[ImageInput]):
        """One query embedding per query image: the region transformers'
        ``image_guided_detection`` picks in it (OWLv2: the most object-like patch; OWL-ViT: the
        one least like the image's mean among the boxes nearest the whole image), Tensor[Q, D],
        L2-normalised, on CPU."""
        loaded = [as_loaded_image(im, self.cfg.INPUT.MAX_LOAD_PIXELS) for im in as_image_list(
            query_images)]  # fmt: skip
        features, feature_map = self.head.patch_features(self._pixels(loaded))
        embeds = self.model.model.embed_image_query(features, feature_map)[0]
        if embeds is None:
            raise ConfigError("OWL found no region to use as the query in a query image")
        return F.normalize(embeds.reshape(len(loaded), -1).float(), dim=-1).cpu()

    @torch.no_grad()
    def box_query_embeddings(self, image: ImageInput, boxes: torch.Tensor) -> torch.Tensor:
        """Query embeddings of boxes drawn in one image (exemplars): Tensor[N, D],
        L2-normalised, on CPU.

        Per box, the region OWL-ViT's image-guided detection picks for its whole query image,
        with the box in place of the image: among the patches whose predicted box overlaps it
        within 80% of the best IoU, the one least similar to the image's mean class embedding
        (where none overlaps: the patch whose box is nearest, by generalised IoU).

        Args:
            image: the exemplar image.
            boxes: Tensor[N, 4], (x1, y1, x2, y2) in its pixels.
        """
        [loaded] = [as_loaded_image(image, self.cfg.INPUT.MAX_LOAD_PIXELS)]
        features, feature_map = self.head.patch_features(self._pixels([loaded]))
        model = self.model.model
        embeds = model.class_predictor(features)[1][0]  # not normalised, as transformers uses
        frame = torch.tensor(self._box_frame(loaded)).repeat(2)
        predicted = box_convert(model.box_predictor(features, feature_map)[0], "cxcywh", "xyxy")
        predicted = predicted.cpu() * frame
        queries = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        queries = queries * torch.as_tensor(loaded.scale, dtype=torch.float32)
        out = []
        mean = embeds.mean(dim=0)
        for query in queries:
            ious = box_iou(query[None], predicted)[0]
            if bool((ious == 0).all()):  # no patch box overlaps it: the nearest one
                pick = generalized_box_iou(query[None], predicted)[0].argmax()
            else:
                near = torch.nonzero(ious >= ious.max() * 0.8).flatten()
                pick = near[torch.argmin(embeds[near.to(embeds.device)] @ mean)]
            out.append(embeds[pick])
        return F.normalize(torch.stack(out).float(), dim=-1).cpu()

    def detect_similar(
        self,
        images: ImageInput | Sequence[ImageInput],
        query_images: ImageInput | Sequence[ImageInput],
        names: Sequence[str] | None = None,
        score_thresh: float | None = None,
        nms_thresh: float = 0.3,
    ) -> list[Detections]:
        """Image-guided (one-shot) detection: find what the query images show.

        Each query image is one class (``names``, default ``query 1``, ``query 2``...), its
        query embedding :meth:`image_query_embeddings`; detections as :meth:`predict`, after
        class-agnostic NMS at ``nms_thresh`` IoU as transformers'
        ``post_process_image_guided_detection`` does. The vocabulary set before is restored.
        """
        queries = self.image_query_embeddings(query_images)
        names = (
            list(names) if names is not None else [f"query {i + 1}" for i in range(len(queries))]
        )
        saved = (*self.head.get_vocabulary(), self.class_names, self.class_kinds, self._vocabulary)
        self.set_queries(queries, names, kinds=["exemplar"] * len(names))
        try:
            return self._predict(as_image_list(images), score_thresh, 1, True, nms_thresh)
        finally:
            queries, is_novel, names, kinds, vocabulary = saved
            if names:
                self.set_queries(queries, names, is_novel, kinds)
            else:
                self.class_names, self.class_kinds = [], []
            self._vocabulary = vocabulary

    # ------------------------------------------------------------------ detection

    def _pixels(self, loaded: Sequence[LoadedImage]) -> torch.Tensor:
        """The model's input: the processor's Tensor[B, 3, S, S] of the loaded pixels."""
        arrays = [im.array if im.array.flags.writeable else im.array.copy() for im in loaded]
        processed = self.model.processor.image_processor(images=arrays, return_tensors="pt")
        return processed["pixel_values"].to(self.device)

    def _box_frame(self, image: LoadedImage) -> tuple[float, float]:
        """(width, height) in loaded pixels that OWL's [0, 1] box coordinates span: the image
        for OWL-ViT (resized to a square), its padded square for OWLv2 (padded, then resized)."""
        h, w = image.array.shape[:2]
        if self.model.model_type == "owlv2":
            side = float(max(h, w))
            return side, side
        return float(w), float(h)

    @torch.no_grad()
    def predict(
        self,
        images: ImageInput | Sequence[ImageInput],
        classes: str | Sequence[str] | Vocabulary | None = None,
        score_thresh: float | None = None,
        batch_size: int = 1,
        return_embeddings: bool = False,
    ) -> list[Detections]:
        """Detect ``classes`` in images (the arguments of :meth:`ovdet.api.OVDetector.predict`).

        Returns:
            One :class:`~ovdet.structures.Detections` per image, boxes in the original image's
            pixels.
        """
        if classes is not None:
            self.set_classes(classes)
        if not self.class_names:
            raise ValueError("no classes set; pass classes=[...] or call set_classes()")
        return self._predict(as_image_list(images), score_thresh, batch_size, return_embeddings)

    def _predict(self, images, score_thresh, batch_size, return_embeddings, nms_thresh=None):
        queries = self.head.get_vocabulary()[0]
        cap = int(self.cfg.TEST.DETECTIONS_PER_IMAGE)
        results = []
        with self.head.score_threshold(score_thresh):
            for start in range(0, len(images), max(1, int(batch_size))):
                loaded = [
                    as_loaded_image(im, self.cfg.INPUT.MAX_LOAD_PIXELS)
                    for im in images[start : start + batch_size]
                ]
                features, feature_map = self.head.patch_features(self._pixels(loaded))
                outputs = self.head.forward_patches(features, feature_map, queries)
                for i, image in enumerate(loaded):
                    h, w = image.array.shape[:2]
                    frame = self._box_frame(image)
                    found = self.head.select(outputs, i, frame, (w, h), cap, nms_thresh)
                    results.append(self._detections(found, image, return_embeddings))
        return results

    def _detections(self, found: dict, image: LoadedImage, return_embeddings: bool) -> Detections:
        return Detections(
            boxes=(found["boxes"].numpy() / image.scale).astype(np.float32),
            scores=found["scores"].numpy(),
            labels=found["labels"].numpy().astype(np.int64),
            class_names=self.class_names,
            class_kinds=self.class_kinds,
            embeddings=found["embeddings"].numpy() if return_embeddings else None,
        )

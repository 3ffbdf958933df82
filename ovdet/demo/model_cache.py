"""The checkpoint served to the page's requests: one model, one detector per template set."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

from ovdet.utils.errors import VocabularyError

if TYPE_CHECKING:
    from ovdet.api import Detections, OVDetector
    from ovdet.structures.vocabulary import Vocabulary

__all__ = ["DemoModel"]


class DemoModel:
    """A checkpoint served to many requests: one model, one text classifier per template set.

    The template sets share the model (and its head): a request sets the vocabulary again when
    it differs from the last one (templates or names). Requests run one at a time.

    Args:
        detector: the loaded detector (an :class:`~ovdet.api.OVDetector`, or an
            :class:`~ovdet.owl.OwlDetector`, whose constructor takes the same arguments); its
            config's ``MODEL.OVDET.TEMPLATES`` is the default set.
    """

    def __init__(self, detector: OVDetector) -> None:
        self.default_templates = str(detector.cfg.MODEL.OVDET.TEMPLATES)
        self._detectors = {self.default_templates: detector}
        self._current: tuple[str, Any] | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, device: str = "cpu", clip: str | None = None
    ) -> DemoModel:
        """Load a checkpoint of ``tools/train.py`` (``clip``: a CLIP spec replacing its own)."""
        from ovdet.api import OVDetector

        return cls(OVDetector.from_checkpoint(path, device=device, clip=clip))

    @classmethod
    def from_hf_detector(cls, spec: str, device: str = "cpu") -> DemoModel:
        """Load an OWL-ViT / OWLv2 of transformers (``hf:HUB_ID`` or ``hf:FOLDER``)."""
        from ovdet.owl import OwlDetector

        return cls(OwlDetector.from_spec(spec, device=device))

    @property
    def detector(self) -> OVDetector:
        """The detector of the default template set."""
        return self._detectors[self.default_templates]

    @property
    def template_choices(self) -> list[str]:
        """The template sets offered: the checkpoint's, then the named sets."""
        from ovdet.clip.text_classifier import TEMPLATE_SETS

        return list(dict.fromkeys([self.default_templates, *TEMPLATE_SETS]))

    @property
    def default_score_thresh(self) -> float:
        """The model's ``MODEL.ROI_HEADS.SCORE_THRESH_TEST``."""
        return float(self.detector.cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST)

    @property
    def max_load_pixels(self) -> int:
        """The model's ``INPUT.MAX_LOAD_PIXELS``: larger uploads are refused."""
        return int(self.detector.cfg.INPUT.MAX_LOAD_PIXELS)

    def _detector_for(self, templates: str) -> OVDetector:
        if templates not in self.template_choices:
            raise VocabularyError(
                f"templates {templates!r} are not one of {', '.join(self.template_choices)}"
            )
        if templates not in self._detectors:
            base = self.detector
            cfg = base.cfg.clone()
            cfg.defrost()
            cfg.MODEL.OVDET.TEMPLATES = templates
            cfg.freeze()
            self._detectors[templates] = type(base)(
                base.model, cfg, base.train_class_names, base.device
            )
        return self._detectors[templates]

    def detect(
        self,
        images: Sequence[np.ndarray],
        vocabulary: Vocabulary,
        templates: str,
        score_thresh: float,
        clip_rescoring: bool,
    ) -> tuple[list[Detections], list[bool]]:
        """Detect ``vocabulary`` in RGB uint8 images [H, W, 3].

        Args:
            clip_rescoring: combine the detector's scores with CLIP's scores of the box crops.

        Returns:
            One :class:`~ovdet.api.Detections` per image, and per class of the vocabulary
            whether it is novel (outside the training vocabulary, the head's rule).
        """
        with self.prepared(vocabulary, templates, clip_rescoring) as (detector, is_novel):
            results = detector.predict(list(images), score_thresh=score_thresh)
        return results, is_novel

    @contextmanager
    def prepared(
        self, vocabulary: Vocabulary, templates: str, clip_rescoring: bool
    ) -> Iterator[tuple[OVDetector, list[bool]]]:
        """Hold the model for one request with its vocabulary, templates and CLIP rescoring set.

        Yields:
            (the detector, per class of the vocabulary whether it is novel: outside the
            training vocabulary, the head's rule).
        """
        with self._lock:
            detector = self._detector_for(templates)
            if self._current != (templates, vocabulary):
                detector.class_names = []  # the head is shared by the template sets: set it
                detector.set_classes(vocabulary)
                self._current = (templates, vocabulary)
            detector.enable_clip_rescoring(clip_rescoring)
            yield detector, detector.head.get_vocabulary()[1].tolist()

    def embed_query(self, text: str) -> np.ndarray:
        """The text embedding of a search query with the default templates: float32 [D]."""
        with self._lock:
            return self.detector.text_embeddings([text])[0].numpy()

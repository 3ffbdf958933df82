"""Inference with a detectron2-trained open-vocabulary detector on any vocabulary."""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import transforms as T
from detectron2.modeling import build_model

from ovdet.d2.config import load_d2_config
from ovdet.d2.vocabulary import get_roi_heads, novelty, text_embeddings, training_vocabulary
from ovdet.errors import ConfigError, ImageError, VocabularyError
from ovdet.text import Vocabulary

__all__ = ["OpenVocabularyD2Predictor", "D2DetectorAdapter"]

logger = logging.getLogger(__name__)


class OpenVocabularyD2Predictor:
    """Detects any classes with a model trained by ``tools/train_net.py``.

    Args:
        config_file: the detectron2 YAML the model was trained with.
        weights: a checkpoint (``model_final.pth``), or ``""`` to keep the initial weights.
        classes: the class names to detect; ``None`` means the training vocabulary.
        overrides: ``["KEY", "VALUE", ...]`` config overrides.
        device: ``"cpu"``, ``"cuda"``...; ``None`` keeps ``MODEL.DEVICE``.
        batch_size: images per forward pass.

    Classes outside the training vocabulary count as novel for the ViLD-ensemble
    (``MODEL.OVDET.ENSEMBLE.ENABLED``); when the training vocabulary cannot be resolved (its
    dataset is not registered and ``MODEL.OVDET.VOCABULARY`` is empty), every class is novel.
    """

    def __init__(
        self,
        config_file: str,
        weights: str = "",
        classes: Sequence[str] | None = None,
        overrides: Sequence[str] = (),
        device: str | None = None,
        batch_size: int = 1,
    ) -> None:
        cfg = load_d2_config(config_file, overrides)
        if device:
            cfg.MODEL.DEVICE = device
        if weights:
            cfg.MODEL.WEIGHTS = weights
        if cfg.INPUT.FORMAT not in ("RGB", "BGR"):
            raise ConfigError(f"INPUT.FORMAT must be RGB or BGR, got {cfg.INPUT.FORMAT!r}")
        try:
            base = training_vocabulary(cfg)
        except ConfigError as e:
            logger.info("Training vocabulary unknown (%s); every class counts as novel", e)
            base = None
        if base is None:
            if not classes:
                raise ConfigError(
                    "give the classes to detect: the config's training vocabulary cannot be "
                    "resolved (register its DATASETS.TRAIN or set MODEL.OVDET.VOCABULARY)"
                )
            if any("," in c for c in classes):
                raise VocabularyError("class names cannot contain commas")
            cfg.MODEL.OVDET.VOCABULARY = ", ".join(classes)
        cfg.freeze()
        self.cfg = cfg
        self.batch_size = max(1, int(batch_size))
        self.base_names = base.names if base is not None else ()
        self.model = build_model(cfg).eval()
        if cfg.MODEL.WEIGHTS:
            DetectionCheckpointer(self.model).load(cfg.MODEL.WEIGHTS)
        self.resize = T.ResizeShortestEdge(
            [cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST], cfg.INPUT.MAX_SIZE_TEST
        )
        self.classes: list[str] = []
        self.set_classes(classes if classes else base.names)

    def set_classes(self, names: Sequence[str] | str) -> None:
        """Swap the vocabulary (a list of names, or a spec for ``Vocabulary.parse``)."""
        vocabulary = Vocabulary.parse(names if isinstance(names, str) else list(names))
        embeddings = text_embeddings(self.cfg, vocabulary)
        get_roi_heads(self.model).set_vocabulary(
            embeddings, novelty(vocabulary.names, self.base_names)
        )
        self.classes = list(vocabulary.names)

    def _input(self, image: np.ndarray) -> dict:
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
            raise ImageError(
                f"expected an RGB uint8 array [H, W, 3], got {getattr(image, 'shape', image)}"
            )
        if image.dtype != np.uint8:
            raise ImageError(f"expected an RGB uint8 array, got dtype {image.dtype}")
        height, width = image.shape[:2]
        if self.cfg.INPUT.FORMAT == "BGR":
            image = image[:, :, ::-1]
        resized = self.resize.get_transform(image).apply_image(image)
        tensor = torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1)).astype("float32"))
        return {"image": tensor, "height": height, "width": width}

    @torch.no_grad()
    def predict(self, images: Sequence[np.ndarray]) -> list[dict]:
        """Detect the current classes.

        Args:
            images: RGB uint8 arrays of shape [H, W, 3].

        Returns:
            Per image a dict: ``boxes`` Tensor[K, 4] (x1, y1, x2, y2 in the image's pixels),
            ``scores`` Tensor[K], ``labels`` LongTensor[K] (indices into :attr:`classes`) and
            ``class_names`` (K names).
        """
        results = []
        for start in range(0, len(images), self.batch_size):
            inputs = [self._input(im) for im in images[start : start + self.batch_size]]
            for output in self.model(inputs):
                instances = output["instances"].to("cpu")
                labels = instances.pred_classes
                results.append(
                    {
                        "boxes": instances.pred_boxes.tensor,
                        "scores": instances.scores,
                        "labels": labels,
                        "class_names": [self.classes[i] for i in labels.tolist()],
                    }
                )
        return results


class D2DetectorAdapter:
    """The :class:`ovdet.api.OVDetector` interface used by ``tools/infer.py``, on a d2 model.

    Args:
        predictor: a loaded :class:`OpenVocabularyD2Predictor`.
        max_load_pixels: images larger than this are downscaled when read; default: the
            default engine's ``INPUT.MAX_LOAD_PIXELS``.
    """

    def __init__(self, predictor: OpenVocabularyD2Predictor, max_load_pixels: int | None = None):
        from ovdet.config import get_cfg

        self.predictor = predictor
        self.max_load_pixels = (
            get_cfg().INPUT.MAX_LOAD_PIXELS if max_load_pixels is None else max_load_pixels
        )

    @property
    def class_names(self) -> list[str]:
        return list(self.predictor.classes)

    def set_classes(self, vocabulary) -> None:
        """Swap the vocabulary (a :class:`ovdet.text.Vocabulary`, names, or a spec string)."""
        names = getattr(vocabulary, "names", vocabulary)
        self.predictor.set_classes(names if isinstance(names, str) else list(names))

    def predict(
        self, images: Sequence[np.ndarray], score_thresh: float | None = None, batch_size: int = 1
    ) -> list:
        """Detect the current classes; returns :class:`ovdet.api.Detections` per image."""
        from ovdet.api import Detections

        self.predictor.batch_size = max(1, int(batch_size))
        out = []
        for result in self.predictor.predict(images):
            keep = (
                result["scores"] >= score_thresh
                if score_thresh is not None
                else torch.ones_like(result["scores"], dtype=torch.bool)
            )
            out.append(
                Detections(
                    boxes=result["boxes"][keep].numpy().astype(np.float32),
                    scores=result["scores"][keep].numpy().astype(np.float32),
                    labels=result["labels"][keep].numpy().astype(np.int64),
                    class_names=self.class_names,
                )
            )
        return out

"""Inference with a detectron2-trained open-vocabulary detector on any vocabulary."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from detectron2.data import transforms as T
from detectron2.modeling import build_model

from ovdet.clip.text_classifier import Vocabulary
from ovdet.core.exemplars import (
    class_embeddings,
    exemplar_embedder_from_config,
    rescoring_class_embeddings,
)
from ovdet.core.head import get_head
from ovdet.core.novel_classes import novel_class_mask
from ovdet.d2.checkpoint import OpenVocabularyCheckpointer
from ovdet.d2.config import load_d2_config
from ovdet.d2.model_vocabulary import (
    get_roi_heads,
    load_clip_for,
    text_classifier_builder,
    training_vocabulary,
)
from ovdet.structures.exemplars import ExemplarsInput, exemplar_specs
from ovdet.utils.errors import CheckpointError, ConfigError, ImageError, VocabularyError

__all__ = ["D2DetectorAdapter", "OpenVocabularyD2Predictor", "load_d2_weights"]

logger = logging.getLogger(__name__)


class OpenVocabularyD2Predictor:
    """Detects any classes with a model trained by ``tools/train_net.py``.

    Args:
        config_file: the detectron2 YAML the model was trained with.
        weights: a checkpoint (``model_final.pth``), or ``""`` to keep the initial weights.
        classes: the classes to detect (a :class:`~ovdet.structures.Vocabulary`, whose
        synonyms are
            kept, or names); ``None`` means the training vocabulary.
        overrides: ``["KEY", "VALUE", ...]`` config overrides.
        device: ``"cpu"``, ``"cuda"``...; ``None`` keeps ``MODEL.DEVICE``.
        batch_size: images per forward pass.

    Classes outside the training vocabulary count as novel for the weights of CLIP rescoring
    (``MODEL.OVDET.CLIP_RESCORING``) and of the ViLD-ensemble (``MODEL.OVDET.VILD_ENSEMBLE``);
    when the training vocabulary cannot be resolved (its dataset is not registered and
    ``MODEL.OVDET.VOCABULARY`` is empty), every class is novel.
    """

    def __init__(
        self,
        config_file: str,
        weights: str = "",
        classes: Vocabulary | Sequence[str] | None = None,
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
            names = list(getattr(classes, "names", classes) or ())
            if any("," in c for c in names):
                raise VocabularyError("class names cannot contain commas")
            cfg.MODEL.OVDET.VOCABULARY = ", ".join(names)
        cfg.freeze()
        self.cfg = cfg
        self.batch_size = max(1, int(batch_size))
        self.base = base if base is not None else ()
        self.model = build_model(cfg).eval()
        self.head = get_head(self.model)
        if cfg.MODEL.WEIGHTS:
            load_d2_weights(self.model, cfg.MODEL.WEIGHTS)
        self.resize = T.ResizeShortestEdge(
            [cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST], cfg.INPUT.MAX_SIZE_TEST
        )
        self.classes: list[str] = []
        self.class_kinds: list[str] = []
        self._exemplars = None
        self.set_classes(classes if classes else base)

    def _region_boxes(self, array: np.ndarray, boxes: torch.Tensor) -> torch.Tensor:
        """The detector's region embeddings of boxes of one image (exemplar source
        ``region``): RGB uint8 [H, W, 3], Tensor[N, 4] in its pixels -> Tensor[N, D]."""
        inputs = self._input(array)
        height, width = inputs["image"].shape[1:]
        scale = torch.tensor([width / array.shape[1], height / array.shape[0]] * 2)
        return self.model.box_embeddings([inputs], [boxes.float().cpu() * scale])

    @property
    def exemplar_embedder(self):
        """Embeds image exemplars by ``MODEL.OVDET.EXEMPLARS.SOURCE``, through the cache."""
        if self._exemplars is None:
            self._exemplars = exemplar_embedder_from_config(
                self.cfg, lambda: load_clip_for(self.cfg), self._region_boxes, self.model,
                self.cfg.MODEL.DEVICE,
            )  # fmt: skip
        return self._exemplars

    def set_classes(
        self,
        classes: Vocabulary | Sequence[str] | str,
        exemplars: ExemplarsInput | None = None,
    ) -> None:
        """Swap the vocabulary: a :class:`~ovdet.structures.Vocabulary` (synonyms and
        exemplars kept), names, or a spec for ``Vocabulary.parse``; ``exemplars`` as
        :meth:`ovdet.api.OVDetector.set_classes`."""
        vocabulary = Vocabulary.from_classes_and_exemplars(classes, exemplar_specs(exemplars))
        embedder = self.exemplar_embedder if vocabulary.has_exemplars else None
        text, weight = text_classifier_builder(self.cfg), self.cfg.MODEL.OVDET.EXEMPLARS.TEXT_WEIGHT
        rescores = self.head.clip_rescoring is not None
        embeddings = class_embeddings(vocabulary, text, embedder, weight, clip_rescoring=rescores)
        rescoring = None
        if self.head.clip_rescoring is not None:  # its own rows for region exemplar classes
            rescoring = rescoring_class_embeddings(vocabulary, text, embedder, weight)
        get_roi_heads(self.model).set_vocabulary(
            embeddings, novel_class_mask(vocabulary, self.base)
        )
        self.head.set_rescoring_embeddings(rescoring)
        self.classes = list(vocabulary.names)
        self.class_kinds = list(vocabulary.kinds)

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
    def predict(
        self, images: Sequence[np.ndarray], score_thresh: float | None = None
    ) -> list[dict]:
        """Detect the current classes.

        Args:
            images: RGB uint8 arrays of shape [H, W, 3].
            score_thresh: instead of ``MODEL.ROI_HEADS.SCORE_THRESH_TEST``; the same meaning
                as in the torchvision engine (strictly above, before NMS).

        Returns:
            Per image a dict: ``boxes`` Tensor[K, 4] (x1, y1, x2, y2 in the image's pixels),
            ``scores`` Tensor[K], ``labels`` LongTensor[K] (indices into :attr:`classes`),
            ``embeddings`` Tensor[K, D] and ``class_names`` (K names); with a mask head
            (``MODEL.MASK_ON``) also ``masks`` BoolTensor[K, H, W] (pasted by detectron2).
        """
        results = []
        for start in range(0, len(images), self.batch_size):
            inputs = [self._input(im) for im in images[start : start + self.batch_size]]
            with self.head.score_threshold(score_thresh):
                outputs = self.model(inputs)
            for output in outputs:
                instances = output["instances"].to("cpu")
                labels = instances.pred_classes
                results.append(
                    {
                        "boxes": instances.pred_boxes.tensor,
                        "scores": instances.scores,
                        "labels": labels,
                        "embeddings": instances.pred_embeddings,
                        "class_names": [self.classes[i] for i in labels.tolist()],
                    }
                )
                if instances.has("pred_masks"):
                    results[-1]["masks"] = instances.pred_masks.bool()
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

    @property
    def class_kinds(self) -> list[str]:
        return list(self.predictor.class_kinds)

    def set_classes(self, vocabulary, exemplars: ExemplarsInput | None = None) -> None:
        """Swap the vocabulary (a :class:`ovdet.structures.Vocabulary`, names, or a spec
        string; ``exemplars`` as :meth:`ovdet.api.OVDetector.set_classes`)."""
        self.predictor.set_classes(vocabulary, exemplars)

    def predict(self, images, score_thresh: float | None = None, batch_size: int = 1) -> list:
        """Detect the current classes in images (an :data:`ovdet.structures.ImageInput` or a
        list of them); returns :class:`ovdet.structures.Detections` per image, boxes in the
        original image's pixels (a file above ``max_load_pixels`` is downscaled on load)."""
        from ovdet.data.image_io import as_loaded_image
        from ovdet.structures import Detections, as_image_list
        from ovdet.structures.masks import resize_masks

        self.predictor.batch_size = max(1, int(batch_size))
        loaded = [as_loaded_image(im, self.max_load_pixels) for im in as_image_list(images)]
        out = []
        results = self.predictor.predict([im.array for im in loaded], score_thresh)
        for image, result in zip(loaded, results):
            masks = result.get("masks")
            if masks is not None:  # pasted at the loaded size: nearest to the original's
                masks = resize_masks(masks.numpy(), (image.height, image.width))
            out.append(
                Detections(
                    boxes=result["boxes"].numpy().astype(np.float32) / image.scale,
                    scores=result["scores"].numpy().astype(np.float32),
                    labels=result["labels"].numpy().astype(np.int64),
                    class_names=self.class_names,
                    class_kinds=self.class_kinds,
                    embeddings=result["embeddings"].numpy().astype(np.float32),
                    masks=masks,
                )
            )
        return out


def load_d2_weights(model: torch.nn.Module, path: str) -> None:
    """Load detectron2 weights (``model_final.pth``) without running code from the file.

    :class:`~ovdet.d2.checkpoint.OpenVocabularyCheckpointer` reads the file with ovdet's safe
    reader (``torch.load(weights_only=True)``) and matches the weights to the model as detectron2
    does (``module.`` prefixes, shape checks, logged missing and unexpected keys). ``.pkl`` files,
    which detectron2 unpickles with :mod:`pickle`, are refused here.

    Raises:
        CheckpointError: one line, for a file that is missing, a ``.pkl`` pickle, not a
            checkpoint, or holding pickled objects beyond tensors and plain types.
    """
    if str(path).endswith(".pkl"):
        raise CheckpointError(
            f"cannot load weights {path}: .pkl files are plain pickles, which can run code when "
            "loaded; give a PyTorch checkpoint (.pth) written by tools/train_net.py"
        )
    if not Path(path).is_file():
        raise CheckpointError(f"cannot load weights {path}: the file does not exist")
    try:
        OpenVocabularyCheckpointer(model).load(str(path))
    except CheckpointError:
        raise  # already one line naming the file
    except Exception as e:  # e.g. a non-tensor among the weights, or a shape detectron2 refuses
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"cannot load weights {path}: {first}") from e

"""The Python API: load a checkpoint, name any classes, detect them."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ovdet.clip import ClipSpec
from ovdet.clip.text_classifier import Vocabulary
from ovdet.config import config_from_dict
from ovdet.core.exemplars import (
    class_embeddings,
    exemplar_embedder_from_config,
    rescoring_class_embeddings,
)
from ovdet.core.head import get_head
from ovdet.core.masks import paste_masks
from ovdet.core.novel_classes import novel_class_mask
from ovdet.core.score_fusion import ClipRescoringSettings, check_score_fusion
from ovdet.data.image_io import as_loaded_image
from ovdet.data.transforms import build_augmentation, resize_for_inference
from ovdet.structures.detections import Detections, ImageInput, as_image_list
from ovdet.structures.exemplars import ExemplarsInput, exemplar_specs
from ovdet.structures.loaded_image import LoadedImage
from ovdet.tv.engine.build import build_clip_teacher, build_model, build_text_classifier
from ovdet.tv.engine.checkpoint import load_checkpoint, load_model_weights
from ovdet.utils.errors import CheckpointError, ConfigError

__all__ = ["Detections", "OVDetector"]

logger = logging.getLogger(__name__)


def _check_embed_dim(clip_dim: int, model_dim: int, clip) -> None:
    if model_dim and clip_dim != model_dim:
        raise CheckpointError(
            f"CLIP {clip} embeds into {clip_dim} dimensions but the detector was trained with a "
            f"{model_dim}-dimensional CLIP; use that CLIP or one of the same embedding size"
        )


class OVDetector:
    """An open-vocabulary detector ready for inference.

    Args:
        model: an open-vocabulary detector (one with an
            :class:`~ovdet.core.OpenVocabularyHead`, see :func:`~ovdet.core.get_head`).
        cfg: its config.
        train_class_names: the vocabulary it was trained with (classes outside it are "novel"
            for the weights of CLIP rescoring and the ViLD-ensemble).
        device: where it runs.
    """

    def __init__(self, model, cfg, train_class_names: Sequence[str], device="cpu") -> None:
        self.model = model.eval()
        self.head = get_head(model)
        self.cfg = cfg
        self.device = torch.device(device)
        self.train_class_names = list(train_class_names)
        self.transform = build_augmentation(cfg, is_train=False)
        self._text = build_text_classifier(cfg, self.device)
        self.class_names: list[str] = []
        self.class_kinds: list[str] = []
        self._exemplars = None
        self._vocabulary: Vocabulary | None = None
        if cfg.MODEL.OVDET.CLIP_RESCORING.ENABLED:
            self.enable_clip_rescoring(True)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        device: str = "cpu",
        clip: str | None = None,
        overrides: Sequence[str] = (),
    ) -> OVDetector:
        """Load a checkpoint written by ``tools/train.py``.

        Args:
            path: the checkpoint file.
            device: "cpu", "cuda" or "cuda:N".
            clip: a CLIP spec replacing the one the model was trained with (same embedding
                dimension), e.g. when the weights file moved.
            overrides: config ``KEY VALUE`` pairs (e.g. score threshold, test size).
        """
        import yaml

        from ovdet.config import merge_overrides

        state = load_checkpoint(path)
        try:
            cfg = config_from_dict(yaml.safe_load(state["config"]), f"checkpoint {path}")
        except (KeyError, yaml.YAMLError) as e:
            raise CheckpointError(f"checkpoint {path} holds no readable config: {e}") from e
        from ovdet.tv.modeling.build import is_open_vocabulary

        if not is_open_vocabulary(cfg):
            raise CheckpointError(
                f"{path} is a closed-set {cfg.MODEL.META_ARCHITECTURE} model: it detects only its "
                "training classes, and OVDetector needs an open-vocabulary model"
            )
        cfg.MODEL.DEVICE = device
        if state.get("embed_dim"):
            cfg.MODEL.OVDET.EMBED_DIM = int(state["embed_dim"])
        if clip:
            cfg.MODEL.OVDET.CLIP = clip
            _check_embed_dim(ClipSpec.parse(clip).embed_dim, cfg.MODEL.OVDET.EMBED_DIM, clip)
        merge_overrides(cfg, list(overrides))
        cfg.freeze()
        if torch.device(device).type == "cuda" and not torch.cuda.is_available():
            raise ConfigError("--device cuda was asked for but no CUDA device is available")
        model = build_model(cfg)
        load_model_weights(model, state["model"], str(path))
        return cls(model.to(device), cfg, state.get("class_names", []), device)

    def enable_clip_rescoring(self, enabled: bool = True) -> None:
        """Turn CLIP rescoring on or off; for crops (ViLD-text+CLIP) the CLIP image tower loads
        once, from the CLIP backbone (F-VLM) nothing loads.

        Raises:
            ConfigError: for a model with an image head (``MODEL.OVDET.DISTILL.IMAGE_HEAD``),
                whose scores are already joined with the image head's (ViLD-ensemble).
        """
        if enabled:
            check_score_fusion(self.head.has_image_head, True)  # before loading CLIP
        settings = ClipRescoringSettings.from_config(self.cfg) if enabled else None
        if settings is not None and settings.crops and self.head.clip_teacher is None:
            self.head.set_clip_teacher(build_clip_teacher(self.cfg, self._text.clip))
        self.head.enable_clip_rescoring(settings)
        vocab = self._vocabulary
        if vocab is not None and vocab.has_exemplars:  # name + region classes change rows
            rows = self._class_embeddings(vocab).to(self.device)
            self.head.set_vocabulary(rows, self.head.is_novel_class)
        self._set_rescoring_rows()

    def _set_rescoring_rows(self) -> None:
        """CLIP rescoring's own rows for region exemplar classes, while it is on
        (:func:`~ovdet.core.exemplars.rescoring_class_embeddings`)."""
        rows, vocab = None, self._vocabulary
        if self.head.clip_rescoring is not None and vocab is not None and vocab.has_exemplars:
            weight = self.cfg.MODEL.OVDET.EXEMPLARS.TEXT_WEIGHT
            rows = rescoring_class_embeddings(vocab, self._text, self.exemplar_embedder, weight)
        self.head.set_rescoring_embeddings(rows)

    @property
    def clip(self):
        """The loaded CLIP (:class:`~ovdet.clip.ClipBackend`) of the text classifier."""
        return self._text.clip

    def text_embeddings(self, classes: str | Sequence[str] | Vocabulary) -> torch.Tensor:
        """The text classifier of a vocabulary (prompt templates, cache): Tensor[C, D], float32,
        L2-normalised, on CPU. The vocabulary in use is not changed."""
        return self._text(Vocabulary.parse(classes))

    def _region_boxes(self, array: np.ndarray, boxes: torch.Tensor) -> torch.Tensor:
        """The detector's region embeddings of boxes of one image (exemplar source
        ``region``): RGB uint8 [H, W, 3], Tensor[N, 4] in its pixels -> Tensor[N, D]."""
        tensor, scale, _ = self._prepare(LoadedImage.unscaled(array))
        resized = boxes.to(self.device) * scale.to(self.device)
        return self.model.box_embeddings([tensor.to(self.device)], [resized])

    @property
    def exemplar_embedder(self):
        """Embeds image exemplars by ``MODEL.OVDET.EXEMPLARS.SOURCE``, through the cache
        (an :class:`~ovdet.core.exemplars.ExemplarEmbedder`)."""
        if self._exemplars is None:
            self._exemplars = exemplar_embedder_from_config(
                self.cfg, lambda: self._text.clip, self._region_boxes, self.model, self.device
            )
        return self._exemplars

    def class_embeddings(
        self,
        classes: str | Sequence[str] | Vocabulary,
        exemplars: ExemplarsInput | None = None,
    ) -> torch.Tensor:
        """The classifier of a vocabulary of text and exemplar classes as the detector scores it
        without CLIP rescoring (the rows an ONNX graph takes): Tensor[C, D], float32,
        L2-normalised, on CPU (see :meth:`set_classes`). The vocabulary in use is not changed."""
        vocab = Vocabulary.from_classes_and_exemplars(classes, exemplar_specs(exemplars))
        return self._class_embeddings(vocab, clip_rescoring=False)

    def _class_embeddings(
        self, vocab: Vocabulary, clip_rescoring: bool | None = None
    ) -> torch.Tensor:
        """The detector's rows of ``vocab``; ``clip_rescoring``: whether CLIP rescoring holds
        the names of name + region exemplar classes (``None``: whether it is on)."""
        embedder = self.exemplar_embedder if vocab.has_exemplars else None
        weight = self.cfg.MODEL.OVDET.EXEMPLARS.TEXT_WEIGHT
        if clip_rescoring is None:
            clip_rescoring = self.head.clip_rescoring is not None
        return class_embeddings(vocab, self._text, embedder, weight, clip_rescoring)

    def set_classes(
        self,
        classes: str | Sequence[str] | Vocabulary,
        exemplars: ExemplarsInput | None = None,
    ) -> None:
        """Swap the vocabulary: a comma-separated string, a file, a list or a Vocabulary.

        Args:
            classes: the classes by name (a vocabulary file may also give exemplar classes).
            exemplars: image exemplars by class name, e.g. ``{"mug": ["mug.jpg:10,20,64,48"]}``
                (see :func:`~ovdet.structures.exemplars.exemplar_specs`): a name among
                ``classes`` mixes its text with them (``MODEL.OVDET.EXEMPLARS.TEXT_WEIGHT``),
                another name is a class given by exemplars alone, after the others.

        Raises:
            VocabularyError, ImageError: a bad class list, exemplar box or image (the vocabulary
                in use is then kept).
        """
        vocab = Vocabulary.from_classes_and_exemplars(classes, exemplar_specs(exemplars))
        if (
            not vocab.has_exemplars
            and vocab.names == tuple(self.class_names)
            and self.class_kinds == list(vocab.kinds)
        ):
            return
        embeddings = self._class_embeddings(vocab)
        _check_embed_dim(embeddings.shape[1], self.head.embed_dim, self._text.spec)
        self.head.set_vocabulary(
            embeddings.to(self.device), novel_class_mask(vocab, self.train_class_names)
        )
        self._vocabulary = vocab
        self._set_rescoring_rows()
        self.class_names = list(vocab.names)
        self.class_kinds = list(vocab.kinds)

    def _prepare(self, image: ImageInput) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        """Image -> (Tensor[3, H', W'] in [0, 1], Tensor[4] box scale (sx, sy, sx, sy), the
        original (H, W)): boxes of the resized image divided by the scale are in the original
        image's pixels, also where it was downscaled on load (``INPUT.MAX_LOAD_PIXELS``)."""
        loaded = as_loaded_image(image, self.cfg.INPUT.MAX_LOAD_PIXELS)
        resized, scale = resize_for_inference(self.transform, loaded.array)
        tensor = torch.from_numpy(np.array(resized, copy=True)).permute(2, 0, 1)
        size = (loaded.height, loaded.width)
        return tensor.float().div_(255.0), torch.from_numpy(scale * loaded.scale), size

    @torch.no_grad()
    def predict(
        self,
        images: ImageInput | Sequence[ImageInput],
        classes: str | Sequence[str] | Vocabulary | None = None,
        score_thresh: float | None = None,
        batch_size: int = 1,
        return_embeddings: bool = False,
    ) -> list[Detections]:
        """Detect ``classes`` in images.

        Args:
            images: paths, RGB uint8 arrays [H, W, 3], PIL images or
                :class:`~ovdet.structures.LoadedImage` s (one or a list).
            classes: the vocabulary; None keeps the last one set.
            score_thresh: override of ``MODEL.ROI_HEADS.SCORE_THRESH_TEST``.
            batch_size: images per forward pass.
            return_embeddings: also return region embeddings (Tensor[K, D] per image).

        Returns:
            One :class:`Detections` per image, boxes in the original image's pixels (a file
            above ``INPUT.MAX_LOAD_PIXELS`` is downscaled on load, its boxes scaled back); with a
            mask head (``MODEL.MASK_ON``) also its masks, in the original image's pixels.
        """
        if classes is not None:
            self.set_classes(classes)
        if not self.class_names:
            raise ValueError("no classes set; pass classes=[...] or call set_classes()")
        images = as_image_list(images)
        amp = self.device.type == "cuda" and self.cfg.SOLVER.AMP.ENABLED
        results = []
        with self.head.score_threshold(score_thresh):
            for start in range(0, len(images), batch_size):
                prepared = [self._prepare(im) for im in images[start : start + batch_size]]
                with torch.autocast("cuda", enabled=amp):
                    outputs = self.model([t.to(self.device) for t, _, _ in prepared])
                for (_, scale, size), out in zip(prepared, outputs):
                    boxes = out["boxes"].float().cpu() / scale
                    masks = None
                    if "mask_probs" in out:  # box-relative: pasted at the original's boxes
                        masks = paste_masks(out["mask_probs"].float().cpu(), boxes, size).numpy()
                    results.append(
                        Detections(
                            boxes=boxes.numpy(),
                            scores=out["scores"].float().cpu().numpy(),
                            labels=out["labels"].cpu().numpy(),
                            class_names=self.class_names,
                            class_kinds=self.class_kinds,
                            embeddings=out["embeddings"].float().cpu().numpy()
                            if return_embeddings
                            else None,
                            masks=masks,
                        )
                    )
        return results

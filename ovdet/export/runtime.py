"""An onnxruntime detector with the API of :class:`ovdet.api.OVDetector`.

:class:`OnnxDetector` reads an export folder (:func:`~ovdet.export.onnx.export_onnx`): it
tokenises the prompts of a vocabulary with the saved tokenizer and templates, runs the text
graph to build the ``[C, D]`` text classifier (as
:class:`~ovdet.clip.text_classifier.TextClassifierBuilder`:
per prompt L2-normalised, summed per class, re-normalised), and runs the detector graph per
image with it. The CUDA execution provider is used when onnxruntime has it, else the CPU one.

Nothing here imports PyTorch: a deployed vocabulary needs numpy, onnxruntime, tokenizers (and
ftfy), Pillow and the config and resizing libraries of :mod:`ovdet.config` and
:mod:`ovdet.data.transforms`. ``tests/test_export_onnx.py`` runs it with torch unimportable.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ovdet.structures.detections import Detections, ImageInput, as_image_list
from ovdet.structures.masks import paste_masks
from ovdet.structures.vocabulary import Vocabulary
from ovdet.utils.errors import CheckpointError, ConfigError, VocabularyError

__all__ = ["OnnxDetector", "default_providers"]

logger = logging.getLogger(__name__)


def _ort():
    try:
        import onnxruntime
    except ImportError as e:
        raise ConfigError(
            f"the ONNX runtime needs onnxruntime (pip install ovdet[deploy]): {e}"
        ) from None
    return onnxruntime


def default_providers() -> list[str]:
    """CUDA when this onnxruntime build has it, then CPU."""
    available = _ort().get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


class OnnxDetector:
    """Open-vocabulary detection with onnxruntime.

    Args:
        export_dir: a folder written by ``ovdet-export-onnx``.
        providers: onnxruntime execution providers; default :func:`default_providers`.
        text_batch_size: prompts per text-graph call.
    """

    def __init__(
        self,
        export_dir: str | Path,
        providers: Sequence[str] | None = None,
        text_batch_size: int = 256,
    ) -> None:
        import yaml

        from ovdet.config import config_from_dict
        from ovdet.data.transforms import build_augmentation

        ort = _ort()
        self.export_dir = Path(export_dir)
        manifest = self.export_dir / "manifest.json"
        if not manifest.is_file():
            raise CheckpointError(
                f"{self.export_dir} is not a complete ONNX export (no manifest.json); "
                "write one with ovdet-export-onnx"
            )
        self.manifest = json.loads(manifest.read_text(encoding="utf-8"))
        self.cfg = config_from_dict(
            yaml.safe_load((self.export_dir / "config.yaml").read_text(encoding="utf-8")),
            str(self.export_dir / "config.yaml"),
        )
        self.templates = tuple(json.loads((self.export_dir / "templates.json").read_text()))
        self.providers = list(providers or default_providers())
        options = ort.SessionOptions()
        options.log_severity_level = 3
        try:
            self.detector = ort.InferenceSession(
                str(self.export_dir / "detector.onnx"), options, providers=self.providers
            )
            self.text_encoder = ort.InferenceSession(
                str(self.export_dir / "text_encoder.onnx"), options, providers=self.providers
            )
        except Exception as e:  # onnxruntime raises its own exception types
            raise CheckpointError(f"{self.export_dir}: cannot load the ONNX graphs: {e}") from None
        self.tokenizer = self._tokenizer()
        self.transform = build_augmentation(self.cfg, is_train=False)
        self.embed_dim = int(self.manifest["embed_dim"])
        self.score_thresh = float(self.manifest["score_thresh"])
        self.text_batch_size = text_batch_size
        self.class_names: list[str] = []
        self.class_kinds: list[str] = []
        self._text: np.ndarray | None = None

    def _tokenizer(self) -> Callable[[Sequence[str]], np.ndarray]:
        """The export's tokenizer: prompts -> int64 [N, L]."""
        from ovdet.export.tokenizer import ClipTokenizer

        spec = self.manifest["tokenizer"]
        if spec.get("type") == "clip-bpe":
            return ClipTokenizer.from_manifest(self.export_dir, spec)
        # manifest version 1 (open_clip's BPE file): tokenised by open_clip, which needs torch
        from open_clip.tokenizer import SimpleTokenizer

        tokenizer = SimpleTokenizer(
            str(self.export_dir / spec["bpe"]), context_length=int(spec["context_length"])
        )
        return lambda texts: tokenizer(list(texts)).numpy()

    def text_embeddings(self, classes: str | Sequence[str] | Vocabulary) -> np.ndarray:
        """The text classifier of a vocabulary: float32 [C, D], L2-normalised."""
        vocab = Vocabulary.parse(classes)
        prompts = vocab.prompts(self.templates)
        flat = [p for per_class in prompts for p in per_class]
        owner = np.array([i for i, per_class in enumerate(prompts) for _ in per_class])
        chunks = []
        for start in range(0, len(flat), self.text_batch_size):
            tokens = self.tokenizer(flat[start : start + self.text_batch_size])
            [features] = self.text_encoder.run(None, {"tokens": tokens.astype(np.int64)})
            norms = np.linalg.norm(features, axis=1, keepdims=True)
            chunks.append(features / np.maximum(norms, 1e-12))
        sums = np.zeros((len(vocab), self.embed_dim), np.float32)
        np.add.at(sums, owner, np.concatenate(chunks))
        return (sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)).astype(
            np.float32
        )

    def set_classes(self, classes: str | Sequence[str] | Vocabulary) -> None:
        """Swap the vocabulary: a comma-separated string, a file, a list or a Vocabulary.

        Classes given by image exemplars need CLIP's image tower or the detector's region
        embeddings, which the export leaves out: embed them with PyTorch
        (:meth:`ovdet.api.OVDetector.class_embeddings`) and give the rows to
        :meth:`set_class_embeddings`.
        """
        vocab = Vocabulary.parse(classes)
        if vocab.has_exemplars:
            raise VocabularyError(
                "the ONNX runtime embeds class names only; embed exemplar classes with "
                "OVDetector.class_embeddings and pass them to set_class_embeddings"
            )
        if vocab.names == tuple(self.class_names) and not self.class_kinds:
            return
        self._text = self.text_embeddings(vocab)
        self.class_names = list(vocab.names)
        self.class_kinds = []

    def set_class_embeddings(
        self, names: Sequence[str], embeddings: np.ndarray, kinds: Sequence[str] = ()
    ) -> None:
        """Use given class embeddings as the vocabulary (the graph's ``text_embeddings``
        input): e.g. rows of image exemplars made by
        :meth:`ovdet.api.OVDetector.class_embeddings`; the graph is the same.

        Args:
            names: ``C`` class names.
            embeddings: float32 [C, D], one row per class (L2-normalised here).
            kinds: per class, how it was given (``text``, ``exemplar``, ``text+exemplar``);
                kept in the results' :attr:`~ovdet.structures.Detections.class_kinds`.
        """
        rows = np.asarray(embeddings, dtype=np.float32)
        vocab = Vocabulary.from_names(names)  # checks the names
        if rows.ndim != 2 or rows.shape != (len(vocab), self.embed_dim):
            raise VocabularyError(
                f"class embeddings must be [{len(vocab)}, {self.embed_dim}] (one row per name), "
                f"got {list(rows.shape)}"
            )
        if kinds and len(kinds) != len(vocab):
            raise VocabularyError(f"kinds must have one entry per class ({len(vocab)})")
        norms = np.linalg.norm(rows, axis=1, keepdims=True)
        self._text = (rows / np.maximum(norms, 1e-12)).astype(np.float32)
        self.class_names = list(vocab.names)
        self.class_kinds = list(kinds)

    def _prepare(self, image: ImageInput) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
        """Image -> (float32 [3, H', W'] in [0, 1], box scale [4], the original (H, W)), as
        OVDetector does: boxes divided by the scale are in the original image's pixels."""
        from ovdet.data.image_io import as_loaded_image
        from ovdet.data.transforms import resize_for_inference

        loaded = as_loaded_image(image, self.cfg.INPUT.MAX_LOAD_PIXELS)
        resized, scale = resize_for_inference(self.transform, loaded.array)
        tensor = np.ascontiguousarray(resized.transpose(2, 0, 1), dtype=np.float32) / 255.0
        return tensor, scale * loaded.scale, (loaded.height, loaded.width)

    def predict(
        self,
        images: ImageInput | Sequence[ImageInput],
        classes: str | Sequence[str] | Vocabulary | None = None,
        score_thresh: float | None = None,
        batch_size: int = 1,
        return_embeddings: bool = False,
    ) -> list[Detections]:
        """Detect ``classes`` in images; the arguments and results of
        :meth:`ovdet.api.OVDetector.predict` (``batch_size`` is accepted; the graph runs one
        image at a time)."""
        if classes is not None:
            self.set_classes(classes)
        if self._text is None:
            raise ValueError("no classes set; pass classes=[...] or call set_classes()")
        images = as_image_list(images)
        thresh = np.array(self.score_thresh if score_thresh is None else score_thresh, np.float32)
        results = []
        for image in images:
            tensor, scale, size = self._prepare(image)
            boxes, scores, labels, embeddings, *mask_probs = self.detector.run(
                None, {"image": tensor, "text_embeddings": self._text, "score_thresh": thresh}
            )
            boxes = (boxes / scale).astype(np.float32)
            masks = None
            if mask_probs:  # a mask model's graph: pasted into the original image
                masks = paste_masks(mask_probs[0], boxes, size)
            results.append(
                Detections(
                    boxes=boxes,
                    scores=scores.astype(np.float32),
                    labels=labels.astype(np.int64),
                    class_names=self.class_names,
                    embeddings=embeddings.astype(np.float32) if return_embeddings else None,
                    class_kinds=self.class_kinds,
                    masks=masks,
                )
            )
        return results

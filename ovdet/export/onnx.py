"""Writing an ONNX export folder: the detector with the vocabulary as an input, and the text tower.

The folder (see :func:`export_onnx`) holds everything :class:`~ovdet.export.runtime.OnnxDetector`
needs to detect any vocabulary:

* ``detector.onnx``: inputs ``image`` float32 [3, H, W] (RGB in [0, 1], resized to the test
  size; any H, W), ``text_embeddings`` float32 [C, D] (any C) and ``score_thresh`` float32 [];
  outputs ``boxes`` [K, 4], ``scores`` [K], ``labels`` int64 [K], ``embeddings`` [K, D];
* ``text_encoder.onnx``: ``tokens`` int64 [N, L] -> ``text_features`` float32 [N, D] (not
  normalised), CLIP's text tower;
* ``tokenizer/tokenizer.json`` (the CLIP's BPE vocabulary and merges as a ``tokenizers`` file,
  :mod:`ovdet.export.tokenizer`), ``templates.json`` (the prompt templates), ``config.yaml``
  (the detector's config: test size, thresholds) and ``manifest.json``.

Reading the folder needs no PyTorch: numpy, onnxruntime, tokenizers, Pillow and the config and
image libraries (:class:`~ovdet.export.runtime.OnnxDetector`).

torchvision's ``nms`` and ``roi_align`` export as ONNX ops from opset 16 on; the exporter is
``torch.onnx.export``'s TorchScript tracer with dynamic axes.
"""

from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from ovdet.core import get_head
from ovdet.export.graph import ExportableDetector
from ovdet.export.tokenizer import save_open_clip_tokenizer
from ovdet.utils.errors import ConfigError
from ovdet.utils.io import atomic_open, atomic_write_json

__all__ = ["DEFAULT_OPSET", "TextTower", "export_onnx"]

logger = logging.getLogger(__name__)

DEFAULT_OPSET = 17
MANIFEST_VERSION = 2  # 2: the tokenizer as tokenizer/tokenizer.json (1: open_clip's BPE file)


class TextTower(nn.Module):
    """CLIP's text tower of an open_clip model: token ids int64 [N, L] -> float32 [N, D]."""

    def __init__(self, clip_model: nn.Module) -> None:
        super().__init__()
        self.clip_model = clip_model
        self.eval()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.clip_model.encode_text(tokens).float()


def _to_bytes(module: nn.Module, args: tuple, opset: int, **kwargs) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about shapes turned into constants
        torch.onnx.export(
            module, args, buffer, dynamo=False, opset_version=opset, do_constant_folding=True,
            **kwargs,
        )  # fmt: skip
    return buffer.getvalue()


def _write(data: bytes, path: Path) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def export_onnx(detector, out_dir: str | Path, opset: int = DEFAULT_OPSET) -> dict:
    """Export an :class:`~ovdet.api.OVDetector` (torchvision engine) into ``out_dir``.

    Every file is written atomically; the manifest last, so a folder with a manifest is
    complete.

    Args:
        detector: the loaded detector (its CLIP must be an open_clip model).
        out_dir: the export folder (created).
        opset: ONNX opset (>= 16 for torchvision's ``roi_align``).

    Returns:
        The manifest.
    """
    if opset < 16:
        raise ConfigError(f"--opset must be at least 16 (torchvision's roi_align), got {opset}")
    if get_head(detector.model).has_image_head:
        raise ConfigError(
            "ONNX export does not support MODEL.OVDET.DISTILL.IMAGE_HEAD: its scores (the "
            "ViLD-ensemble) need the classes' novelty, which the exported graph does not take; "
            "export a detector trained without it"
        )
    clip = detector.clip
    from open_clip.tokenizer import SimpleTokenizer

    if not isinstance(getattr(clip, "tokenizer", None), SimpleTokenizer):
        raise ConfigError(
            f"ONNX export supports open_clip CLIPs with CLIP's BPE tokenizer; {clip.spec} has "
            f"{type(getattr(clip, 'tokenizer', None)).__name__}"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer").mkdir(exist_ok=True)
    # first: it refuses a tokenizer the runtime could not reproduce before the long exports
    tokenizer = save_open_clip_tokenizer(clip.tokenizer, out / "tokenizer" / "tokenizer.json")
    tokenizer["file"] = f"tokenizer/{tokenizer['file']}"
    cfg = detector.cfg
    embed_dim = int(detector.head.embed_dim)
    size = int(cfg.INPUT.MIN_SIZE_TEST)

    model = detector.model.float().cpu()
    wrapper = ExportableDetector(model)
    text = torch.nn.functional.normalize(torch.randn(3, embed_dim), dim=-1)
    thresh = torch.tensor(float(detector.head.score_thresh))
    example = (torch.rand(3, size, size + 32), text, thresh)
    outputs = ["boxes", "scores", "labels", "embeddings"]
    if model.roi_heads.has_mask():  # MODEL.MASK_ON: each detection's box-relative mask
        outputs.append("mask_probs")
    logger.info("exporting the detector (opset %d)", opset)
    _write(
        _to_bytes(
            wrapper,
            example,
            opset,
            input_names=["image", "text_embeddings", "score_thresh"],
            output_names=outputs,
            dynamic_axes={
                "image": {1: "height", 2: "width"},
                "text_embeddings": {0: "num_classes"},
                **{name: {0: "detections"} for name in outputs},
            },
        ),  # fmt: skip
        out / "detector.onnx",
    )
    model.to(detector.device)

    logger.info("exporting the text tower")
    tower = TextTower(clip.model).float().cpu()
    tokens = clip.tokenizer(["a photo of a cat.", "a dog"])
    _write(
        _to_bytes(
            tower,
            (tokens,),
            opset,
            input_names=["tokens"],
            output_names=["text_features"],
            dynamic_axes={"tokens": {0: "texts"}, "text_features": {0: "texts"}},
        ),  # fmt: skip
        out / "text_encoder.onnx",
    )
    clip.model.to(detector.device)

    from ovdet.clip.text_classifier import load_templates

    atomic_write_json(list(load_templates(cfg.MODEL.OVDET.TEMPLATES)), out / "templates.json")
    with atomic_open(out / "config.yaml", "w", encoding="utf-8") as f:
        f.write(cfg.dump())
    manifest = {
        "version": MANIFEST_VERSION,
        "opset": opset,
        "embed_dim": embed_dim,
        "clip": str(cfg.MODEL.OVDET.CLIP),
        "tokenizer": tokenizer,
        "score_thresh": float(detector.head.score_thresh),
        "train_class_names": list(detector.train_class_names),
        "files": [
            "detector.onnx",
            "text_encoder.onnx",
            tokenizer["file"],
            "templates.json",
            "config.yaml",
        ],  # fmt: skip
    }
    atomic_write_json(manifest, out / "manifest.json")
    return manifest

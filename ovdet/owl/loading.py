"""Loading an OWL-ViT / OWLv2 model, its processor and tokenizer, from the hub or a folder."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ovdet.clip.spec import ClipSpec
from ovdet.utils.errors import CheckpointError, ConfigError, OvdetError

__all__ = ["DETECTOR_SCHEMA", "OWL_MODEL_TYPES", "OwlModel", "is_hf_detector", "load_owl_model"]

logger = logging.getLogger(__name__)

#: The prefix of a transformers detector spec: ``hf:HUB_ID`` or ``hf:/path/to/folder``.
DETECTOR_SCHEMA = "hf:"
#: transformers ``model_type`` -> the detection class that runs it.
OWL_MODEL_TYPES = {"owlvit": "OwlViTForObjectDetection", "owlv2": "Owlv2ForObjectDetection"}
_EXTRA_HINT = "pip install 'ovdet[hf]'"


def is_hf_detector(spec: str) -> bool:
    """Whether a ``--detector`` value names a transformers detector (``hf:...``)."""
    return spec.strip().startswith(DETECTOR_SCHEMA)


@dataclass
class OwlModel:
    """A loaded OWL-ViT / OWLv2 detector.

    Attributes:
        spec: the ``hf:`` spec it was loaded from; its weights digest keys the text cache.
        model: the ``OwlViTForObjectDetection`` / ``Owlv2ForObjectDetection``, float32, eval
            mode, parameters frozen.
        processor: its ``OwlViTProcessor`` / ``Owlv2Processor`` (image processor + tokenizer).
    """

    spec: ClipSpec
    model: nn.Module
    processor: Any

    @property
    def model_type(self) -> str:
        """``"owlvit"`` or ``"owlv2"``."""
        return self.model.config.model_type

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def base_model(self) -> nn.Module:
        """The CLIP-like ``OwlViTModel`` / ``Owlv2Model`` inside the detector."""
        return getattr(self.model, self.model.base_model_prefix)

    @property
    def embed_dim(self) -> int:
        """``D``: the size of the text queries and of the region (class) embeddings."""
        return int(self.model.config.text_config.hidden_size)

    def to(self, device: str | torch.device) -> OwlModel:
        self.model.to(device)
        return self


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


def _source(spec: str) -> tuple[ClipSpec, str]:
    name = spec.strip()[len(DETECTOR_SCHEMA) :].strip()
    if not name:
        raise ConfigError(f"--detector {spec!r} names no hub id or folder after 'hf:'")
    parsed = ClipSpec.parse(DETECTOR_SCHEMA + name)
    try:
        folder = parsed.hf_local_dir  # None for a hub id
    except ConfigError:
        raise ConfigError(f"--detector {spec}: no such folder") from None
    if folder is not None and not (folder / "config.json").is_file():
        raise ConfigError(
            f"--detector {spec}: {folder} is no folder holding config.json (write one with "
            "save_pretrained, or give a hub id such as google/owlv2-base-patch16-ensemble)"
        )
    return parsed, parsed.hf_name


def load_owl_model(spec: str, device: str | torch.device = "cpu") -> OwlModel:
    """Load ``hf:HUB_ID`` (downloaded once by transformers) or ``hf:FOLDER`` (``save_pretrained``
    of the model and its processor). No code from the folder or the hub runs
    (``trust_remote_code`` is never passed).

    Raises:
        ConfigError: transformers missing (the message names the ``hf`` extra), a bad spec, or
            a model that is not OWL-ViT / OWLv2.
        CheckpointError: weights, processor or tokenizer that cannot be loaded or fetched.
    """
    parsed, source = _source(spec)
    try:
        import transformers
    except ImportError:
        raise ConfigError(
            f"--detector {spec} needs the transformers library: {_EXTRA_HINT}"
        ) from None
    try:
        config = transformers.AutoConfig.from_pretrained(source)
        class_name = OWL_MODEL_TYPES.get(config.model_type)
        if class_name is None:
            raise ConfigError(
                f"--detector {spec} is a {config.model_type!r} model; hf: detectors are "
                "OWL-ViT ('owlvit') and OWLv2 ('owlv2')"
            )
        model = getattr(transformers, class_name).from_pretrained(source)
        processor = transformers.AutoProcessor.from_pretrained(source)
    except OvdetError:
        raise
    except (OSError, ValueError, RuntimeError, KeyError, ImportError, TypeError) as e:
        raise CheckpointError(f"cannot load --detector {spec}: {_first_line(e)}") from e
    model = model.float().to(device).eval().requires_grad_(False)
    logger.info("Loaded %s (%s, query dim %d)", spec, class_name, config.text_config.hidden_size)
    return OwlModel(parsed, model, processor)

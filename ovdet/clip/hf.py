"""The Hugging Face transformers backend (``hf:PATH_OR_HUB_ID``): CLIP and SigLIP.

The folder (or hub repository) holds what ``save_pretrained`` writes for a ``CLIPModel`` or
``SiglipModel``, its tokenizer, and optionally ``preprocessor_config.json`` (for ``image_mean``
and ``image_std``; without it, OpenAI's CLIP statistics or SigLIP's 0.5 are used).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from ovdet.clip.spec import ClipSpec, hf_embed_dim
from ovdet.utils.errors import CheckpointError, ConfigError, OvdetError

__all__ = ["HfClip", "HfImageTower", "load_hf_clip", "pooled_features"]

logger = logging.getLogger(__name__)

_OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
_OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
_DEFAULT_NORM = {"clip": (_OPENAI_MEAN, _OPENAI_STD), "siglip": ((0.5,) * 3, (0.5,) * 3)}
_VISION_PREFIXES = ("vision", "visual")  # CLIP: vision_model, visual_projection


def pooled_features(output: Any) -> torch.Tensor:
    """The embeddings of ``get_text_features``/``get_image_features``, whatever their form.

    transformers 4.x returns a Tensor[N, D]; 5.x a ``BaseModelOutputWithPooling`` whose
    ``pooler_output`` holds them (a tuple, ``(last_hidden_state, pooler_output, ...)``, with
    ``return_dict=False``).
    """
    if isinstance(output, torch.Tensor):
        return output
    pooled = getattr(output, "pooler_output", None)
    if isinstance(pooled, torch.Tensor):
        return pooled
    if isinstance(output, (tuple, list)) and len(output) > 1:
        return output[1]
    raise TypeError(f"cannot find embeddings in a {type(output).__name__}")


class HfImageTower(nn.Module):
    """The image tower of a transformers CLIP/SigLIP model as one module.

    Registers only the model's vision submodules (``vision_model``, ``visual_projection``), so
    that ``.to(device)`` moves the image tower and leaves the text tower where it is; the
    forward pass is the model's own ``get_image_features``.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        object.__setattr__(self, "_model", model)  # not a submodule: keeps the text tower out
        for name, child in model.named_children():
            if name.startswith(_VISION_PREFIXES):
                self.add_module(name, child)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalised Tensor[B, 3, S, S] -> Tensor[B, D], float32, not normalised."""
        output = self._model.get_image_features(pixel_values=pixels)
        return pooled_features(output).float()


@dataclass
class HfClip:
    """A transformers CLIP or SigLIP model, its tokenizer and its image normalisation.

    Satisfies :class:`~ovdet.clip.ClipBackend`.

    Attributes:
        spec: what was loaded (``hf:PATH_OR_HUB_ID``).
        model: the ``CLIPModel``/``SiglipModel``, float32, eval mode, parameters frozen.
        tokenizer: the transformers tokenizer.
        image_size: the square input side of the image tower.
        mean, std: per-channel normalisation of the image tower (RGB, inputs in [0, 1]).
        context_length: the text tower's maximum number of tokens.
        image_encoder: the model's image tower (:class:`HfImageTower`).
    """

    spec: ClipSpec
    model: nn.Module
    tokenizer: Any
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    context_length: int
    image_encoder: HfImageTower

    @property
    def model_type(self) -> str:
        """``"clip"`` or ``"siglip"``."""
        return self.model.config.model_type

    @property
    def model_id(self) -> str:
        return self.spec.model

    @property
    def embed_dim(self) -> int:
        return hf_embed_dim(self.model.config.to_dict(), str(self.spec))

    def weights_digest(self) -> str:
        return self.spec.weights_digest()

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """The text tower's inputs for ``N`` strings (truncated to ``context_length``).

        CLIP pads to the longest prompt and passes the attention mask (its causal mask makes the
        padding irrelevant); SigLIP pads to ``context_length`` and passes no mask, as trained.

        Returns:
            ``{"input_ids": LongTensor[N, L]}``, plus ``"attention_mask"`` for CLIP.
        """
        siglip = self.model_type == "siglip"
        batch = self.tokenizer(
            list(texts),
            padding="max_length" if siglip else True,
            truncation=True,
            max_length=self.context_length,
            return_tensors="pt",
        )
        keys = ("input_ids",) if siglip else ("input_ids", "attention_mask")
        return {k: batch[k] for k in keys if k in batch}

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """``N`` strings -> Tensor[N, D], float32, not normalised (``get_text_features``)."""
        device = self._text_device()
        inputs = {k: v.to(device) for k, v in self.tokenize(texts).items()}
        return pooled_features(self.model.get_text_features(**inputs)).float()

    @torch.no_grad()
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised Tensor[B, 3, S, S] -> Tensor[B, D], float32, not normalised."""
        return self.image_encoder(images)

    def num_tokens(self, text: str) -> int | None:
        return len(self.tokenizer(text, truncation=False, verbose=False)["input_ids"])

    def _text_device(self) -> torch.device:
        for name, p in self.model.named_parameters():
            if not name.startswith(_VISION_PREFIXES):
                return p.device
        return torch.device("cpu")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


def _normalisation(source: str, folder: Path | None, model_type: str) -> tuple[tuple, tuple]:
    mean, std = _DEFAULT_NORM[model_type]
    try:
        if folder is not None:
            path = folder / "preprocessor_config.json"
            if not path.is_file():
                return mean, std
        else:
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(source, "preprocessor_config.json"))
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except Exception as e:  # an optional file: any failure falls back to the defaults
        logger.warning("No image normalisation for CLIP %s (%s); using defaults", source, e)
        return mean, std
    mean, std = cfg.get("image_mean", mean), cfg.get("image_std", std)
    if isinstance(mean, (int, float)):
        mean = (mean,) * 3
    if isinstance(std, (int, float)):
        std = (std,) * 3
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def load_hf_clip(spec: ClipSpec, device: str | torch.device = "cpu") -> HfClip:
    """Load a frozen transformers CLIP/SigLIP (see :func:`ovdet.clip.load_clip`).

    Raises:
        ConfigError: a missing folder, a folder without ``config.json``, a model type other than
            CLIP/SigLIP, or transformers not installed.
        CheckpointError: weights or tokenizer that cannot be loaded (or fetched from the hub).
    """
    folder = spec.hf_local_dir  # ConfigError for a missing folder
    source = str(folder) if folder is not None else spec.hf_name
    if folder is not None and not (folder / "config.json").is_file():
        raise ConfigError(f"CLIP folder {folder} has no config.json (write it by save_pretrained)")
    try:
        import transformers
    except ImportError as e:
        raise ConfigError(f"CLIP spec {spec} needs transformers: pip install transformers") from e
    try:
        config = transformers.AutoConfig.from_pretrained(source)
        model_cls = {"clip": transformers.CLIPModel, "siglip": transformers.SiglipModel}.get(
            config.model_type
        )
        if model_cls is None:
            hf_embed_dim(config.to_dict(), str(spec))  # raises the ConfigError
        model = model_cls.from_pretrained(source)
        tokenizer = transformers.AutoTokenizer.from_pretrained(source)
    except OvdetError:
        raise
    except (OSError, ValueError, RuntimeError, KeyError, ImportError, TypeError) as e:
        raise CheckpointError(f"cannot load CLIP {spec}: {_first_line(e)}") from e
    if getattr(tokenizer, "pad_token", None) is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = model.float().to(device).eval().requires_grad_(False)
    size = model.config.vision_config.image_size
    size = int(size[0] if isinstance(size, (tuple, list)) else size)
    mean, std = _normalisation(source, folder, model.config.model_type)
    context_length = int(model.config.text_config.max_position_embeddings)
    clip = HfClip(spec, model, tokenizer, size, mean, std, context_length, HfImageTower(model))
    logger.info("Loaded CLIP %s (embed dim %d, input %d px)", spec, clip.embed_dim, size)
    return clip

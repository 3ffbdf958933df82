"""The open_clip backend: :class:`LoadedClip` and :func:`load_open_clip`."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from ovdet.clip.spec import ClipSpec
from ovdet.utils.errors import CheckpointError, ConfigError

__all__ = ["LoadedClip", "load_open_clip"]

logger = logging.getLogger(__name__)


@dataclass
class LoadedClip:
    """An open_clip CLIP model, its tokenizer and its image normalisation.

    Satisfies :class:`~ovdet.clip.ClipBackend`.

    Attributes:
        spec: what was loaded.
        model: the open_clip model in eval mode, parameters frozen.
        tokenizer: callable ``list[str] -> LongTensor[N, context_length]``.
        image_size: the square input side of the image tower.
        mean, std: per-channel normalisation of the image tower (RGB, inputs in [0, 1]).
    """

    spec: ClipSpec
    model: nn.Module
    tokenizer: Callable
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def model_id(self) -> str:
        return self.spec.model

    @property
    def embed_dim(self) -> int:
        return self.spec.embed_dim

    @property
    def context_length(self) -> int:
        return int(getattr(self.tokenizer, "context_length", 77))

    @property
    def image_encoder(self) -> nn.Module:
        """``model.visual``: normalised Tensor[B, 3, S, S] -> Tensor[B, D]."""
        return self.model.visual

    def weights_digest(self) -> str:
        """The spec's digest, or one of the loaded weights for randomly initialised models."""
        digest = self.spec.weights_digest()
        if digest is not None:
            return digest
        h = hashlib.sha256()
        for name, tensor in sorted(self.model.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return "state:" + h.hexdigest()

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """``N`` strings -> Tensor[N, D], float32, not normalised."""
        tokens = self.tokenizer(list(texts)).to(self._device())
        return self.model.encode_text(tokens).float()

    @torch.no_grad()
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised Tensor[B, 3, S, S] -> Tensor[B, D], float32, not normalised."""
        return self.model.encode_image(images).float()

    def num_tokens(self, text: str) -> int | None:
        encode = getattr(self.tokenizer, "encode", None)
        return None if encode is None else len(encode(text)) + 2  # + start and end tokens


def load_open_clip(spec: ClipSpec, device: str | torch.device = "cpu") -> LoadedClip:
    """Load a frozen open_clip model (see :func:`ovdet.clip.load_clip`)."""
    import open_clip

    spec.model_config()  # validates the model name before any download
    if spec.local_dir is not None and not spec.local_dir.is_dir():
        raise ConfigError(f"CLIP model folder {spec.local_dir} does not exist")
    if spec.weights_is_file and not Path(spec.weights).is_file():
        raise CheckpointError(f"CLIP weights file {spec.weights} does not exist")
    # With a schema, open_clip ignores `pretrained`; custom weights are loaded afterwards.
    pretrained = None if spec.local_dir is not None else spec.weights
    try:
        # Randomly initialised models are seeded, so that two loads give the same weights (and
        # the same text embeddings): a model without weights is still reproducible.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model, _, preprocess = open_clip.create_model_and_transforms(
                spec.model, pretrained=pretrained, device=device
            )
        if spec.local_dir is not None and spec.weights is not None:
            open_clip.load_checkpoint(model, spec.weights, device=device)
    except RuntimeError as e:
        if "Error(s) in loading state_dict" in str(e) or "size mismatch" in str(e):
            raise CheckpointError(
                f"CLIP weights {spec.weights} do not fit model {spec.model}: "
                f"{str(e).splitlines()[0]}"
            ) from e
        raise CheckpointError(f"cannot load CLIP {spec}: {e}") from e
    except (OSError, ValueError) as e:
        raise CheckpointError(
            f"cannot load CLIP {spec}: {e}. Without internet, pass a local checkpoint file "
            "('MODEL:/path/to/weights.pt')."
        ) from e
    model.eval().requires_grad_(False)
    tokenizer = open_clip.get_tokenizer(spec.model)
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    mean = getattr(model.visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN
    std = getattr(model.visual, "image_std", None) or open_clip.OPENAI_DATASET_STD
    logger.info("Loaded CLIP %s (embed dim %d, input %d px)", spec, spec.embed_dim, size)
    return LoadedClip(spec, model, tokenizer, int(size), tuple(mean), tuple(std))

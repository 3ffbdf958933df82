"""The protocol every CLIP backend satisfies, and :func:`load_clip`, which picks the backend."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, Sequence, runtime_checkable

import torch
from torch import nn

from ovdet.clip.spec import ClipSpec

if TYPE_CHECKING:
    from ovdet.clip.hf import HfClip
    from ovdet.clip.open_clip_backend import LoadedClip

__all__ = ["ClipBackend", "load_clip"]


@runtime_checkable
class ClipBackend(Protocol):
    """A loaded, frozen CLIP: what the text classifier and the region teacher need.

    Both towers return **unnormalised** float32 embeddings; callers L2-normalise.

    Attributes:
        spec: what was loaded.
        model_id: the model's identity in text-cache keys (``str(spec.model)``, so that a
            cache key can be computed from the spec alone, before loading).
        embed_dim: ``D``, the joint embedding size.
        image_size: ``S``, the square input side of the image tower.
        mean, std: per-channel RGB normalisation of the image tower (inputs in [0, 1]).
        context_length: the text tower's token budget (longer prompts are truncated).
        image_encoder: an ``nn.Module`` mapping normalised ``Tensor[B, 3, S, S]`` to
            ``Tensor[B, D]``, owning the image tower's parameters (and no text-tower ones), so
            that moving it moves the image tower.
    """

    spec: ClipSpec
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def model_id(self) -> str: ...

    @property
    def embed_dim(self) -> int: ...

    @property
    def context_length(self) -> int: ...

    @property
    def image_encoder(self) -> nn.Module: ...

    def weights_digest(self) -> str:
        """A digest of the weights (text-cache key); equal to ``spec.weights_digest()`` if set."""
        ...

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """Text embeddings. ``N`` strings -> Tensor[N, D], float32, not normalised, on the
        model's device; prompts over ``context_length`` tokens are truncated."""
        ...

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Image embeddings. Tensor[B, 3, S, S] (already normalised with ``mean``/``std``) ->
        Tensor[B, D], float32, not normalised."""
        ...

    def num_tokens(self, text: str) -> int | None:
        """Tokens of ``text`` with start/end tokens, untruncated (``None`` if unknown)."""
        ...


def load_clip(spec: str | ClipSpec, device: str | torch.device = "cpu") -> LoadedClip | HfClip:
    """Load a frozen CLIP from a spec (see :mod:`ovdet.clip`); the backend follows the spec.

    Raises:
        ConfigError: unknown model name, bad spec, or a missing ``hf:`` folder.
        CheckpointError: missing or incompatible weights, or a model that cannot be fetched.
    """
    spec = ClipSpec.parse(spec) if isinstance(spec, str) else spec
    if spec.backend == "hf":
        from ovdet.clip.hf import load_hf_clip

        return load_hf_clip(spec, device)
    from ovdet.clip.open_clip_backend import load_open_clip

    return load_open_clip(spec, device)

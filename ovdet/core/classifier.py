"""The open-vocabulary classifier: region features scored against CLIP text embeddings."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SCORINGS", "ZeroShotClassifier"]

# How logits become class probabilities (MODEL.OVDET.SCORING).
SCORINGS = ("softmax", "sigmoid")


class ZeroShotClassifier(nn.Module):
    """Projects region features into CLIP's space and scores them against a text matrix.

    ``logits[:, c] = temperature * cos(project(x), text[c])`` for the ``C`` classes of the current
    vocabulary; the last column is the background: the same for a learned background embedding
    (``background="learned"``) or the constant ``background_logit`` (``background="fixed"``).
    The vocabulary is a buffer set by :meth:`set_text_embeddings`, so it can be swapped at any
    time without touching the learned weights (and is not saved in checkpoints).

    Args:
        input_dim: size of the region features (the box head's output).
        embed_dim: CLIP's embedding dimension ``D``.
        temperature: multiplier of the cosine similarities.
        background: ``"learned"`` or ``"fixed"``.
        background_logit: the background logit when ``background="fixed"``.
        scoring: ``"softmax"`` (over the classes and background) or ``"sigmoid"`` (each class
            on its own, the background logit unused: Detic's ``USE_SIGMOID_CE``).
    """

    # Vocabularies of at least this many classes get the in-place softmax of probabilities().
    IN_PLACE_SOFTMAX_MIN_CLASSES = 4096

    def __init__(
        self,
        input_dim: int,
        embed_dim: int,
        temperature: float = 50.0,
        background: str = "learned",
        background_logit: float = 0.0,
        scoring: str = "softmax",
    ) -> None:
        super().__init__()
        if background not in ("learned", "fixed"):
            raise ValueError(f"background must be 'learned' or 'fixed', got {background!r}")
        if scoring not in SCORINGS:
            raise ValueError(f"scoring must be one of {SCORINGS}, got {scoring!r}")
        self.scoring = scoring
        self.embed_dim = embed_dim
        self.temperature = float(temperature)
        self.background = background
        self.background_logit = float(background_logit)
        self.projection = nn.Linear(input_dim, embed_dim)
        if background == "learned":
            self.background_embedding = nn.Parameter(torch.randn(embed_dim) / embed_dim**0.5)
        self.register_buffer("text_embeddings", torch.zeros(0, embed_dim), persistent=False)

    @property
    def num_classes(self) -> int:
        return self.text_embeddings.shape[0]

    def set_text_embeddings(self, text_embeddings: torch.Tensor) -> None:
        """Swap the vocabulary.

        Args:
            text_embeddings: Tensor[C, D], one embedding per class (normalised here).
        """
        if text_embeddings.dim() != 2 or text_embeddings.shape[1] != self.embed_dim:
            raise ValueError(
                f"text embeddings must be [C, {self.embed_dim}], got {tuple(text_embeddings.shape)}"
            )
        device = self.projection.weight.device
        self.text_embeddings = F.normalize(text_embeddings.float(), dim=-1).to(device)

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        """Region embeddings. Tensor[N, F] -> Tensor[N, D], L2-normalised."""
        return F.normalize(self.projection(features).float(), dim=-1)

    def split_logits(self, embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Class and background logits, separately (no ``[N, C + 1]`` concatenation).

        One matrix product scores every class: the temperature scales the ``N x D`` embeddings
        rather than the ``N x C`` product, which matters for vocabularies of 10^4 classes.

        Args:
            embeddings: Tensor[N, D], L2-normalised.

        Returns:
            (Tensor[N, C] class logits, Tensor[N] background logits).
        """
        if self.num_classes == 0:
            raise RuntimeError("no vocabulary set; call set_text_embeddings() first")
        scaled = embeddings * self.temperature
        cls_logits = scaled @ self.text_embeddings.t()
        if self.background == "learned":
            bg = F.normalize(self.background_embedding.float(), dim=0)
            bg_logits = scaled @ bg.to(scaled.dtype)
        else:
            bg_logits = embeddings.new_full((embeddings.shape[0],), self.background_logit)
        return cls_logits, bg_logits

    def logits_from_embeddings(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Tensor[N, D] (normalised) -> logits Tensor[N, C + 1], background last."""
        cls_logits, bg_logits = self.split_logits(embeddings)
        return torch.cat([cls_logits, bg_logits[:, None].to(cls_logits.dtype)], dim=1)

    @torch.no_grad()
    def probabilities(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Class probabilities for inference: softmax over the ``C`` classes and background,
        background column dropped, float32; or, with ``scoring="sigmoid"``, the sigmoid of each
        class logit. No gradient.

        Equal to ``softmax(logits_from_embeddings(e), -1)[:, :-1]``. For small vocabularies the
        background is one more row of the text matrix, so one product and the fused softmax
        kernel do it all. From ``IN_PLACE_SOFTMAX_MIN_CLASSES`` classes on (LVIS-scale and
        larger vocabularies), the softmax runs in place in the ``[N, C]`` product instead: no
        ``[N, C + 1]`` concatenation or second ``[N, C + 1]`` output (freshly allocated, hence
        page-faulted, buffers of tens of MB), and no product with an odd ``C + 1`` columns,
        which BLAS runs ~30% slower than with ``C`` (docs/speed.md#profiles-and-fixes).

        Args:
            embeddings: Tensor[N, D], L2-normalised.

        Returns:
            Tensor[N, C]; a view that skips the background column, or a contiguous tensor.
        """
        if self.scoring == "sigmoid":
            return self.split_logits(embeddings)[0].float().sigmoid_()
        if self.num_classes < self.IN_PLACE_SOFTMAX_MIN_CLASSES:
            return self._probabilities_fused(embeddings)
        cls_logits, bg_logits = self.split_logits(embeddings)
        bg_logits = bg_logits.float()
        probs = cls_logits.float()  # no copy for float32; under float16 autocast, one
        top = torch.maximum(probs.amax(dim=1), bg_logits)
        probs.sub_(top[:, None]).exp_()
        denominator = probs.sum(dim=1).add_((bg_logits - top).exp_())
        return probs.div_(denominator[:, None])

    def _probabilities_fused(self, embeddings: torch.Tensor) -> torch.Tensor:
        """probabilities() for small products: the background is one more row of the text
        matrix, so one product gives the ``[N, C + 1]`` logits for the fused softmax kernel."""
        if self.num_classes == 0:
            raise RuntimeError("no vocabulary set; call set_text_embeddings() first")
        learned = self.background == "learned"
        bg = (
            F.normalize(self.background_embedding.float(), dim=0)
            if learned
            else self.text_embeddings.new_zeros(self.embed_dim)
        )
        weight = torch.cat([self.text_embeddings, bg[None]])
        logits = (embeddings * self.temperature) @ weight.t()
        if not learned:
            logits[:, -1] = self.background_logit
        return F.softmax(logits.float(), dim=-1)[:, :-1]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Tensor[N, F] region features -> logits Tensor[N, C + 1], background last."""
        return self.logits_from_embeddings(self.embed(features))

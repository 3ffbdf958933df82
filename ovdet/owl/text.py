"""The text tower of an OWL-ViT / OWLv2 model as a CLIP backend of ovdet's text cache."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ovdet.clip.hf import pooled_features
from ovdet.clip.spec import ClipSpec
from ovdet.owl.loading import OwlModel

__all__ = ["OwlTextTower"]


class OwlTextTower:
    """The text queries of an OWL model, for :class:`~ovdet.clip.text_classifier.
    TextClassifierBuilder` (templates, synonyms, the on-disk cache).

    Satisfies the text side of :class:`~ovdet.clip.ClipBackend`: prompts are tokenized as the
    model's processor does (padded to its ``max_length`` tokens) and embedded by the model's
    ``get_text_features``, the query embeddings its detection head compares regions with. The
    cache key holds ``owl:<spec>`` and the digest of the folder's weight files (``hub:ID`` for a
    hub model), so that OWL's queries never mix with a CLIP's.

    Args:
        owl: the loaded model.
    """

    def __init__(self, owl: OwlModel) -> None:
        self.owl = owl
        self.spec: ClipSpec = owl.spec
        tokenizer = owl.processor.tokenizer
        positions = int(owl.model.config.text_config.max_position_embeddings)
        #: the processor's padded length (16 for Google's models); longer prompts are truncated
        self.context_length = min(int(tokenizer.model_max_length), positions)

    @property
    def model_id(self) -> str:
        return f"owl:{self.spec.model}"

    @property
    def embed_dim(self) -> int:
        return self.owl.embed_dim

    @property
    def image_encoder(self) -> nn.Module:
        raise NotImplementedError("OWL's image tower is its detector, not a crop encoder")

    def weights_digest(self) -> str:
        return self.spec.weights_digest()

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """``{"input_ids", "attention_mask"}``: LongTensor[N, L], as the processor pads them."""
        batch = self.owl.processor.tokenizer(
            list(texts), padding="max_length", truncation=True, max_length=self.context_length,
            return_tensors="pt",
        )  # fmt: skip
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """``N`` prompts -> Tensor[N, D], float32, not normalised (the query embeddings)."""
        device = self.owl.device
        inputs = {k: v.to(device) for k, v in self.tokenize(texts).items()}
        return pooled_features(self.owl.base_model.get_text_features(**inputs)).float()

    def num_tokens(self, text: str) -> int | None:
        tokenizer = self.owl.processor.tokenizer
        return len(tokenizer(text, truncation=False, verbose=False)["input_ids"])

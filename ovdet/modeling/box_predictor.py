"""Box predictor: zero-shot classification and class-agnostic box regression."""

from __future__ import annotations

import torch
from torch import nn

from ovdet.modeling.zero_shot_classifier import ZeroShotClassifier

__all__ = ["OpenVocabularyBoxPredictor"]


class OpenVocabularyBoxPredictor(nn.Module):
    """Replaces torchvision's ``FastRCNNPredictor``: text-based classes, one box per region.

    Args:
        input_dim: size of the box head's output features.
        classifier: the zero-shot classifier.
    """

    def __init__(self, input_dim: int, classifier: ZeroShotClassifier) -> None:
        super().__init__()
        self.classifier = classifier
        self.bbox_pred = nn.Linear(input_dim, 4)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.bbox_pred.bias)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Tensor[N, F] -> (logits [N, C + 1], box deltas [N, 4], embeddings [N, D])."""
        embeddings = self.classifier.embed(features)
        logits = self.classifier.logits_from_embeddings(embeddings)
        return logits, self.bbox_pred(features), embeddings

    @torch.no_grad()
    def predict(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Inference: Tensor[N, F] -> (class probabilities [N, C] without background, box
        deltas [N, 4], embeddings [N, D]); see :meth:`ZeroShotClassifier.probabilities`."""
        embeddings = self.classifier.embed(features)
        probs = self.classifier.probabilities(embeddings)
        return probs, self.bbox_pred(features), embeddings

"""The vocabulary interface both open-vocabulary ROI heads of the plugin share (the FPN heads of
:mod:`ovdet.d2.roi_heads` and the C4 heads of :mod:`ovdet.d2.res5_roi_heads`)."""

from __future__ import annotations

import torch

from ovdet.core.head import OpenVocabularyHead

__all__ = ["VocabularyROIHeadsMixin"]


class VocabularyROIHeadsMixin:
    """For a detectron2 ROI heads class whose ``box_predictor`` is
    :class:`~ovdet.d2.output_layers.OpenVocabularyFastRCNNOutputLayers`: the core head, and the
    vocabulary swapped at run time with ``num_classes`` kept in step."""

    box_predictor: torch.nn.Module
    num_classes: int

    @property
    def head(self) -> OpenVocabularyHead:
        return self.box_predictor.head

    def set_vocabulary(
        self, text_embeddings: torch.Tensor, is_novel: torch.Tensor | None = None
    ) -> None:
        """Swap the classes: Tensor[C, D] text embeddings, optional BoolTensor[C] novelty."""
        self.box_predictor.set_vocabulary(text_embeddings, is_novel)
        self.num_classes = self.head.num_classes

    def get_vocabulary(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The current (Tensor[C, D] text embeddings, BoolTensor[C] novelty)."""
        return self.head.get_vocabulary()

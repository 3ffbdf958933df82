"""OWL's detection head behind the vocabulary and threshold interface of ovdet's own head."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.ops import box_convert, clip_boxes_to_image, nms

from ovdet.core.postprocessing import ScoreThresholdMixin
from ovdet.owl.loading import OwlModel
from ovdet.utils.errors import ConfigError

__all__ = ["OwlPatchOutputs", "OwlQueryHead"]


@dataclass
class OwlPatchOutputs:
    """What OWL predicts for each of the ``P`` patches of ``B`` images (one per patch).

    Attributes:
        boxes: Tensor[B, P, 4], (x1, y1, x2, y2) in [0, 1] of the model's square input.
        logits: Tensor[B, P, C], the patch's logit per query.
        class_embeds: Tensor[B, P, D], L2-normalised region embeddings (in the queries' space).
    """

    boxes: torch.Tensor
    logits: torch.Tensor
    class_embeds: torch.Tensor


class OwlQueryHead(ScoreThresholdMixin):
    """The queries (vocabulary), score threshold and per-patch outputs of an OWL model.

    Offers what code above the engines asks of :class:`~ovdet.core.OpenVocabularyHead`
    (``set_vocabulary``, ``get_vocabulary``, ``embed_dim``, ``score_thresh``,
    ``score_threshold``, ``enable_clip_rescoring``); the scoring is OWL's own
    (``class_predictor``, ``box_predictor`` of the transformers model).

    Args:
        owl: the loaded model.
        score_thresh: a detection must score strictly above it.
    """

    has_image_head = False
    clip_teacher = None

    def __init__(self, owl: OwlModel, score_thresh: float) -> None:
        self.owl = owl
        self.score_thresh = float(score_thresh)
        self._queries = torch.zeros(0, owl.embed_dim)
        self._is_novel = torch.zeros(0, dtype=torch.bool)

    @property
    def embed_dim(self) -> int:
        return self.owl.embed_dim

    @property
    def num_classes(self) -> int:
        return len(self._queries)

    def set_vocabulary(self, queries: torch.Tensor, is_novel: torch.Tensor | None = None) -> None:
        """The classes to find: Tensor[C, D] query embeddings (text or image queries).

        Args:
            queries: one embedding per class, normalised here.
            is_novel: BoolTensor[C] (OWL's training vocabulary is not known: ``None``, none).
        """
        if queries.ndim != 2 or queries.shape[1] != self.embed_dim:
            raise ConfigError(
                f"OWL queries must be [C, {self.embed_dim}], got {list(queries.shape)}"
            )
        self._queries = F.normalize(queries.float(), dim=-1).to(self.owl.device)
        if is_novel is None:
            is_novel = torch.zeros(len(queries), dtype=torch.bool)
        self._is_novel = is_novel.clone()

    def get_vocabulary(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A copy of the current (Tensor[C, D] queries, BoolTensor[C] novelty)."""
        return self._queries.clone(), self._is_novel.clone()

    def enable_clip_rescoring(self, settings) -> None:
        """OWL scores its own regions: turning CLIP rescoring on is refused (off is a no-op)."""
        if settings is not None:
            raise ConfigError(
                "CLIP rescoring combines ovdet's detector with CLIP crops; an OWL detector "
                "(--detector hf:...) scores its regions itself"
            )

    # ------------------------------------------------------------------ inference

    @torch.no_grad()
    def patch_features(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Processed images Tensor[B, 3, S, S] -> (Tensor[B, P, W] patch features,
        Tensor[B, h, w, W] feature map), as ``image_embedder`` gives them."""
        feature_map = self.owl.model.image_embedder(pixel_values=pixel_values)[0]
        b, h, w, width = feature_map.shape
        return feature_map.reshape(b, h * w, width), feature_map

    @torch.no_grad()
    def forward_patches(
        self, features: torch.Tensor, feature_map: torch.Tensor, queries: torch.Tensor
    ) -> OwlPatchOutputs:
        """Per-patch boxes, logits against ``queries`` Tensor[C, D], and region embeddings."""
        model = self.owl.model
        batch = features.shape[0]
        query = queries.to(features.device)[None].expand(batch, -1, -1)
        logits, class_embeds = model.class_predictor(features, query)
        boxes = box_convert(model.box_predictor(features, feature_map), "cxcywh", "xyxy")
        return OwlPatchOutputs(boxes, logits.float(), F.normalize(class_embeds, dim=-1))

    def select(
        self,
        outputs: OwlPatchOutputs,
        index: int,
        frame: tuple[float, float],
        image_size: tuple[int, int],
        max_detections: int,
        nms_thresh: float | None = None,
    ) -> dict[str, torch.Tensor]:
        """One image's detections: each patch labelled with its best query, scored by the
        sigmoid of that logit; kept where it scores strictly above the threshold (then
        class-agnostic NMS at ``nms_thresh`` IoU, if given) and its box, clipped to the image, is
        not empty (OWLv2 predicts boxes in its padding too); best first, at most
        ``max_detections``.

        Args:
            frame: (width, height) in pixels that the model's [0, 1] box coordinates span.
            image_size: (width, height) of the image the boxes are clipped to.

        Returns:
            ``boxes`` Tensor[K, 4] (x1, y1, x2, y2 pixels), ``scores`` [K], ``labels`` [K],
            ``embeddings`` [K, D].
        """
        best = outputs.logits[index].max(dim=-1)
        scores = torch.sigmoid(best.values)
        boxes = outputs.boxes[index] * torch.tensor([*frame, *frame], device=scores.device)
        keep = torch.nonzero(scores > self.score_thresh).flatten()
        if nms_thresh is not None:  # on the boxes as predicted, as transformers does
            keep = keep[nms(boxes[keep], scores[keep], nms_thresh)]
        boxes = clip_boxes_to_image(boxes, (image_size[1], image_size[0]))
        keep = keep[(boxes[keep, 2] > boxes[keep, 0]) & (boxes[keep, 3] > boxes[keep, 1])]
        keep = keep[torch.argsort(scores[keep], descending=True, stable=True)][:max_detections]
        return {
            "boxes": boxes[keep].float().cpu(),
            "scores": scores[keep].float().cpu(),
            "labels": best.indices[keep].cpu(),
            "embeddings": outputs.class_embeds[index][keep].float().cpu(),
        }

"""The open-vocabulary box head: everything about classes that the engines share.

Both engines (the torchvision engine in :mod:`ovdet.tv` and the detectron2 plugin in
:mod:`ovdet.d2`) pool region features their own way, decode boxes with their own box coder and
hand the results to one :class:`OpenVocabularyHead`, which owns:

* the current vocabulary: Tensor[C, D] text embeddings and BoolTensor[C] novelty (set with
  :func:`~ovdet.core.novel_classes.novel_class_mask`, the one name-matching rule);
* the zero-shot classifier and the class-agnostic box regressor;
* the open-vocabulary losses (ViLD-text, ViLD-image) and which regions are distilled, into the
  classifier's projection or ViLD's separate image head;
* the ViLD-ensemble with the CLIP region teacher;
* post-processing (threshold, candidate cap, per-class NMS) with one meaning of the score
  threshold: a (region, class) pair is kept when its score is strictly above it, before NMS.

The engines adapt it and never re-decide any of the above.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ovdet.core.classifier import ZeroShotClassifier
from ovdet.core.losses import vild_image_loss, vild_text_loss
from ovdet.core.postprocessing import select_detections
from ovdet.core.score_fusion import geometric_mean_scores
from ovdet.core.teacher import ClipRegionTeacher
from ovdet.core.weak_supervision import (
    TrainingVocabulary,
    WeakSupervisionSettings,
    caption_loss,
    federated_classes,
    image_label_loss,
)
from ovdet.utils.errors import ConfigError

__all__ = ["DISTILL_MODES", "ClipRescoringSettings", "OpenVocabularyHead", "get_head"]

DISTILL_MODES = ("none", "online", "offline")

# Box-head features of given boxes of every image: list of Tensor[N_i, 4] -> Tensor[sum N_i, F]
# (the engine's RoI pooling + box head); the head embeds them with the projection it needs.
BoxFeaturizer = Callable[[Sequence[torch.Tensor]], torch.Tensor]


@dataclass(frozen=True)
class ClipRescoringSettings:
    """ViLD-ensemble at inference (``MODEL.OVDET.CLIP_RESCORING``).

    Attributes:
        base_weight: detector weight for classes of the training vocabulary.
        novel_weight: detector weight for the other classes.
        clip_temperature: temperature of CLIP's softmax over the vocabulary.
        num_proposals: regions per image rescored by CLIP (the top ones by detector score).
    """

    base_weight: float = 0.67
    novel_weight: float = 0.33
    clip_temperature: float = 100.0
    num_proposals: int = 100

    @classmethod
    def from_config(cls, cfg) -> ClipRescoringSettings:
        e = cfg.MODEL.OVDET.CLIP_RESCORING
        return cls(e.BASE_WEIGHT, e.NOVEL_WEIGHT, e.CLIP_TEMPERATURE, e.NUM_PROPOSALS)


class OpenVocabularyHead(nn.Module):
    """Zero-shot classification, class-agnostic box deltas, open-vocabulary losses, detection.

    Args:
        input_dim: size of the box head's output features ``F``.
        embed_dim: CLIP's embedding dimension ``D``.
        temperature, background, background_logit: see
            :class:`~ovdet.core.classifier.ZeroShotClassifier`.
        text_loss_weight: weight of ``loss_text`` (ViLD-text).
        distill_mode: ``"none"``, ``"online"`` (CLIP teacher on the top proposals) or
            ``"offline"`` (precomputed regions and embeddings).
        distill_weight: weight of ``loss_image`` (ViLD-image).
        distill_num_proposals: proposals distilled per image in online mode.
        score_thresh: detections must score strictly above it.
        nms_thresh: per-class NMS IoU threshold.
        detections_per_img: at most this many detections per image.
        max_candidates: (region, class) pairs kept for NMS, the highest-scoring; default
            ``max(1000, 10 * detections_per_img)``.
        weak: the weak-supervision losses (image labels, captions, federated), see
            :class:`~ovdet.core.weak_supervision.WeakSupervisionSettings`.
        image_head: ViLD-image trains its own projection (ViLD's separate ViLD-text and
            ViLD-image heads) instead of the classifier's, and inference combines the two
            heads' class probabilities as the ViLD-ensemble does (``image_head_weights``).
        image_head_weights: (base, novel) weights of the classifier's probabilities in the
            weighted geometric mean with the image head's (ViLD: 2/3 and 1/3).
        image_head_temperature: temperature of the image head's softmax over the vocabulary
            (it mimics CLIP's image embeddings: CLIP's own, 100).
    """

    def __init__(
        self,
        input_dim: int,
        embed_dim: int,
        *,
        temperature: float = 50.0,
        background: str = "learned",
        background_logit: float = 0.0,
        text_loss_weight: float = 1.0,
        distill_mode: str = "none",
        distill_weight: float = 0.5,
        distill_num_proposals: int = 32,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.5,
        detections_per_img: int = 100,
        max_candidates: int | None = None,
        weak: WeakSupervisionSettings | None = None,
        image_head: bool = False,
        image_head_weights: tuple[float, float] = (0.67, 0.33),
        image_head_temperature: float = 100.0,
    ) -> None:
        super().__init__()
        if distill_mode not in DISTILL_MODES:
            raise ConfigError(
                f"MODEL.OVDET.DISTILL.MODE must be one of {DISTILL_MODES}, got {distill_mode!r}"
            )
        self.classifier = ZeroShotClassifier(
            input_dim, embed_dim, temperature, background, background_logit
        )
        self.image_projection = nn.Linear(input_dim, embed_dim) if image_head else None
        self.image_head_weights = tuple(float(w) for w in image_head_weights)
        self.image_head_temperature = float(image_head_temperature)
        self.bbox_pred = nn.Linear(input_dim, 4)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.bbox_pred.bias)
        self.register_buffer("is_novel_class", torch.zeros(0, dtype=torch.bool), persistent=False)
        self.text_loss_weight = float(text_loss_weight)
        self.distill_mode = distill_mode
        self.distill_weight = float(distill_weight)
        self.distill_num_proposals = int(distill_num_proposals)
        self.score_thresh = float(score_thresh)
        self.nms_thresh = float(nms_thresh)
        self.detections_per_img = int(detections_per_img)
        self.max_candidates = int(max_candidates or max(1000, 10 * self.detections_per_img))
        self.ensemble: ClipRescoringSettings | None = None
        self.weak = weak or WeakSupervisionSettings()
        # Federated loss: Tensor[C] sampling weights of the current vocabulary (or None).
        self.class_sampling_weights: torch.Tensor | None = None
        # Frozen, loaded separately, never saved: not a registered submodule.
        object.__setattr__(self, "clip_teacher", None)

    @classmethod
    def from_config(cls, cfg, input_dim: int, embed_dim: int | None = None) -> OpenVocabularyHead:
        """From ``MODEL.OVDET``, ``MODEL.ROI_HEADS`` and ``TEST`` (the same keys in both
        engines). ``embed_dim`` defaults to ``MODEL.OVDET.EMBED_DIM`` or CLIP's own."""
        from ovdet.clip import ClipSpec

        ov = cfg.MODEL.OVDET
        return cls(
            input_dim,
            embed_dim or ov.EMBED_DIM or ClipSpec.parse(ov.CLIP).embed_dim,
            temperature=ov.TEMPERATURE,
            background=ov.BACKGROUND,
            background_logit=ov.BACKGROUND_LOGIT,
            text_loss_weight=ov.TEXT_LOSS_WEIGHT,
            distill_mode=ov.DISTILL.MODE,
            distill_weight=ov.DISTILL.WEIGHT,
            distill_num_proposals=ov.DISTILL.NUM_PROPOSALS,
            score_thresh=cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST,
            nms_thresh=cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST,
            detections_per_img=cfg.TEST.DETECTIONS_PER_IMAGE,
            weak=WeakSupervisionSettings.from_config(cfg),
            image_head=ov.DISTILL.IMAGE_HEAD,
            image_head_weights=(ov.CLIP_RESCORING.BASE_WEIGHT, ov.CLIP_RESCORING.NOVEL_WEIGHT),
            image_head_temperature=ov.CLIP_RESCORING.CLIP_TEMPERATURE,
        )

    # ------------------------------------------------------------------ vocabulary

    @property
    def embed_dim(self) -> int:
        return self.classifier.embed_dim

    @property
    def num_classes(self) -> int:
        return self.classifier.num_classes

    @property
    def text_embeddings(self) -> torch.Tensor:
        """The current vocabulary: Tensor[C, D], L2-normalised."""
        return self.classifier.text_embeddings

    def set_vocabulary(
        self, text_embeddings: torch.Tensor, is_novel: torch.Tensor | None = None
    ) -> None:
        """Swap the classes, learned weights untouched.

        Args:
            text_embeddings: Tensor[C, D], one CLIP text embedding per class.
            is_novel: BoolTensor[C], classes outside the training vocabulary (see
                :func:`~ovdet.core.novel_classes.novel_class_mask`); ``None`` means none.
        """
        self.classifier.set_text_embeddings(text_embeddings)
        num_classes = self.classifier.num_classes
        if is_novel is None:
            is_novel = torch.zeros(num_classes, dtype=torch.bool)
        if tuple(is_novel.shape) != (num_classes,):
            raise ValueError(f"is_novel must be [{num_classes}], got {tuple(is_novel.shape)}")
        self.is_novel_class = is_novel.to(device=self.bbox_pred.weight.device, dtype=torch.bool)

    def get_vocabulary(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A copy of the current (Tensor[C, D] text embeddings, BoolTensor[C] novelty)."""
        return self.text_embeddings.clone(), self.is_novel_class.clone()

    # ------------------------------------------------------------------ CLIP teacher

    def set_clip_teacher(self, teacher: ClipRegionTeacher | None) -> None:
        """The CLIP region teacher of online distillation and the ensemble (or ``None``)."""
        if teacher is not None:
            teacher.to(self.bbox_pred.weight.device)
        object.__setattr__(self, "clip_teacher", teacher)

    def _teacher(self, device: torch.device) -> ClipRegionTeacher:
        teacher = self.clip_teacher
        if teacher is None:
            raise RuntimeError(
                "online distillation and the ensemble need a CLIP teacher; call set_clip_teacher()"
            )
        if teacher.mean.device != device:
            teacher.to(device)
        return teacher

    def enable_clip_rescoring(self, settings: ClipRescoringSettings | None) -> None:
        """Turn the ViLD-ensemble on (with these settings) or off (``None``)."""
        if settings is not None and self.clip_teacher is None:
            raise RuntimeError("the ensemble needs a CLIP teacher; call set_clip_teacher() first")
        self.ensemble = settings

    def _apply(self, fn, *args, **kwargs):
        out = super()._apply(fn, *args, **kwargs)
        if self.clip_teacher is not None:  # follows the head across devices
            self.clip_teacher._apply(fn, *args, **kwargs)
        return out

    # ------------------------------------------------------------------ forward

    @staticmethod
    def _flat(features: torch.Tensor) -> torch.Tensor:
        return features.flatten(start_dim=1) if features.dim() > 2 else features

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Box-head features Tensor[N, F] -> (logits Tensor[N, C + 1] with the background last,
        box deltas Tensor[N, 4], region embeddings Tensor[N, D])."""
        features = self._flat(features)
        embeddings = self.classifier.embed(features)
        return (
            self.classifier.logits_from_embeddings(embeddings),
            self.bbox_pred(features),
            embeddings,
        )

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        """Region embeddings in CLIP's space. Tensor[N, F] -> Tensor[N, D], L2-normalised."""
        return self.classifier.embed(self._flat(features))

    def distilled_embeddings(self, features: torch.Tensor) -> torch.Tensor:
        """The embeddings ViLD-image distils: the image head's with ``image_head``, else the
        classifier's. Tensor[N, F] -> Tensor[N, D], L2-normalised."""
        if self.image_projection is None:
            return self.embed(features)
        return F.normalize(self.image_projection(self._flat(features)).float(), dim=-1)

    @torch.no_grad()
    def predict(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Inference: Tensor[N, F] -> (class probabilities Tensor[N, C] without background,
        box deltas Tensor[N, 4], region embeddings Tensor[N, D]).

        With ``image_head``, the probabilities are the weighted geometric mean of the
        classifier's and the image head's softmax over the vocabulary (ViLD-ensemble)."""
        features = self._flat(features)
        embeddings = self.classifier.embed(features)
        probs = self.classifier.probabilities(embeddings)
        if self.image_projection is not None:
            logits = (self.image_head_temperature * self.distilled_embeddings(features)) @ (
                self.text_embeddings.t()
            )
            probs = geometric_mean_scores(
                probs, F.softmax(logits, -1), self.is_novel_class, *self.image_head_weights
            )
        return probs, self.bbox_pred(features), embeddings

    # ------------------------------------------------------------------ losses

    def text_loss(self, logits: torch.Tensor, gt_classes: torch.Tensor) -> dict[str, torch.Tensor]:
        """``loss_text``: ViLD-text over the vocabulary and background.

        Args:
            logits: Tensor[N, C + 1] from :meth:`forward`.
            gt_classes: Tensor[N] in ``[0, C]``, ``C`` for background.
        """
        return {"loss_text": self.text_loss_weight * vild_text_loss(logits, gt_classes)}

    @property
    def distills(self) -> bool:
        """Whether training adds ``loss_image``."""
        return self.distill_mode != "none" and self.distill_weight > 0

    @property
    def distills_online(self) -> bool:
        """Whether training runs the CLIP teacher on proposals (``loss_image``, online)."""
        return self.distills and self.distill_mode == "online"

    @property
    def distills_offline(self) -> bool:
        """Whether training needs the precomputed regions (``loss_image``, offline)."""
        return self.distills and self.distill_mode == "offline"

    def needs_images(self, training: bool) -> bool:
        """Whether this pass runs the CLIP teacher, so the engine must pass the images in
        CLIP's RGB [0, 1] view: online distillation in training, the ensemble at inference."""
        return self.distills_online if training else self.ensemble is not None

    def distillation_boxes(self, proposals: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The regions distilled online: the top ``distill_num_proposals`` proposals of each
        image, by RPN objectness (proposals come sorted). list of Tensor[N_i, 4] -> list of
        Tensor[min(N_i, K), 4], detached."""
        return [p[: self.distill_num_proposals].detach() for p in proposals]

    def distillation_loss(
        self,
        box_features: BoxFeaturizer,
        proposals: Sequence[torch.Tensor] | None = None,
        images: torch.Tensor | None = None,
        offline: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> dict[str, torch.Tensor]:
        """``loss_image`` (ViLD-image), or nothing when not distilling.

        Args:
            box_features: the engine's box-head features of given boxes.
            proposals: online mode: per image the RPN proposals Tensor[N_i, 4], best first.
            images: online mode: Tensor[B, 3, H, W], RGB in [0, 1], the boxes' pixel frame.
            offline: offline mode: per image (boxes Tensor[M_i, 4], CLIP embeddings
                Tensor[M_i, D]), precomputed.
        """
        if not self.distills:
            return {}
        if self.distill_mode == "online":
            if proposals is None or images is None:
                raise RuntimeError("online distillation needs the proposals and the images")
            boxes = self.distillation_boxes(proposals)
            targets = self._teacher(images.device)(images, boxes)
        else:
            if offline is None:
                raise RuntimeError(
                    "offline distillation needs the precomputed regions and embeddings; set "
                    "MODEL.OVDET.DISTILL.EMBEDDINGS_FILE"
                )
            boxes = [b for b, _ in offline]
            targets = torch.cat([e for _, e in offline])
        student = self.distilled_embeddings(box_features(boxes))
        return {
            "loss_image": self.distill_weight * vild_image_loss(student, targets.to(student.device))
        }

    # ------------------------------------------------------------------ weak supervision

    def training_vocabulary(
        self, kind: int, box: TrainingVocabulary, weak: TrainingVocabulary
    ) -> TrainingVocabulary:
        """The classifier of a training batch of ``kind`` (0 box, 1 image-labelled), which the
        engine sets (``set_vocabulary``, ``set_class_frequencies``) before the batch.

        Image-labelled batches score ``weak`` (the box classes first, then those only image
        labels name) with its class counts. Box batches score ``weak`` too, its image-label
        classes never positive, with ``self.weak.box_batch_classes == "all"``, else ``box``;
        they need no class counts.
        """
        if kind == 1:
            return weak
        chosen = weak if self.weak.box_batch_classes == "all" else box
        return TrainingVocabulary(chosen.text, chosen.is_novel)

    def set_class_frequencies(self, image_counts: torch.Tensor | None) -> None:
        """Per-class image counts Tensor[C] of the current vocabulary, for the federated loss
        (sampling weight = count ^ ``fed_loss_freq_weight``); ``None`` clears them."""
        if image_counts is None:
            self.class_sampling_weights = None
            return
        if tuple(image_counts.shape) != (self.num_classes,):
            raise ValueError(
                f"class counts must be [{self.num_classes}], got {tuple(image_counts.shape)}"
            )
        self.class_sampling_weights = image_counts.float().clamp(min=0) ** (
            self.weak.fed_loss_freq_weight
        )

    def weak_regions(
        self, proposals: Sequence[torch.Tensor], image_sizes: Sequence[tuple[int, int]]
    ) -> list[torch.Tensor]:
        """The regions of image-labelled images: the top ``weak.num_proposals`` proposals (RPN
        order) and the whole-image box last. list of Tensor[N_i, 4] -> list of
        Tensor[min(N_i, K) + 1, 4], detached."""
        regions = []
        for p, (h, w) in zip(proposals, image_sizes):
            image_box = p.new_tensor([[0.0, 0.0, float(w), float(h)]])
            regions.append(torch.cat([p[: self.weak.num_proposals].detach(), image_box]))
        return regions

    def weak_losses(
        self,
        box_features: BoxFeaturizer,
        proposals: Sequence[torch.Tensor],
        image_sizes: Sequence[tuple[int, int]],
        image_labels: Sequence[torch.Tensor],
        caption_embeddings: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Losses of a batch of image-labelled images (no boxes): ``loss_image_label`` and,
        with ``weak.caption_loss`` and captions, ``loss_caption``.

        Args:
            box_features: the engine's box-head features of given boxes.
            proposals: per image the RPN proposals Tensor[N_i, 4], best first.
            image_sizes: per image (H, W), the proposals' pixel frame.
            image_labels: per image LongTensor[L_i], indices into the current vocabulary.
            caption_embeddings: Tensor[B, D], CLIP text embeddings of one caption per image.
        """
        weak = self.weak
        regions = self.weak_regions(proposals, image_sizes)
        embeddings = self.embed(box_features(regions))
        logits = self.classifier.logits_from_embeddings(embeddings)  # background last
        per_image = logits.split([len(r) for r in regions])
        subsets = None
        if weak.fed_loss:
            if self.class_sampling_weights is None:
                raise RuntimeError("the federated loss needs set_class_frequencies()")
            weights = self.class_sampling_weights.to(logits.device)
            subsets = [
                federated_classes(labels.to(weights.device), weights, weak.fed_loss_num_classes)
                for labels in image_labels
            ]
        loss = image_label_loss(
            per_image, regions, image_labels, weak.image_label_loss, class_subsets=subsets
        )
        losses = {"loss_image_label": weak.image_loss_weight * loss}
        if weak.caption_loss and caption_embeddings is not None:
            ends = torch.tensor([len(r) for r in regions]).cumsum(0) - 1
            image_box_embeddings = embeddings[ends.to(embeddings.device)]
            losses["loss_caption"] = weak.caption_weight * caption_loss(
                image_box_embeddings,
                caption_embeddings.to(embeddings.device),
                self.classifier.temperature,
                weak.negative_caption_weight,
            )
        return losses

    # ------------------------------------------------------------------ inference

    @contextmanager
    def score_threshold(self, score_thresh: float | None) -> Iterator[None]:
        """Use another score threshold inside a ``with`` block (``None``: keep the current)."""
        saved = self.score_thresh
        if score_thresh is not None:
            self.score_thresh = float(score_thresh)
        try:
            yield
        finally:
            self.score_thresh = saved

    @torch.no_grad()
    def detect(
        self,
        boxes: torch.Tensor,
        probs: torch.Tensor,
        embeddings: torch.Tensor,
        image: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """One image's detections.

        With the ensemble on and ``image`` given, the ``num_proposals`` regions with the highest
        class score are rescored by the weighted geometric mean of the detector's and CLIP's
        probabilities (the others are dropped); then :func:`select_detections` thresholds,
        caps and runs per-class NMS.

        Args:
            boxes: Tensor[N, 4], one decoded box per region, clipped to the image.
            probs: Tensor[N, C] class probabilities from :meth:`predict`.
            embeddings: Tensor[N, D] region embeddings from :meth:`predict`.
            image: Tensor[1, 3, H, W], RGB in [0, 1], in the boxes' pixel frame (ensemble only).

        Returns:
            ``boxes`` Tensor[K, 4], ``scores`` Tensor[K], ``labels`` LongTensor[K] (indices
            into the vocabulary), ``region_index`` LongTensor[K] (into the N regions) and
            ``embeddings`` Tensor[K, D]; best first, K <= ``detections_per_img``.
        """
        region_index = torch.arange(boxes.shape[0], device=boxes.device)
        if self.ensemble is not None and image is not None and boxes.shape[0] > 0:
            e = self.ensemble
            keep = probs.max(dim=1).values.topk(min(e.num_proposals, boxes.shape[0])).indices
            boxes, probs, region_index = boxes[keep], probs[keep], region_index[keep]
            crops = self._teacher(image.device)(image, [boxes])
            clip_logits = (e.clip_temperature * crops.float()) @ self.text_embeddings.t()
            probs = geometric_mean_scores(
                probs, F.softmax(clip_logits, -1), self.is_novel_class, e.base_weight,
                e.novel_weight,
            )  # fmt: skip
        index, labels, scores = select_detections(
            boxes, probs, self.score_thresh, self.nms_thresh, self.detections_per_img,
            self.max_candidates,
        )  # fmt: skip
        region_index = region_index[index]
        return {
            "boxes": boxes[index],
            "scores": scores,
            "labels": labels,
            "region_index": region_index,
            "embeddings": embeddings[region_index],
        }


def get_head(model: nn.Module) -> OpenVocabularyHead:
    """The open-vocabulary head of a detector of either engine (DDP-wrapped or not).

    This is how the user-facing layer (API, trainer, exporters) reaches a model's vocabulary,
    embedding size, score threshold, teacher and ensemble, without knowing the engine.

    Raises:
        ConfigError: for a model without one (e.g. the closed-set baseline).
    """
    for module in model.modules():
        if isinstance(module, OpenVocabularyHead):
            return module
    raise ConfigError(
        f"{type(model).__name__} has no open-vocabulary head (a closed-set detector?)"
    )

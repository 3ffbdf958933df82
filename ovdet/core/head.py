"""The open-vocabulary box head: everything about classes that the engines share.

Both engines (the torchvision engine in :mod:`ovdet.tv` and the detectron2 plugin in
:mod:`ovdet.d2`) pool region features their own way, decode boxes with their own box coder and
hand the results to one :class:`OpenVocabularyHead`, which owns:

* the current vocabulary: Tensor[C, D] text embeddings and BoolTensor[C] novelty (set with
  :func:`~ovdet.core.novel_classes.novel_class_mask`, the one name-matching rule);
* the zero-shot classifier and the class-agnostic box regressor;
* the open-vocabulary losses: ViLD-text, ViLD-image and which regions are distilled, into the
  classifier's projection or ViLD's separate image head (:mod:`ovdet.core.head_distillation`),
  and the weak-supervision losses (:mod:`ovdet.core.head_weak`);
* the joining of its scores (:mod:`ovdet.core.score_fusion`): with the image head's
  (ViLD-ensemble) or with CLIP's scores of its boxes (CLIP rescoring: of the box crops,
  ViLD-text+CLIP, or of regions pooled from a frozen CLIP backbone, F-VLM,
  :mod:`ovdet.core.head_clip`), never both;
* post-processing (threshold, candidate cap, per-class NMS) with one meaning of the score
  threshold: a (region, class) pair is kept when its score is strictly above it, before NMS.

The engines adapt it and never re-decide any of the above.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ovdet.core.classifier import ZeroShotClassifier
from ovdet.core.head_clip import ClipRescoringMixin
from ovdet.core.head_distillation import DISTILL_MODES, DistillationMixin
from ovdet.core.head_weak import WeakSupervisionMixin
from ovdet.core.losses import sigmoid_text_loss, vild_text_loss
from ovdet.core.postprocessing import ScoreThresholdMixin, select_detections
from ovdet.core.score_fusion import (
    ClipRescoringSettings,
    VildEnsembleSettings,
    check_score_fusion,
    join_scores,
)
from ovdet.core.weak_supervision import WeakSupervisionSettings
from ovdet.utils.errors import ConfigError

__all__ = ["DISTILL_MODES", "OpenVocabularyHead", "get_head"]


class OpenVocabularyHead(
    DistillationMixin, WeakSupervisionMixin, ClipRescoringMixin, ScoreThresholdMixin, nn.Module
):
    """Zero-shot classification, class-agnostic box deltas, open-vocabulary losses, detection.

    ViLD-image lives in :class:`~ovdet.core.head_distillation.DistillationMixin`, the losses of
    image-labelled batches in :class:`~ovdet.core.head_weak.WeakSupervisionMixin`, the CLIP
    teacher, CLIP backbone and CLIP rescoring in :class:`~ovdet.core.head_clip.ClipRescoringMixin`.

    Args:
        input_dim: size of the box head's output features ``F``.
        embed_dim: CLIP's embedding dimension ``D``.
        temperature, background, background_logit, scoring: see
            :class:`~ovdet.core.classifier.ZeroShotClassifier`; with ``scoring="sigmoid"`` the
            text loss is :func:`~ovdet.core.losses.sigmoid_text_loss`.
        box_reg_hidden_dim: 0 regresses the class-agnostic box deltas with one linear layer;
            ``H > 0`` with a ``Linear(F, H)``, ReLU, ``Linear(H, 4)`` MLP (Detic's zero-shot
            heads, ``H = F``).
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
            ViLD-image heads) instead of the classifier's, and inference joins the two heads'
            class probabilities (ViLD-ensemble, ``vild_ensemble``).
        vild_ensemble: the weights and temperature of that joining; default
            :class:`~ovdet.core.score_fusion.VildEnsembleSettings` (ViLD's 2/3 and 1/3).
    """

    def __init__(
        self,
        input_dim: int,
        embed_dim: int,
        *,
        temperature: float = 50.0,
        background: str = "learned",
        background_logit: float = 0.0,
        scoring: str = "softmax",
        box_reg_hidden_dim: int = 0,
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
        vild_ensemble: VildEnsembleSettings | None = None,
    ) -> None:
        super().__init__()
        if distill_mode not in DISTILL_MODES:
            raise ConfigError(
                f"MODEL.OVDET.DISTILL.MODE must be one of {DISTILL_MODES}, got {distill_mode!r}"
            )
        self.classifier = ZeroShotClassifier(
            input_dim, embed_dim, temperature, background, background_logit, scoring
        )
        self.image_projection = nn.Linear(input_dim, embed_dim) if image_head else None
        self.vild_ensemble = vild_ensemble or VildEnsembleSettings()
        self.bbox_pred = _box_regressor(input_dim, int(box_reg_hidden_dim))
        self.register_buffer("is_novel_class", torch.zeros(0, dtype=torch.bool), persistent=False)
        self.text_loss_weight = float(text_loss_weight)
        self.distill_mode = distill_mode
        self.distill_weight = float(distill_weight)
        self.distill_num_proposals = int(distill_num_proposals)
        self.score_thresh = float(score_thresh)
        self.nms_thresh = float(nms_thresh)
        self.detections_per_img = int(detections_per_img)
        self.max_candidates = int(max_candidates or max(1000, 10 * self.detections_per_img))
        self.clip_rescoring: ClipRescoringSettings | None = None
        self._rescoring_embeddings: torch.Tensor | None = None
        self.weak = weak or WeakSupervisionSettings()
        # Federated loss: Tensor[C] sampling weights of the current vocabulary (or None).
        self.class_sampling_weights: torch.Tensor | None = None
        # Frozen, loaded separately, never saved: not a registered submodule.
        object.__setattr__(self, "clip_teacher", None)
        # The frozen CLIP backbone (F-VLM), a submodule of the detector's backbone, not the head's.
        object.__setattr__(self, "clip_backbone", None)

    @classmethod
    def from_config(cls, cfg, input_dim: int, embed_dim: int | None = None) -> OpenVocabularyHead:
        """From ``MODEL.OVDET``, ``MODEL.ROI_HEADS`` and ``TEST`` (the same keys in both
        engines). ``embed_dim`` defaults to ``MODEL.OVDET.EMBED_DIM`` or CLIP's own.

        Raises:
            ConfigError: for ``DISTILL.IMAGE_HEAD`` with ``CLIP_RESCORING.ENABLED``
                (:func:`~ovdet.core.score_fusion.check_score_fusion`).
        """
        from ovdet.clip import ClipSpec

        ov = cfg.MODEL.OVDET
        check_score_fusion(ov.DISTILL.IMAGE_HEAD, ov.CLIP_RESCORING.ENABLED)
        return cls(
            input_dim,
            embed_dim or ov.EMBED_DIM or ClipSpec.parse(ov.CLIP).embed_dim,
            temperature=ov.TEMPERATURE,
            background=ov.BACKGROUND,
            background_logit=ov.BACKGROUND_LOGIT,
            scoring=ov.SCORING,
            box_reg_hidden_dim=ov.BOX_REG_HIDDEN_DIM,
            text_loss_weight=ov.TEXT_LOSS_WEIGHT,
            distill_mode=ov.DISTILL.MODE,
            distill_weight=ov.DISTILL.WEIGHT,
            distill_num_proposals=ov.DISTILL.NUM_PROPOSALS,
            score_thresh=cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST,
            nms_thresh=cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST,
            detections_per_img=cfg.TEST.DETECTIONS_PER_IMAGE,
            weak=WeakSupervisionSettings.from_config(cfg),
            image_head=ov.DISTILL.IMAGE_HEAD,
            vild_ensemble=VildEnsembleSettings.from_config(cfg),
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
        self._rescoring_embeddings = None
        num_classes = self.classifier.num_classes
        if is_novel is None:
            is_novel = torch.zeros(num_classes, dtype=torch.bool)
        if tuple(is_novel.shape) != (num_classes,):
            raise ValueError(f"is_novel must be [{num_classes}], got {tuple(is_novel.shape)}")
        self.is_novel_class = is_novel.to(
            device=self.classifier.projection.weight.device, dtype=torch.bool
        )

    def get_vocabulary(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A copy of the current (Tensor[C, D] text embeddings, BoolTensor[C] novelty)."""
        return self.text_embeddings.clone(), self.is_novel_class.clone()

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

    @property
    def has_image_head(self) -> bool:
        """Whether ViLD-image trains its own projection (``MODEL.OVDET.DISTILL.IMAGE_HEAD``)."""
        return self.image_projection is not None

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

        With ``image_head``, the probabilities are the classifier's joined with the image head's
        (ViLD-ensemble, :func:`~ovdet.core.score_fusion.join_scores`)."""
        features = self._flat(features)
        embeddings = self.classifier.embed(features)
        probs = self.classifier.probabilities(embeddings)
        if self.image_projection is not None:
            e = self.vild_ensemble
            probs = join_scores(
                probs, self.distilled_embeddings(features), self.text_embeddings,
                self.is_novel_class, e.base_weight, e.novel_weight, e.temperature,
            )  # fmt: skip
        return probs, self.bbox_pred(features), embeddings

    @torch.no_grad()
    def probabilities_from_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits Tensor[N, C + 1] of :meth:`forward` -> class probabilities Tensor[N, C] (softmax
        with the background, or sigmoid; the background column dropped), float32."""
        if self.classifier.scoring == "sigmoid":
            return logits[:, :-1].float().sigmoid()
        return torch.softmax(logits.float(), dim=-1)[:, :-1]

    # ------------------------------------------------------------------ losses

    def text_loss(self, logits: torch.Tensor, gt_classes: torch.Tensor) -> dict[str, torch.Tensor]:
        """``loss_text``: ViLD-text over the vocabulary and background (softmax scoring) or one
        binary cross-entropy per class (sigmoid scoring).

        Args:
            logits: Tensor[N, C + 1] from :meth:`forward`.
            gt_classes: Tensor[N] in ``[0, C]``, ``C`` for background.
        """
        loss = sigmoid_text_loss if self.classifier.scoring == "sigmoid" else vild_text_loss
        return {"loss_text": self.text_loss_weight * loss(logits, gt_classes)}

    def needs_images(self, training: bool) -> bool:
        """Whether this pass runs the CLIP teacher, so the engine must pass the images in
        CLIP's RGB [0, 1] view: online distillation in training, CLIP rescoring at inference."""
        return self.distills_online if training else self.rescores_crops

    # ------------------------------------------------------------------ inference

    @torch.no_grad()
    def detect(
        self,
        boxes: torch.Tensor,
        probs: torch.Tensor,
        embeddings: torch.Tensor,
        image: torch.Tensor | None = None,
        clip_features: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """One image's detections.

        With CLIP rescoring on and its input given (``image`` for crops, ``clip_features`` for
        the CLIP backbone), the ``num_proposals`` regions with the highest class score are
        rescored: the detector's probabilities joined with CLIP's of the regions
        (:meth:`rescore`; the others are dropped). Then
        :func:`select_detections` thresholds, caps and runs per-class NMS.

        Args:
            boxes: Tensor[N, 4], one decoded box per region, clipped to the image.
            probs: Tensor[N, C] class probabilities from :meth:`predict`.
            embeddings: Tensor[N, D] region embeddings from :meth:`predict`.
            image: Tensor[1, 3, H, W], RGB in [0, 1], in the boxes' pixel frame (CLIP rescoring
                of crops only).
            clip_features: Tensor[1, C, H / s, W / s], the CLIP backbone's map of this image
                (a ResNet's res5, a ViT's patch tokens; CLIP rescoring from the backbone only).

        Returns:
            ``boxes`` Tensor[K, 4], ``scores`` Tensor[K], ``labels`` LongTensor[K] (indices
            into the vocabulary), ``region_index`` LongTensor[K] (into the N regions) and
            ``embeddings`` Tensor[K, D]; best first, K <= ``detections_per_img``.
        """
        boxes, probs, region_index = self.rescore(boxes, probs, image, clip_features)
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


def _box_regressor(input_dim: int, hidden_dim: int) -> nn.Module:
    """Class-agnostic box deltas: Tensor[N, F] -> Tensor[N, 4]; a linear layer, or an MLP with
    one hidden ReLU layer of ``hidden_dim`` (Detic's ``bbox_pred`` with a zero-shot classifier).
    The last layer starts near zero (std 0.001), as detectron2's."""
    last = nn.Linear(hidden_dim or input_dim, 4)
    nn.init.normal_(last.weight, std=0.001)
    nn.init.zeros_(last.bias)
    if not hidden_dim:
        return last
    first = nn.Linear(input_dim, hidden_dim)
    nn.init.kaiming_uniform_(first.weight, a=1)  # detectron2's c2_xavier_fill
    nn.init.zeros_(first.bias)
    return nn.Sequential(first, nn.ReLU(inplace=True), last)


def get_head(model: nn.Module) -> OpenVocabularyHead:
    """The open-vocabulary head of a detector of either engine (DDP-wrapped or not).

    This is how the user-facing layer (API, trainer, exporters) reaches a model's vocabulary,
    embedding size, score threshold, teacher and CLIP rescoring, without knowing the engine.

    Raises:
        ConfigError: for a model without one (e.g. the closed-set baseline).
    """
    for module in model.modules():
        if isinstance(module, OpenVocabularyHead):
            return module
    raise ConfigError(
        f"{type(model).__name__} has no open-vocabulary head (a closed-set detector?)"
    )

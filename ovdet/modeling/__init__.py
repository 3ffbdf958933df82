"""Open-vocabulary modeling: the zero-shot classifier, losses, CLIP teacher and detector."""

from ovdet.modeling.box_predictor import OpenVocabularyBoxPredictor
from ovdet.modeling.clip_teacher import ClipRegionTeacher
from ovdet.modeling.detector import (
    OpenVocabularyRCNN,
    build_closed_set_detector,
    build_detector,
)
from ovdet.modeling.ensemble import ensemble_scores
from ovdet.modeling.losses import box_regression_loss, vild_image_loss, vild_text_loss
from ovdet.modeling.roi_heads import OpenVocabularyRoIHeads
from ovdet.modeling.zero_shot_classifier import ZeroShotClassifier

__all__ = [
    "ClipRegionTeacher",
    "OpenVocabularyBoxPredictor",
    "OpenVocabularyRCNN",
    "OpenVocabularyRoIHeads",
    "ZeroShotClassifier",
    "box_regression_loss",
    "build_closed_set_detector",
    "build_detector",
    "ensemble_scores",
    "vild_image_loss",
    "vild_text_loss",
]

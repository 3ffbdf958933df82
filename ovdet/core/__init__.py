"""The framework-free open-vocabulary core shared by both engines.

The vocabulary rule, the zero-shot classifier, the losses, the CLIP region teacher, the
joining of scores (ViLD-ensemble, CLIP rescoring), post-processing, the
:class:`OpenVocabularyHead` that joins them, and the weak-supervision set-up both engines train
with (:mod:`ovdet.core.weak_setup`). Plain ``torch.nn.Module``s and functions: no detection
framework is imported here.
"""

from ovdet.core.classifier import ZeroShotClassifier
from ovdet.core.head import DISTILL_MODES, OpenVocabularyHead, get_head
from ovdet.core.losses import box_regression_loss, vild_image_loss, vild_text_loss
from ovdet.core.novel_classes import normalize_name, novel_class_mask
from ovdet.core.postprocessing import select_detections, threshold_scores
from ovdet.core.score_fusion import (
    ClipRescoringSettings,
    VildEnsembleSettings,
    check_score_fusion,
    geometric_mean_scores,
)
from ovdet.core.teacher import ClipRegionTeacher
from ovdet.core.weak_setup import (
    BatchVocabularySwitch,
    WeakData,
    WeakTraining,
    build_weak_training,
    load_weak_data,
)
from ovdet.core.weak_supervision import (
    WeakSupervisionSettings,
    caption_loss,
    choose_label_regions,
    federated_classes,
    image_label_loss,
)

__all__ = [
    "BatchVocabularySwitch",
    "DISTILL_MODES",
    "ClipRegionTeacher",
    "ClipRescoringSettings",
    "OpenVocabularyHead",
    "VildEnsembleSettings",
    "WeakData",
    "WeakSupervisionSettings",
    "WeakTraining",
    "ZeroShotClassifier",
    "box_regression_loss",
    "build_weak_training",
    "caption_loss",
    "check_score_fusion",
    "choose_label_regions",
    "geometric_mean_scores",
    "federated_classes",
    "get_head",
    "image_label_loss",
    "load_weak_data",
    "normalize_name",
    "novel_class_mask",
    "select_detections",
    "threshold_scores",
    "vild_image_loss",
    "vild_text_loss",
]

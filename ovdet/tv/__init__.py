"""The torchvision engine: ovdet's default detector on ``torchvision.models.detection``.

Its RoI heads are a thin adapter over the framework-free :class:`~ovdet.core.OpenVocabularyHead`;
meta-architectures are built by name from :data:`~ovdet.tv.modeling.build.META_ARCH_REGISTRY`.
"""

from ovdet.tv.modeling.backbone import build_backbone
from ovdet.tv.modeling.build import (
    META_ARCH_REGISTRY,
    build_closed_set_rcnn,
    build_model,
    build_open_vocabulary_rcnn,
    is_open_vocabulary,
)
from ovdet.tv.modeling.rcnn import PIXEL_MEAN, PIXEL_STD, OpenVocabularyFasterRCNN
from ovdet.tv.modeling.roi_heads import TorchvisionOpenVocabularyRoIHeads

__all__ = [
    "META_ARCH_REGISTRY",
    "OpenVocabularyFasterRCNN",
    "PIXEL_MEAN",
    "PIXEL_STD",
    "TorchvisionOpenVocabularyRoIHeads",
    "build_backbone",
    "build_closed_set_rcnn",
    "build_open_vocabulary_rcnn",
    "build_model",
    "is_open_vocabulary",
]

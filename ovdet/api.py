"""The Python API: load a checkpoint, name any classes, detect them.

:class:`OVDetector` runs a checkpoint of the default (torchvision) engine; a detectron2-trained
model runs through :class:`ovdet.d2.OpenVocabularyD2Predictor`, which has the same interface.
Both return :class:`Detections` per image.
"""

from ovdet.structures.detections import Detections
from ovdet.tv.predictor import OVDetector

__all__ = ["Detections", "OVDetector"]

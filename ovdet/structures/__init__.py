"""The types every layer shares: a vocabulary of class names and the detections found."""

from ovdet.structures.detections import Detections, ImageInput, as_image_list
from ovdet.structures.loaded_image import LoadedImage
from ovdet.structures.vocabulary import Vocabulary

__all__ = ["Detections", "ImageInput", "LoadedImage", "Vocabulary", "as_image_list"]

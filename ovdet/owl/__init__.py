"""OWL-ViT and OWLv2 (transformers) behind ovdet's detector interface: ``--detector hf:ID``.

:class:`OwlDetector` runs ``OwlViTForObjectDetection`` / ``Owlv2ForObjectDetection`` with the
interface of :class:`ovdet.api.OVDetector` (vocabulary, score threshold, region embeddings), its
text queries embedded through ovdet's text cache. transformers is the optional extra
``ovdet[hf]``.
"""

from ovdet.owl.detector import OwlDetector
from ovdet.owl.loading import DETECTOR_SCHEMA, OwlModel, is_hf_detector, load_owl_model

__all__ = ["DETECTOR_SCHEMA", "OwlDetector", "OwlModel", "is_hf_detector", "load_owl_model"]

"""The detectron2 plugin of ovdet: config keys, heads, datasets, evaluator, trainer, predictor.

Importing this package imports detectron2, registers
:class:`~ovdet.d2.roi_heads.OpenVocabularyROIHeads` in ``ROI_HEADS_REGISTRY`` (select it with
``MODEL.ROI_HEADS.NAME: OpenVocabularyROIHeads``),
:class:`~ovdet.d2.meta_arch.OpenVocabularyRCNN` in ``META_ARCH_REGISTRY`` and the frozen CLIP
backbones of F-VLM in ``BACKBONE_REGISTRY`` (``MODEL.BACKBONE.NAME
build_clip_resnet_fpn_backbone`` or ``build_clip_vit_fpn_backbone``,
:mod:`ovdet.d2.clip_backbone`), and registers the
OV-COCO and OV-LVIS datasets (see :mod:`ovdet.d2.datasets`). detectron2 is not on the package
registry: install it by its official guide,
https://detectron2.readthedocs.io/en/latest/tutorials/install.html.
"""

try:
    import detectron2  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "ovdet.d2 needs detectron2, which is not installed; install it by its official guide: "
        "https://detectron2.readthedocs.io/en/latest/tutorials/install.html"
    ) from e

from ovdet.core.score_fusion import ClipRescoringSettings, VildEnsembleSettings
from ovdet.d2.clip_backbone import (
    ClipFPN,
    ClipResNetFPN,
    build_clip_resnet_fpn_backbone,
    build_clip_vit_fpn_backbone,
)
from ovdet.d2.config import add_ovdet_config, load_d2_config
from ovdet.d2.dataset_mapper import OfflineDistillationMapper
from ovdet.d2.datasets import (
    get_dataset_split,
    register_builtin_datasets,
    register_ov_coco_dataset,
    register_ov_lvis_dataset,
)
from ovdet.d2.evaluator import OpenVocabularyEvaluator
from ovdet.d2.meta_arch import OpenVocabularyRCNN
from ovdet.d2.model_vocabulary import (
    dataset_vocabulary,
    text_embeddings,
    training_vocabulary,
    use_dataset_vocabulary,
    use_vocabulary,
)
from ovdet.d2.output_layers import OpenVocabularyFastRCNNOutputLayers
from ovdet.d2.predictor import OpenVocabularyD2Predictor
from ovdet.d2.res5_roi_heads import OpenVocabularyRes5ROIHeads
from ovdet.d2.roi_heads import OpenVocabularyROIHeads
from ovdet.d2.trainer import OpenVocabularyTrainer

register_builtin_datasets()

__all__ = [
    "ClipRescoringSettings",
    "ClipFPN",
    "ClipResNetFPN",
    "OpenVocabularyD2Predictor",
    "OfflineDistillationMapper",
    "OpenVocabularyEvaluator",
    "OpenVocabularyFastRCNNOutputLayers",
    "OpenVocabularyRCNN",
    "OpenVocabularyROIHeads",
    "OpenVocabularyRes5ROIHeads",
    "OpenVocabularyTrainer",
    "VildEnsembleSettings",
    "add_ovdet_config",
    "build_clip_resnet_fpn_backbone",
    "build_clip_vit_fpn_backbone",
    "dataset_vocabulary",
    "get_dataset_split",
    "load_d2_config",
    "register_builtin_datasets",
    "register_ov_coco_dataset",
    "register_ov_lvis_dataset",
    "text_embeddings",
    "training_vocabulary",
    "use_dataset_vocabulary",
    "use_vocabulary",
]

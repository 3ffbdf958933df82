"""Default config of ovdet's torchvision engine, and the ``MODEL.OVDET`` keys shared with d2.

Keys follow detectron2's names wherever detectron2 has the same concept (``SOLVER.BASE_LR``,
``INPUT.MIN_SIZE_TEST``, ``MODEL.ROI_HEADS.SCORE_THRESH_TEST``...), so a user reads one
vocabulary of settings in both engines. Every ``MODEL.OVDET`` key is added by
:func:`add_ovdet_config`, which the detectron2 plugin calls on detectron2's own config.
"""

from __future__ import annotations

from typing import Any

from yacs.config import CfgNode as CN

__all__ = ["add_ovdet_config", "get_default_config"]


def add_ovdet_config(cfg: Any) -> None:
    """Add every ``MODEL.OVDET`` key (open-vocabulary settings) and ``DATASETS.SPLIT`` to a
    yacs/fvcore config in place: the keys both engines share, with the same defaults.

    Args:
        cfg: a yacs ``CfgNode`` (this engine) or detectron2's ``CfgNode``, with ``MODEL`` and
            ``DATASETS`` nodes.
    """
    node = type(cfg)
    cfg.MODEL.OVDET = node()
    ov = cfg.MODEL.OVDET
    # CLIP model: "NAME:PRETRAINED" (e.g. "ViT-B-32:openai"), "NAME:/path/to/weights.pt",
    # "local-dir:DIR" (DIR/open_clip_config.json, random init) or "local-dir:DIR:/path/ckpt.pt".
    ov.CLIP = "ViT-B-32:openai"
    # Prompt templates: "a" (the single prompt "a {}."), "vild" (a ViLD-style set), "openai"
    # (open_clip's 80 ImageNet templates), or a text file with one "{}" template per line.
    ov.TEMPLATES = "vild"
    # Folder of the text-embedding cache; "" means $OVDET_CACHE_DIR or ~/.cache/ovdet.
    ov.TEXT_CACHE_DIR = ""
    # Training vocabulary: "" means the base classes of the training set (by DATASETS.SPLIT);
    # else a comma-separated list, a text file (one class per line) or a COCO JSON.
    ov.VOCABULARY = ""
    # Dimension of the joint embedding space; 0 means CLIP's own (read from its model config).
    ov.EMBED_DIM = 0
    # Cosine similarities are multiplied by this temperature to give logits (ViLD/Detic: 50-100).
    ov.TEMPERATURE = 50.0
    # Background class: "learned" (a learned embedding scored like a class) or "fixed" (a
    # constant logit, BACKGROUND_LOGIT).
    ov.BACKGROUND = "learned"
    # The constant background logit when BACKGROUND is "fixed".
    ov.BACKGROUND_LOGIT = 0.0
    # Weight of the ViLD-text loss (cross-entropy over base classes + background).
    ov.TEXT_LOSS_WEIGHT = 1.0

    ov.DISTILL = node()
    # ViLD-image distillation: "none", "online" (CLIP teacher run in the training loop) or
    # "offline" (embeddings precomputed by tools/precompute_clip_embeddings.py).
    ov.DISTILL.MODE = "none"
    # Weight of the ViLD-image L1 loss.
    ov.DISTILL.WEIGHT = 0.5
    # Proposals distilled per image (online: the top-scoring RPN proposals).
    ov.DISTILL.NUM_PROPOSALS = 32
    # Crops per proposal at these scales of the box (ViLD: the box and a 1.5x box); their CLIP
    # embeddings are averaged.
    ov.DISTILL.CROP_SCALES = [1.0, 1.5]
    # Side of the square crops fed to CLIP; 0 means CLIP's input size.
    ov.DISTILL.CROP_SIZE = 0
    # Offline mode: the file written by tools/precompute_clip_embeddings.py.
    ov.DISTILL.EMBEDDINGS_FILE = ""

    ov.ENSEMBLE = node()
    # ViLD-ensemble at inference: geometric mean of detector and CLIP crop scores.
    ov.ENSEMBLE.ENABLED = False
    # Weight of the detector score for classes of the training vocabulary (ViLD: 2/3).
    ov.ENSEMBLE.BASE_WEIGHT = 0.67
    # Weight of the detector score for classes outside it (ViLD: 1/3, i.e. CLIP weighs 2/3).
    ov.ENSEMBLE.NOVEL_WEIGHT = 0.33
    # Temperature of CLIP's softmax over the vocabulary for crop scores.
    ov.ENSEMBLE.CLIP_TEMPERATURE = 100.0
    # Proposals per image rescored by CLIP (the top ones by detector score).
    ov.ENSEMBLE.NUM_PROPOSALS = 100

    # Base/novel split: "ovcoco", "lvis" or a JSON/YAML file {"base": [...], "novel": [...]};
    # training keeps only base annotations, evaluation reports base / novel / all. "" uses the
    # split a dataset was registered with (detectron2 plugin), else every class is base.
    cfg.DATASETS.SPLIT = ""


_C = CN()
_C.MODEL = CN()
# "OpenVocabularyRCNN" (ovdet) or "FasterRCNN" (torchvision's closed-set detector, a baseline
# trained and evaluated on the training classes only).
_C.MODEL.META_ARCHITECTURE = "OpenVocabularyRCNN"
# "cpu", "cuda" or "cuda:N".
_C.MODEL.DEVICE = "cpu"
# Detector weights to start from (a checkpoint of this engine); "" for none.
_C.MODEL.WEIGHTS = ""

_C.MODEL.BACKBONE = CN()
# ImageNet weights: "" (random init), a torchvision weights enum name such as
# "ResNet50_Weights.IMAGENET1K_V1" (downloaded if missing), or a local .pth file.
_C.MODEL.BACKBONE.WEIGHTS = ""
# Freeze the first FREEZE_AT ResNet stages, as in detectron2: 0 trains everything, 1 freezes
# the stem, 2 the stem and res2 (the default), ..., 5 the whole ResNet.
_C.MODEL.BACKBONE.FREEZE_AT = 2

_C.MODEL.RESNETS = CN()
# ResNet depth: 18, 34, 50 or 101 (torchvision's ResNets, with FPN).
_C.MODEL.RESNETS.DEPTH = 50
# Normalisation of the ResNet: "FrozenBN" (right for pretrained backbones and small batches) or
# "BN" (trained, e.g. from scratch).
_C.MODEL.RESNETS.NORM = "FrozenBN"

_C.MODEL.FPN = CN()
# Channels of every FPN level (and of the RoI features fed to the box head).
_C.MODEL.FPN.OUT_CHANNELS = 256

_C.MODEL.ANCHOR_GENERATOR = CN()
# Anchor sizes, one list per FPN level (P2-P6).
_C.MODEL.ANCHOR_GENERATOR.SIZES = [[32], [64], [128], [256], [512]]
# Anchor aspect ratios (height / width), shared by all levels.
_C.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS = [[0.5, 1.0, 2.0]]

_C.MODEL.RPN = CN()
_C.MODEL.RPN.PRE_NMS_TOPK_TRAIN = 2000
_C.MODEL.RPN.PRE_NMS_TOPK_TEST = 1000
_C.MODEL.RPN.POST_NMS_TOPK_TRAIN = 2000
_C.MODEL.RPN.POST_NMS_TOPK_TEST = 1000
_C.MODEL.RPN.NMS_THRESH = 0.7
# Anchors sampled per image for the RPN losses, and their positive fraction.
_C.MODEL.RPN.BATCH_SIZE_PER_IMAGE = 256
_C.MODEL.RPN.POSITIVE_FRACTION = 0.5

_C.MODEL.ROI_HEADS = CN()
# Proposals sampled per image for the box head losses, and their positive fraction.
_C.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 512
_C.MODEL.ROI_HEADS.POSITIVE_FRACTION = 0.25
# IoU with a ground-truth box at or above which a proposal is foreground (one threshold in this
# engine; detectron2's list form).
_C.MODEL.ROI_HEADS.IOU_THRESHOLDS = [0.5]
# Detections must score strictly above this at inference (before NMS), in both engines.
_C.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.05
# Per-class NMS IoU threshold at inference.
_C.MODEL.ROI_HEADS.NMS_THRESH_TEST = 0.5

_C.MODEL.ROI_BOX_HEAD = CN()
# Width of the two fully connected layers of the box head.
_C.MODEL.ROI_BOX_HEAD.FC_DIM = 1024
# RoIAlign output size.
_C.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = 7
# Weight of the class-agnostic box regression loss (smooth L1).
_C.MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_WEIGHT = 1.0

_C.INPUT = CN()
# Shorter side at training: one value is picked at random per image (scale jitter).
_C.INPUT.MIN_SIZE_TRAIN = [640, 672, 704, 736, 768, 800]
_C.INPUT.MAX_SIZE_TRAIN = 1333
# Shorter side at test time.
_C.INPUT.MIN_SIZE_TEST = 800
_C.INPUT.MAX_SIZE_TEST = 1333
# Probability of a horizontal flip at training.
_C.INPUT.HFLIP_PROB = 0.5
# Colour jitter strength at training (brightness, contrast, saturation); 0 disables it.
_C.INPUT.COLOR_JITTER = 0.2
# Images larger than this many pixels are downscaled on load, before anything else, to bound
# memory (a 12000x12000 photo becomes ~4096 px on its long side). 0 disables it.
_C.INPUT.MAX_LOAD_PIXELS = 16_777_216

_C.DATASETS = CN()
# COCO-format instances JSON and image folder of the training set.
_C.DATASETS.TRAIN_JSON = ""
_C.DATASETS.TRAIN_IMAGES = ""
# The same for the evaluation set (used by TEST.EVAL_PERIOD and tools/evaluate.py).
_C.DATASETS.TEST_JSON = ""
_C.DATASETS.TEST_IMAGES = ""

add_ovdet_config(_C)

_C.DATALOADER = CN()
_C.DATALOADER.NUM_WORKERS = 2
# Drop training images that have no (base) annotation left.
_C.DATALOADER.FILTER_EMPTY_ANNOTATIONS = True

_C.SOLVER = CN()
# "SGD" or "AdamW".
_C.SOLVER.OPTIMIZER = "SGD"
# Images per optimizer step, summed over all processes and accumulation steps.
_C.SOLVER.IMS_PER_BATCH = 16
# Gradient accumulation: forward/backward passes per optimizer step.
_C.SOLVER.ACCUMULATE_STEPS = 1
_C.SOLVER.BASE_LR = 0.02
_C.SOLVER.MOMENTUM = 0.9
_C.SOLVER.WEIGHT_DECAY = 1e-4
# Total optimizer steps.
_C.SOLVER.MAX_ITER = 90000
# "WarmupMultiStepLR" (decay by GAMMA at STEPS) or "WarmupCosineLR".
_C.SOLVER.LR_SCHEDULER_NAME = "WarmupMultiStepLR"
_C.SOLVER.STEPS = [60000, 80000]
_C.SOLVER.GAMMA = 0.1
# Linear warm-up from BASE_LR * WARMUP_FACTOR over WARMUP_ITERS steps.
_C.SOLVER.WARMUP_ITERS = 1000
_C.SOLVER.WARMUP_FACTOR = 0.001
# Gradient clipping, as in detectron2: CLIP_TYPE "norm" clips the total NORM_TYPE-norm of all
# gradients to CLIP_VALUE, "value" clips each gradient element to [-CLIP_VALUE, CLIP_VALUE].
_C.SOLVER.CLIP_GRADIENTS = CN()
_C.SOLVER.CLIP_GRADIENTS.ENABLED = False
_C.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "value"
_C.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 1.0
_C.SOLVER.CLIP_GRADIENTS.NORM_TYPE = 2.0
# Save a checkpoint every this many steps (and at the end).
_C.SOLVER.CHECKPOINT_PERIOD = 5000
# Mixed precision (CUDA only; ignored on CPU).
_C.SOLVER.AMP = CN()
_C.SOLVER.AMP.ENABLED = True

_C.TEST = CN()
# Evaluate on DATASETS.TEST_JSON every this many steps (and at the end); 0 disables it.
_C.TEST.EVAL_PERIOD = 0
# Maximum detections per image.
_C.TEST.DETECTIONS_PER_IMAGE = 100

# Folder for checkpoints, metrics and the merged config.
_C.OUTPUT_DIR = "./output"
# Seed of every random choice (data order, augmentation, initialisation).
_C.SEED = 0
# Log training metrics every this many steps.
_C.LOG_PERIOD = 20


def get_default_config() -> CN:
    """A fresh copy of the default config (safe to modify)."""
    return _C.clone()

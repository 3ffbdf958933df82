"""Default config of ovdet's torchvision engine, and the open-vocabulary keys shared with d2.

Keys follow detectron2's names wherever detectron2 has the same concept (``SOLVER.BASE_LR``,
``INPUT.MIN_SIZE_TEST``, ``MODEL.ROI_HEADS.SCORE_THRESH_TEST``...), so a user reads one
vocabulary of settings in both engines. Every ``MODEL.OVDET`` key and the keys of image-labelled
data are added by :func:`add_open_vocabulary_keys`, which this engine's defaults and the
detectron2 plugin's ``ovdet.d2.add_ovdet_config`` both call.
"""

from __future__ import annotations

from typing import Any

from yacs.config import CfgNode as CN

__all__ = ["add_open_vocabulary_keys", "get_default_config"]


def add_open_vocabulary_keys(cfg: Any) -> None:
    """Add the keys both engines share, with the same defaults, to a yacs/fvcore config in place:
    every ``MODEL.OVDET`` key (open-vocabulary settings), ``DATASETS.SPLIT`` and the keys of
    image-labelled training data (``DATASETS.WEAK_*``, ``DATALOADER.DATASET_RATIO``,
    ``DATALOADER.WEAK_IMS_PER_BATCH``, ``INPUT.WEAK_*``).

    Args:
        cfg: a yacs ``CfgNode`` (this engine) or detectron2's ``CfgNode``, with ``MODEL``,
            ``DATASETS``, ``DATALOADER`` and ``INPUT`` nodes.
    """
    _add_model_keys(cfg)
    _add_weak_data_keys(cfg)


def _add_model_keys(cfg: Any) -> None:
    """``MODEL.OVDET.*`` and ``DATASETS.SPLIT``."""
    node = type(cfg)
    cfg.MODEL.OVDET = node()
    ov = cfg.MODEL.OVDET
    # CLIP model: "NAME:PRETRAINED" (e.g. "ViT-B-32:openai"), "NAME:/path/to/weights.pt",
    # "local-dir:DIR" (DIR/open_clip_config.json, random init) or "local-dir:DIR:/path/ckpt.pt".
    ov.CLIP = "ViT-B-32:openai"
    # Prompt templates: "a" (the single prompt "a {}."), "detic" (Detic's "a {}"), "vild" (a
    # ViLD-style set), "openai" (open_clip's 80 ImageNet templates), or a text file with one "{}"
    # template per line.
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
    # Class probabilities: "softmax" (over the classes and background, with the ViLD-text
    # cross-entropy) or "sigmoid" (each class on its own, one binary cross-entropy per class;
    # the background logit is unused: Detic's USE_SIGMOID_CE).
    ov.SCORING = "softmax"
    # Class-agnostic box regressor: 0 for one linear layer; H > 0 for a Linear-ReLU-Linear MLP
    # with H hidden units (Detic's zero-shot heads: H = the box feature size, 2048 for R50-C4).
    ov.BOX_REG_HIDDEN_DIM = 0
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
    # ViLD-image trains its own projection (ViLD's separate ViLD-text and ViLD-image heads)
    # instead of the classifier's; inference joins the two heads' scores (ViLD-ensemble, weighted
    # by VILD_ENSEMBLE), no CLIP needed. Cannot be combined with CLIP_RESCORING.ENABLED.
    ov.DISTILL.IMAGE_HEAD = False

    ov.VILD_ENSEMBLE = node()
    # With DISTILL.IMAGE_HEAD, inference scores are the weighted geometric mean of the classifier's
    # (ViLD-text head) and the image head's probabilities. Weight of the classifier for classes of
    # the training vocabulary (ViLD: 2/3).
    ov.VILD_ENSEMBLE.BASE_WEIGHT = 0.67
    # Weight of the classifier for classes outside it (ViLD: 1/3, i.e. the image head weighs 2/3).
    ov.VILD_ENSEMBLE.NOVEL_WEIGHT = 0.33
    # Temperature of the image head's softmax over the vocabulary (it mimics CLIP: CLIP's 100).
    ov.VILD_ENSEMBLE.TEMPERATURE = 100.0

    ov.CLIP_RESCORING = node()
    # CLIP rescoring at inference (ViLD-text+CLIP): the weighted geometric mean of the detector's
    # scores and CLIP's scores of the box crops. Cannot be combined with DISTILL.IMAGE_HEAD.
    ov.CLIP_RESCORING.ENABLED = False
    # Weight of the detector score for classes of the training vocabulary (ViLD: 2/3).
    ov.CLIP_RESCORING.BASE_WEIGHT = 0.67
    # Weight of the detector score for classes outside it (ViLD: 1/3, i.e. CLIP weighs 2/3).
    ov.CLIP_RESCORING.NOVEL_WEIGHT = 0.33
    # Temperature of CLIP's softmax over the vocabulary for crop scores.
    ov.CLIP_RESCORING.CLIP_TEMPERATURE = 100.0
    # Proposals per image rescored by CLIP (the top ones by detector score).
    ov.CLIP_RESCORING.NUM_PROPOSALS = 100
    # Box scales cropped per rescored proposal, one CLIP forward pass each; [] means
    # DISTILL.CROP_SCALES (ViLD: [1.0, 1.5]). [1.0] halves rescoring's cost
    # (docs/speed.md#real-scale-cpu).
    ov.CLIP_RESCORING.CROP_SCALES = []
    # Where the rescored regions' CLIP embeddings come from: "crops" (CLIP's image tower on each
    # box crop) or "backbone" (F-VLM, no crops: each region pooled from the frozen CLIP backbone,
    # a ResNet's res5 map through CLIP's attention pool or a ViT's dense patch embeddings; needs
    # MODEL.BACKBONE.NAME build_clip_resnet_fpn_backbone or build_clip_vit_fpn_backbone;
    # docs/fvlm.md).
    ov.CLIP_RESCORING.SOURCE = "crops"

    ov.EXEMPLARS = node()
    # Classes given by image exemplars (example boxes; docs/exemplars.md). Their embedding is
    # made from: "clip" (CLIP's image embedding of the crop, framed as DISTILL.CROP_SCALES),
    # "region" (the detector's own region embedding of the box) or "both" (their normalised sum).
    ov.EXEMPLARS.SOURCE = "clip"
    # For a class given by its name and exemplars: the text's weight w; a region x scores
    # w * cos(x, text) + (1 - w) * cos(x, exemplars) (docs/exemplars.md).
    ov.EXEMPLARS.TEXT_WEIGHT = 0.5

    ov.WEAK = node()
    # Weak supervision (Detic): losses on image-labelled batches (no boxes), which the trainer
    # mixes with box batches (DATASETS.WEAK_TRAIN, DATALOADER.DATASET_RATIO).
    # Region that takes an image's labels: "max_size" (Detic: the largest of the top
    # NUM_PROPOSALS proposals), "max_score" (per label, the proposal scoring highest for it) or
    # "image" (the whole-image box).
    ov.WEAK.IMAGE_LABEL_LOSS = "max_size"
    # Weight of the image-label loss (BCE over the vocabulary, the image's labels positive).
    ov.WEAK.IMAGE_LOSS_WEIGHT = 0.1
    # Top proposals per image the labelled region is chosen from (Detic WS_NUM_PROPS: 128 for
    # LVIS, 32 for OV-COCO).
    ov.WEAK.NUM_PROPOSALS = 128
    # Caption loss (Detic WITH_CAPTION): the whole-image box embedding against the CLIP text
    # embeddings of the batch's captions, its own caption positive. Needs captions in the data.
    ov.WEAK.CAPTION_LOSS = False
    # Weight of the caption loss.
    ov.WEAK.CAPTION_WEIGHT = 1.0
    # Weight of the other captions of the batch, the negatives (Detic: 0.125; 1.0 for OV-COCO).
    ov.WEAK.NEG_CAPTION_WEIGHT = 0.125
    # Federated loss (Detic, LVIS): the image-label BCE runs over the image's classes plus
    # classes sampled with probability ~ image count ^ FED_LOSS_FREQ_WEIGHT, FED_LOSS_NUM_CLASSES
    # in all, instead of the whole vocabulary.
    ov.WEAK.FED_LOSS = False
    # Size of the federated class set per image.
    ov.WEAK.FED_LOSS_NUM_CLASSES = 50
    # Exponent of the class image counts in the sampling weights.
    ov.WEAK.FED_LOSS_FREQ_WEIGHT = 0.5
    # The classes box batches score: "all", the box classes and those only image labels name,
    # which are then negatives of every box region (Detic: its OV-COCO box data keeps all
    # classes); "box", the box classes alone (an unannotated object of an image-label class in a
    # box image is not pushed away from its name, but nothing keeps background regions from it;
    # better where CLIP knows the image-label names poorly:
    # docs/benchmark_studies.md#box-batch-classes).
    ov.WEAK.BOX_BATCH_CLASSES = "all"

    # Base/novel split: "ovcoco", "lvis" or a JSON/YAML file {"base": [...], "novel": [...]};
    # training keeps only base annotations, evaluation reports base / novel / all. "" uses the
    # split a dataset was registered with (detectron2 plugin), else every class is base.
    cfg.DATASETS.SPLIT = ""


def _add_weak_data_keys(cfg: Any) -> None:
    """The keys of image-labelled training data (weak supervision)."""
    # Image-labelled training data (weak supervision, no boxes), mixed with the box data at
    # DATALOADER.DATASET_RATIO: a COCO-format JSON whose images carry "pos_category_ids" (and
    # optionally "neg_category_ids"), a COCO captions JSON (labels = vocabulary names found in the
    # captions), or an open_clip_train caption CSV (.csv/.tsv). "" trains on boxes only.
    cfg.DATASETS.WEAK_TRAIN = ""
    # The folder the weak data's image paths are relative to ("" for the file's own folder).
    cfg.DATASETS.WEAK_TRAIN_IMAGES = ""
    # Classes looked for in captions (captions JSON, CSV): a vocabulary spec (names, a text file
    # with synonyms, a COCO JSON); "" means the box data's base and novel classes.
    cfg.DATASETS.WEAK_VOCABULARY = ""
    # Caption CSV columns and separator (open_clip_train's --csv-img-key, --csv-caption-key,
    # --csv-separator).
    cfg.DATASETS.WEAK_CSV_IMAGE_KEY = "filepath"
    cfg.DATASETS.WEAK_CSV_CAPTION_KEY = "title"
    cfg.DATASETS.WEAK_CSV_SEPARATOR = "\t"
    # Box batches : image-labelled batches (DATASETS.WEAK_TRAIN), in a fixed repeating order
    # (Detic: [1, 4]). Ignored without weak data.
    cfg.DATALOADER.DATASET_RATIO = [1, 4]
    # Images per image-labelled step, summed over processes and accumulation steps (Detic trains
    # them at a larger batch and lower resolution than box data).
    cfg.DATALOADER.WEAK_IMS_PER_BATCH = 32
    # Shorter side (one picked at random) and long-side cap of image-labelled images at training
    # (Detic: 384-448 px for image labels against 896 px for boxes).
    cfg.INPUT.WEAK_MIN_SIZE_TRAIN = [320, 352, 384, 416, 448]
    cfg.INPUT.WEAK_MAX_SIZE_TRAIN = 667


_C = CN()
_C.MODEL = CN()
# "OpenVocabularyRCNN" (ovdet) or "FasterRCNN" (torchvision's closed-set detector, a baseline
# trained and evaluated on the training classes only).
_C.MODEL.META_ARCHITECTURE = "OpenVocabularyRCNN"
# "cpu", "cuda" or "cuda:N".
_C.MODEL.DEVICE = "cpu"
# Detector weights to start from (a checkpoint of this engine); "" for none.
_C.MODEL.WEIGHTS = ""
# Input normalisation, as detectron2: pixel values 0-255 in INPUT.FORMAT's channel order minus
# PIXEL_MEAN, divided by PIXEL_STD (the defaults: torchvision's ImageNet statistics, RGB;
# detectron2's MSRA ResNets: BGR, mean [103.530, 116.280, 123.675], std [1.0, 1.0, 1.0]).
_C.MODEL.PIXEL_MEAN = [123.675, 116.28, 103.53]
_C.MODEL.PIXEL_STD = [58.395, 57.12, 57.375]

_C.MODEL.BACKBONE = CN()
# The backbone, by detectron2's builder names: "build_resnet_fpn_backbone" (a ResNet of
# MODEL.RESNETS with FPN), "build_clip_resnet_fpn_backbone" (F-VLM: the frozen image tower of
# MODEL.OVDET.CLIP, a ResNet CLIP, with a trained FPN) or "build_clip_vit_fpn_backbone" (the
# same with a ViT CLIP; docs/fvlm.md).
_C.MODEL.BACKBONE.NAME = "build_resnet_fpn_backbone"
# ImageNet weights: "" (random init), a torchvision weights enum name such as
# "ResNet50_Weights.IMAGENET1K_V1" (downloaded if missing), or a local .pth file.
_C.MODEL.BACKBONE.WEIGHTS = ""
# Freeze the first FREEZE_AT ResNet stages, as in detectron2: 0 trains everything, 1 freezes
# the stem, 2 the stem and res2 (the default), ..., 5 the whole ResNet.
_C.MODEL.BACKBONE.FREEZE_AT = 2

_C.MODEL.RESNETS = CN()
# ResNet depth: 18, 34, 50 or 101 (torchvision's ResNets, with FPN).
_C.MODEL.RESNETS.DEPTH = 50
# Normalisation of the ResNet: "FrozenBN" (right for pretrained backbones and small batches),
# "BN" (trained, e.g. from scratch; under N processes each normalises with its own images'
# statistics) or "SyncBN" (trained, with the statistics of the global batch under N processes:
# they then train as one process does; in one process it is "BN").
_C.MODEL.RESNETS.NORM = "FrozenBN"
# Stride of the first block of res3-res5 in its 1x1 convolution (detectron2's MSRA ResNets)
# instead of its 3x3 one (torchvision's ResNets); weights of either kind need their own.
_C.MODEL.RESNETS.STRIDE_IN_1X1 = False

_C.MODEL.FPN = CN()
# Channels of every FPN level (and of the RoI features fed to the box head).
_C.MODEL.FPN.OUT_CHANNELS = 256

_C.MODEL.ANCHOR_GENERATOR = CN()
# Anchor sizes, one list per FPN level (P2-P6); one list for C4 (res4).
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
# The architecture, by detectron2's names: "StandardROIHeads" (ResNet + FPN, a two-layer MLP
# box head on 7x7 RoIAlign features) or "Res5ROIHeads" (R50-C4: the ResNet to res4 is the
# backbone and the RPN's input; res5, average-pooled, is the box head on 14x14 RoIAlign
# features of res4, aligned, sampling ratio 0: detectron2's ROIAlignV2).
_C.MODEL.ROI_HEADS.NAME = "StandardROIHeads"
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
# RoIAlign output size (C4: 14, pooled to 7x7 by res5's stride).
_C.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = 7
# Weight of the class-agnostic box regression loss (smooth L1).
_C.MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_WEIGHT = 1.0

# Also predict one instance mask per detection (a class-agnostic Mask R-CNN head trained on
# the training classes' masks; ResNet + FPN only), as detectron2.
_C.MODEL.MASK_ON = False

_C.MODEL.ROI_MASK_HEAD = CN()
# RoIAlign output size of the mask head's input (the masks are twice this side).
_C.MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION = 14
# Number of the 3x3 convolutions before the deconvolution.
_C.MODEL.ROI_MASK_HEAD.NUM_CONV = 4
# Channels of those convolutions and of the deconvolution.
_C.MODEL.ROI_MASK_HEAD.CONV_DIM = 256
# One mask per region whatever its class: the only setting an open vocabulary allows (True);
# detectron2's key, whose default there is False.
_C.MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK = True

_C.INPUT = CN()
# Channel order the model sees: "RGB" or "BGR" (detectron2's MSRA ResNets).
_C.INPUT.FORMAT = "RGB"
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

_C.DATALOADER = CN()
_C.DATALOADER.NUM_WORKERS = 2
# Drop training images that have no (base) annotation left.
_C.DATALOADER.FILTER_EMPTY_ANNOTATIONS = True

# MODEL.OVDET, DATASETS.SPLIT and the image-labelled data (DATASETS.WEAK_*,
# DATALOADER.DATASET_RATIO, DATALOADER.WEAK_IMS_PER_BATCH, INPUT.WEAK_*).
add_open_vocabulary_keys(_C)

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
# Multi-process runs (torchrun): seconds a process waits for the others in a collective before
# the job fails with an error (a dead or stuck peer). The OVDET_DIST_TIMEOUT environment
# variable overrides it.
_C.DIST_TIMEOUT = 1800


def get_default_config() -> CN:
    """A fresh copy of the default config (safe to modify)."""
    return _C.clone()

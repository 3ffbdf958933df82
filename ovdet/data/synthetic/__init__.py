"""A synthetic open-vocabulary detection dataset of coloured shapes, with captions.

Every category is an *attribute x object* composition: one of 8 colours times one of 8 shapes
("red circle", "blue star", ...), 64 categories in all. The base/novel split holds out 16
compositions whose colour and whose shape each occur in 6 base categories, so a detector trained
on base boxes has seen every *word* of a novel name, but never the composition. This is the
smallest setting in which open-vocabulary detection is meaningful, and it trains on a CPU.

:func:`generate_synthetic_dataset` writes, under one output directory::

    images/train/000001.png ...          detection images (RGB PNG)
    images/val/000001.png ...
    annotations/instances_train.json     COCO format; ALL 64 categories annotated (the training
    annotations/instances_val.json       loader drops novel boxes by the split, as the benchmark
                                         protocol does)
    split.json                           {"base": [48 names], "novel": [16 names]}
    captions/train.csv                   crop-caption pairs for CLIP pre-training (open_clip_train)
    captions/val.csv                     held-out labelled crops (all 64 classes) for zero-shot
    captions/crops/{train,val}/*.png     the crops

and, with ``num_weak_images`` (:mod:`~ovdet.data.synthetic.image_labels`)::

    images/weak/*.png                    image-labelled scenes of the same kind, no boxes
    annotations/image_labels_weak.json   COCO format, images with "pos_category_ids"
    annotations/captions_weak.json       COCO captions, one per image naming its objects
    annotations/instances_weak.json      their hidden boxes (never read by training)

Scenes have a smooth textured background with pixel noise, grey distractor lines and blobs
(clutter that is not an object), and 1..``max_objects`` objects at sizes from
``min_object_size`` to ``max_object_size`` pixels, with slight colour jitter and shading. Objects
may overlap, but each keeps at least ``min_visible`` of its pixels visible. **Boxes are the tight
box of the visible pixels** (COCO's convention, the "modal" box) and ``area`` is the number of
visible pixels.

Caption CSVs are tab separated with the columns ``filepath``, ``title`` and ``label`` (the class
name, ignored by open_clip_train). File paths are relative to the CSV's directory, so the dataset
can be moved; run open_clip_train from that directory (:func:`ovdet.clip.pretrain.pretrain_clip`
does). Each crop is one object framed at about 1.5x its box (as the ViLD teacher crops
proposals), resized to ``crop_size`` pixels, and captioned in varied web-like phrasing that names
its class ("a photo of a small red circle", "red circle on a grey background", ...).

Generation is deterministic: every image and crop draws from its own
``numpy.random.Generator`` seeded by ``(seed, stream, index)``, so the same seed gives
byte-identical files, independently of ``workers`` and of how many other items are generated.

The package is split by concept: :mod:`~ovdet.data.synthetic.categories` (the classes and the
base/novel split), :mod:`~ovdet.data.synthetic.render` (drawing scenes),
:mod:`~ovdet.data.synthetic.captions` (caption phrasing and crop windows),
:mod:`~ovdet.data.synthetic.items` (one seeded image or crop) and
:mod:`~ovdet.data.synthetic.writer` (the dataset on disk).
"""

from __future__ import annotations

from ovdet.data.synthetic.captions import make_caption
from ovdet.data.synthetic.categories import (
    CLASS_NAMES,
    COLORS,
    SHAPES,
    synthetic_categories,
    synthetic_split,
)
from ovdet.data.synthetic.render import Scene, render_scene
from ovdet.data.synthetic.writer import PRESETS, SyntheticDatasetInfo, generate_synthetic_dataset

__all__ = [
    "COLORS",
    "SHAPES",
    "CLASS_NAMES",
    "PRESETS",
    "Scene",
    "SyntheticDatasetInfo",
    "synthetic_categories",
    "synthetic_split",
    "render_scene",
    "make_caption",
    "generate_synthetic_dataset",
]

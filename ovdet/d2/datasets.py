"""Open-vocabulary datasets for detectron2: OV-COCO, OV-LVIS and any COCO-format data with a split.

A dataset is registered with a base/novel split (:func:`ovdet.data.splits.load_split`, categories
matched by name). A *training* dataset (``base_only=True``) keeps only the annotations of base
categories, and its ``thing_classes`` are the base classes; an *evaluation* dataset keeps base
and novel annotations and classes. Categories in neither half (the 15 COCO classes OV-COCO drops)
are dropped from both. The metadata records the split (``base_classes``, ``novel_classes``,
``split_name``) for the model's vocabulary and for :class:`~ovdet.d2.evaluator.
OpenVocabularyEvaluator`.

Importing :mod:`ovdet.d2` registers the standard benchmarks under ``$DETECTRON2_DATASETS``
(default ``./datasets``, detectron2's own convention), without reading any file:

=====================  ==========================================  ===========================
name                   annotations                                 images
=====================  ==========================================  ===========================
``ovcoco_2017_train``  ``coco/annotations/instances_train2017.json``  ``coco/train2017``
``ovcoco_2017_val``    ``coco/annotations/instances_val2017.json``    ``coco/val2017``
``ovlvis_v1_train``    ``lvis/lvis_v1_train.json``                    ``coco/`` (train2017)
``ovlvis_v1_val``      ``lvis/lvis_v1_val.json``                      ``coco/`` (val2017)
=====================  ==========================================  ===========================
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES
from detectron2.data.datasets.coco import load_coco_json
from detectron2.data.datasets.lvis import load_lvis_json
from detectron2.data.datasets.lvis_v1_categories import LVIS_CATEGORIES

from ovdet.data.splits import OpenVocabularySplit, load_split
from ovdet.utils.errors import DataError
from ovdet.utils.json_input import read_json_file

__all__ = [
    "EVALUATOR_TYPE_COCO",
    "EVALUATOR_TYPE_LVIS",
    "get_dataset_split",
    "register_builtin_datasets",
    "register_ov_coco_dataset",
    "register_ov_lvis_dataset",
    "thing_classes",
]

logger = logging.getLogger(__name__)

# ``evaluator_type`` of the datasets registered here (read by OpenVocabularyEvaluator).
EVALUATOR_TYPE_COCO = "ovdet_coco"
EVALUATOR_TYPE_LVIS = "ovdet_lvis"


def _read_categories(json_file: str | Path) -> list[dict]:
    data = read_json_file(json_file, "annotation file")
    categories = data.get("categories") if isinstance(data, dict) else None
    if not isinstance(categories, list):
        raise DataError(f"annotation file {json_file} holds no 'categories' list")
    return categories


def _register(
    name: str,
    json_file: str | Path,
    image_root: str | Path,
    split: OpenVocabularySplit,
    categories: Sequence[dict],
    base_only: bool,
    lvis: bool,
) -> None:
    if name in DatasetCatalog.list():
        raise DataError(f"dataset {name!r} is already registered; choose another name")
    ordered = sorted(categories, key=lambda c: c["id"])
    wanted = (lambda n: split.is_base(n)) if base_only else (lambda n: split.kind(n) is not None)
    kept = [c for c in ordered if wanted(c["name"])]
    if not kept:
        raise DataError(
            f"dataset {name!r}: no category of {json_file} is "
            f"{'base' if base_only else 'base or novel'} in split {split.name!r}"
        )
    id_map = {c["id"]: i for i, c in enumerate(kept)}
    known_ids = {c["id"] for c in ordered}
    json_file, image_root = str(json_file), str(image_root)

    def load() -> list[dict]:
        return _load_dicts(name, json_file, image_root, id_map, known_ids, lvis)

    DatasetCatalog.register(name, load)
    extra = {}
    if any(c.get("synonyms") for c in kept):
        extra["thing_synonyms"] = [list(c.get("synonyms", [])) for c in kept]
    MetadataCatalog.get(name).set(
        thing_classes=[c["name"] for c in kept],
        thing_dataset_id_to_contiguous_id=id_map,
        json_file=json_file,
        image_root=image_root,
        evaluator_type=EVALUATOR_TYPE_LVIS if lvis else EVALUATOR_TYPE_COCO,
        split_name=split.name,
        base_classes=list(split.base),
        novel_classes=list(split.novel),
        base_only=base_only,
        **extra,
    )
    logger.debug(
        "Registered %s: %d classes (%d base, %d novel in the split%s)",
        name,
        len(kept),
        len(split.base),
        len(split.novel),
        ", base annotations only" if base_only else "",
    )


def _load_dicts(
    name: str,
    json_file: str,
    image_root: str,
    id_map: dict[int, int],
    known_ids: set[int],
    lvis: bool,
) -> list[dict]:
    """detectron2's loader, then annotations filtered and mapped to contiguous class ids."""
    dicts = load_lvis_json(json_file, image_root) if lvis else load_coco_json(json_file, image_root)
    dropped = 0
    for record in dicts:
        annotations = []
        for ann in record.get("annotations", []):
            # Without a dataset name, detectron2's LVIS loader gives ``id - 1``, COCO's the id.
            dataset_id = ann["category_id"] + 1 if lvis else ann["category_id"]
            if dataset_id not in known_ids:
                raise DataError(
                    f"dataset {name!r}: {json_file} has an annotation of category id "
                    f"{dataset_id}, which is not among the categories it was registered with"
                )
            if dataset_id in id_map:
                annotations.append({**ann, "category_id": id_map[dataset_id]})
            else:
                dropped += 1
        record["annotations"] = annotations
    logger.info(
        "Loaded %d images of %s; dropped %d annotations outside its classes",
        len(dicts),
        name,
        dropped,
    )
    return dicts


def register_ov_coco_dataset(
    name: str,
    json_file: str | Path,
    image_root: str | Path,
    split_spec: str | OpenVocabularySplit,
    base_only: bool,
    categories: Sequence[dict] | None = None,
) -> None:
    """Register a COCO-format dataset with a base/novel split in detectron2's catalogs.

    Args:
        name: the dataset's name in ``DatasetCatalog`` / ``MetadataCatalog``.
        json_file: COCO instances JSON.
        image_root: folder of the images (``file_name`` is relative to it).
        split_spec: ``"ovcoco"``, a JSON/YAML file ``{"base": [...], "novel": [...]}`` or a split;
            matched to the categories by name.
        base_only: keep only base classes and annotations (training); else base and novel
            (evaluation).
        categories: the JSON's ``categories`` (``id``, ``name``); ``None`` reads them from
            ``json_file`` now (give them to avoid reading a large file at registration).

    Raises:
        DataError: if the name is taken, the file is unreadable or no category is in the split.
    """
    if categories is None:
        categories = _read_categories(json_file)
    if isinstance(split_spec, OpenVocabularySplit):
        split = split_spec.restrict_to(categories)
    else:
        split = load_split(split_spec, categories)
    _register(name, json_file, image_root, split, categories, base_only, lvis=False)


def register_ov_lvis_dataset(
    name: str,
    json_file: str | Path,
    image_root: str | Path,
    base_only: bool,
    categories: Sequence[dict] | None = None,
) -> None:
    """Register an LVIS dataset with the OV-LVIS split (rare categories are novel).

    Training (``base_only=True``) drops the annotations of rare categories (866 base classes
    remain of LVIS v1's 1203); evaluation keeps all classes. Images are found as detectron2's LVIS
    loader finds them (``image_root`` + the last two parts of ``coco_url``).

    Args:
        name: the dataset's name in detectron2's catalogs.
        json_file: an LVIS JSON.
        image_root: the folder holding ``train2017/`` and ``val2017/``, with a trailing ``/``.
        base_only: keep only base (frequent and common) classes and annotations.
        categories: LVIS ``categories`` (with ``frequency``); ``None`` reads them from the file.
    """
    if categories is None:
        categories = _read_categories(json_file)
    split = load_split("lvis", categories)
    _register(name, json_file, image_root, split, categories, base_only, lvis=True)


def thing_classes(dataset_name: str) -> list[str]:
    """A dataset's ``thing_classes``, loading the dataset first where only that sets them.

    detectron2's own ``register_coco_instances`` fills ``thing_classes`` in the metadata only
    when the dataset is loaded; a training or evaluation set registered that way is loaded here
    (detectron2 loads it again for its data loader).
    """
    meta = MetadataCatalog.get(dataset_name)
    if not meta.get("thing_classes") and dataset_name in DatasetCatalog.list():
        DatasetCatalog.get(dataset_name)
    return list(meta.get("thing_classes") or [])


def get_dataset_split(dataset_name: str, fallback: str = "") -> OpenVocabularySplit:
    """The base/novel split of a registered dataset.

    Args:
        dataset_name: a name in ``MetadataCatalog``.
        fallback: a split spec used when the metadata has none (a dataset not registered by this
            module); ``""`` makes every class base.

    Returns:
        The split, restricted to the dataset's ``thing_classes``.
    """
    classes = thing_classes(dataset_name)
    meta = MetadataCatalog.get(dataset_name)
    categories = [{"name": n} for n in classes]
    if meta.get("base_classes") is not None:
        split = OpenVocabularySplit(
            tuple(meta.base_classes), tuple(meta.novel_classes), meta.get("split_name", "custom")
        )
        return split.restrict_to(categories)
    if fallback:
        return load_split(fallback, categories)
    return OpenVocabularySplit(tuple(classes), (), name="none")


def register_builtin_datasets(root: str | None = None) -> None:
    """Register OV-COCO and OV-LVIS (see the module docstring) if not registered yet.

    Args:
        root: the datasets folder; ``None`` means ``$DETECTRON2_DATASETS`` or ``./datasets``.
    """
    root = os.path.expanduser(root or os.getenv("DETECTRON2_DATASETS", "datasets"))
    coco_categories = [{"id": c["id"], "name": c["name"]} for c in COCO_CATEGORIES if c["isthing"]]
    registered = set(DatasetCatalog.list())
    for name, json_rel, images_rel, base_only in (
        ("ovcoco_2017_train", "coco/annotations/instances_train2017.json", "coco/train2017", True),
        ("ovcoco_2017_val", "coco/annotations/instances_val2017.json", "coco/val2017", False),
    ):
        if name not in registered:
            register_ov_coco_dataset(
                name,
                os.path.join(root, json_rel),
                os.path.join(root, images_rel),
                "ovcoco",
                base_only,
                categories=coco_categories,
            )
    for name, json_rel, base_only in (
        ("ovlvis_v1_train", "lvis/lvis_v1_train.json", True),
        ("ovlvis_v1_val", "lvis/lvis_v1_val.json", False),
    ):
        if name not in registered:
            register_ov_lvis_dataset(
                name,
                os.path.join(root, json_rel),
                os.path.join(root, "coco/"),
                base_only,
                categories=LVIS_CATEGORIES,
            )

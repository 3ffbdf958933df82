"""Image-labelled training data (weak supervision): images with class labels or captions, no boxes.

Three formats, the ones users have:

* a COCO-format JSON whose images carry ``pos_category_ids`` (and optionally
  ``neg_category_ids``), Detic's format for ImageNet-21k and LVIS image labels;
* a COCO captions JSON (``captions_train2017.json``: ``images`` plus ``annotations`` holding a
  ``caption``): the labels are the vocabulary's names and synonyms found in the captions
  (:class:`~ovdet.data.caption_tagger.CaptionTagger`), and the captions are kept for the caption
  loss;
* open_clip_train's caption CSV (an image-path column and a caption column, tab separated by
  default), so that one caption file can pre-train CLIP and train the detector.

As for box data (:mod:`ovdet.data.coco`), problems that make a file unusable raise
:class:`~ovdet.utils.errors.DataError`; problems in single entries are dropped and *counted*, with
one warning per kind. The vocabulary of image-labelled batches and its class counts are the
weak-supervision set-up's (:mod:`ovdet.core.weak_setup`).
"""

from __future__ import annotations

import csv
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ovdet.data.caption_tagger import CaptionTagger
from ovdet.data.coco import check_categories
from ovdet.utils.errors import DataError
from ovdet.utils.json_input import is_int, read_json_file

__all__ = [
    "ImageLabelRecord",
    "ImageLabelRecords",
    "load_caption_csv",
    "load_coco_captions",
    "load_coco_image_labels",
    "load_image_labels",
]

logger = logging.getLogger(__name__)

_ImageKey = int | str


@dataclass
class ImageLabelRecord:
    """One image-labelled image.

    Attributes:
        image_id: the image's id (the CSV's row path for caption CSVs).
        path: the image file.
        labels: int64 [L], indices into the dataset's ``class_names`` (may be empty for
            captions that name no class).
        neg_labels: int64 [M], classes known to be absent (``neg_category_ids``).
        captions: the image's captions (empty for the image-label JSON).
    """

    image_id: _ImageKey
    path: Path
    labels: np.ndarray
    neg_labels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    captions: tuple[str, ...] = ()


@dataclass
class ImageLabelRecords:
    """A loaded image-labelled dataset, the class names its labels index, what was dropped."""

    images: list[ImageLabelRecord]
    class_names: list[str]
    counts: Counter = field(default_factory=Counter)

    @property
    def has_captions(self) -> bool:
        """Whether every image has at least one caption (the caption loss can run)."""
        return all(r.captions for r in self.images)

    def image_counts(self) -> np.ndarray:
        """float64 [C]: images labelled with each class (the federated loss's frequencies)."""
        counts = np.zeros(len(self.class_names))
        for r in self.images:
            np.add.at(counts, np.unique(r.labels), 1)
        return counts


# ------------------------------------------------------------------ formats


def _read_json_object(path: Path) -> dict:
    data = read_json_file(path, "image-label file")
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError(f"image-label file {path} has no 'images' list")
    return data


def _image_entries(data: dict, path: Path) -> dict[int, dict]:
    images: dict[int, dict] = {}
    for img in data["images"]:
        ok = isinstance(img, dict) and is_int(img.get("id"))
        if not (ok and isinstance(img.get("file_name"), str) and img["file_name"]):
            raise DataError(
                f"{path}: each image needs an integer id and a file_name; got {img!r:.100}"
            )
        if img["id"] in images:
            raise DataError(f"{path}: image id {img['id']} is used twice")
        images[img["id"]] = img
    return images


def _finish(
    records: list[ImageLabelRecord],
    class_names: list[str],
    counts: Counter,
    path: Path,
    check_files: bool,
) -> ImageLabelRecords:
    if check_files:
        kept = [r for r in records if r.path.is_file()]
        if len(kept) < len(records):
            counts["images with a missing file dropped"] += len(records) - len(kept)
        records = kept
    for what, n in sorted(counts.items()):
        logger.warning("%s: %d %s", path.name, n, what)
    if not records:
        raise DataError(f"{path}: no usable image left ({dict(counts)})")
    logger.info(
        "Loaded %s: %d image-labelled images, %d classes, %d labels, %d captions",
        path.name,
        len(records),
        len(class_names),
        sum(len(r.labels) for r in records),
        sum(len(r.captions) for r in records),
    )
    return ImageLabelRecords(records, class_names, counts)


def load_coco_image_labels(
    json_file: str | Path, image_root: str | Path, check_files: bool = True
) -> ImageLabelRecords:
    """A COCO-format JSON whose images carry ``pos_category_ids`` (Detic's image labels).

    Args:
        json_file: the JSON; its ``categories`` are the classes.
        image_root: the folder ``file_name`` entries are relative to.
        check_files: drop (and count) images whose file does not exist.

    Raises:
        DataError: unreadable JSON, no ``images`` or ``categories``, bad ids, a label of an
            unknown category.
    """
    path, root = Path(json_file), Path(image_root)
    data = _read_json_object(path)
    categories = data.get("categories")
    if not isinstance(categories, list) or not categories:
        raise DataError(f"{path} has no 'categories' list")
    check_categories(categories, path)
    index = {cat["id"]: i for i, cat in enumerate(categories)}
    counts: Counter = Counter()
    records = []
    for image_id, img in _image_entries(data, path).items():
        lists = []
        for key in ("pos_category_ids", "neg_category_ids"):
            ids = img.get(key, [])
            if not isinstance(ids, list) or not all(map(is_int, ids)):
                raise DataError(f"{path}: image {image_id}: '{key}' must be a list of integer ids")
            unknown = [i for i in ids if i not in index]
            if unknown:
                raise DataError(
                    f"{path}: image {image_id}: '{key}' has unknown category id {unknown[0]}"
                )
            if len(set(ids)) < len(ids):
                counts[f"repeated ids in {key} merged"] += 1
            lists.append(sorted({index[i] for i in ids}))
        pos, neg = lists
        if not pos:
            counts["images without pos_category_ids dropped"] += 1
            continue
        if set(pos) & set(neg):
            counts["neg_category_ids that are also positive dropped"] += 1
            neg = [c for c in neg if c not in set(pos)]
        records.append(
            ImageLabelRecord(
                image_id,
                root / img["file_name"],
                np.asarray(pos, dtype=np.int64),
                np.asarray(neg, dtype=np.int64),
            )
        )
    names = [c["name"] for c in categories]
    return _finish(records, names, counts, path, check_files)


def _tag(
    captions_per_image: list[tuple[_ImageKey, Path, list[str]]], tagger: CaptionTagger,
    counts: Counter,
) -> list[ImageLabelRecord]:  # fmt: skip
    records = []
    for image_id, image_path, captions in captions_per_image:
        labels = sorted({c for caption in captions for c in tagger(caption)})
        if not labels:
            counts["images whose captions name no class (caption loss only)"] += 1
        records.append(
            ImageLabelRecord(
                image_id, image_path, np.asarray(labels, dtype=np.int64), captions=tuple(captions)
            )
        )
    return records


def load_coco_captions(
    json_file: str | Path, image_root: str | Path, vocabulary, check_files: bool = True
) -> ImageLabelRecords:
    """A COCO captions JSON: labels are the vocabulary's classes named in an image's captions.

    Args:
        json_file: ``images`` and ``annotations`` with ``image_id`` and ``caption``.
        image_root: the folder ``file_name`` entries are relative to.
        vocabulary: the classes looked for (a :class:`~ovdet.structures.Vocabulary` or
        names).
        check_files: drop (and count) images whose file does not exist.

    Raises:
        DataError: unreadable JSON, no ``images`` or ``annotations``, bad ids, a caption of an
            unknown image.
    """
    path, root = Path(json_file), Path(image_root)
    data = _read_json_object(path)
    if not isinstance(data.get("annotations"), list):
        raise DataError(f"captions file {path} has no 'annotations' list")
    images = _image_entries(data, path)
    captions: dict[int, list[str]] = {i: [] for i in images}
    counts: Counter = Counter()
    for ann in data["annotations"]:
        image_id = ann.get("image_id") if isinstance(ann, dict) else None
        if not is_int(image_id):
            raise DataError(f"{path}: annotation {ann!r:.100} needs an integer image_id")
        if image_id not in images:
            raise DataError(f"{path}: caption of unknown image id {image_id}")
        caption = ann.get("caption")
        if not isinstance(caption, str) or not caption.strip():
            counts["empty or missing captions dropped"] += 1
            continue
        captions[image_id].append(" ".join(caption.split()))
    entries = []
    for image_id, img in images.items():
        if not captions[image_id]:
            counts["images without a caption dropped"] += 1
            continue
        entries.append((image_id, root / img["file_name"], captions[image_id]))
    tagger = CaptionTagger(vocabulary)
    records = _tag(entries, tagger, counts)
    return _finish(records, list(tagger.class_names), counts, path, check_files)


def load_caption_csv(
    csv_file: str | Path,
    image_root: str | Path | None,
    vocabulary,
    image_key: str = "filepath",
    caption_key: str = "title",
    separator: str = "\t",
    check_files: bool = True,
) -> ImageLabelRecords:
    """open_clip_train's caption CSV: one row per (image, caption); rows of one image merge.

    Args:
        csv_file: the CSV (header row with the column names).
        image_root: the folder image paths are relative to (``None``: the CSV's folder).
        vocabulary: the classes looked for (a :class:`~ovdet.structures.Vocabulary` or
        names).
        image_key, caption_key, separator: open_clip_train's ``--csv-img-key``,
            ``--csv-caption-key`` and ``--csv-separator``.
        check_files: drop (and count) images whose file does not exist.

    Raises:
        DataError: unreadable file, missing columns.
    """
    path = Path(csv_file)
    root = path.parent if image_root is None or str(image_root) == "" else Path(image_root)
    if not path.is_file():
        raise DataError(f"caption CSV {path} does not exist")
    counts: Counter = Counter()
    per_image: dict[str, list[str]] = {}
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f, delimiter=separator)
            columns = reader.fieldnames or []
            missing = [k for k in (image_key, caption_key) if k not in columns]
            if missing:
                raise DataError(
                    f"{path}: no column {missing[0]!r} (columns: {columns}); set the image and "
                    "caption column names (DATASETS.WEAK_CSV_IMAGE_KEY / WEAK_CSV_CAPTION_KEY) "
                    "and the separator (DATASETS.WEAK_CSV_SEPARATOR)"
                )
            for row in reader:
                image, caption = row.get(image_key), row.get(caption_key)
                if not image or not image.strip() or not caption or not caption.strip():
                    counts["rows without an image path or caption dropped"] += 1
                    continue
                per_image.setdefault(image.strip(), []).append(" ".join(caption.split()))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"cannot read caption CSV {path}: {e}") from e
    entries = [(image, root / image, caps) for image, caps in per_image.items()]
    tagger = CaptionTagger(vocabulary)
    records = _tag(entries, tagger, counts)
    return _finish(records, list(tagger.class_names), counts, path, check_files)


def load_image_labels(
    path: str | Path,
    image_root: str | Path | None,
    vocabulary: Sequence[str] | object | None = None,
    image_key: str = "filepath",
    caption_key: str = "title",
    separator: str = "\t",
    check_files: bool = True,
) -> ImageLabelRecords:
    """Any of the three formats, recognised by content: ``.csv`` / ``.tsv`` files are caption
    CSVs; a JSON whose images carry ``pos_category_ids`` is an image-label JSON; a JSON whose
    annotations hold captions is a captions JSON.

    Args:
        path: the file.
        image_root: the folder image paths are relative to (``None`` or ``""``: the file's).
        vocabulary: the classes looked for in captions (needed for the caption formats).
        image_key, caption_key, separator: the caption CSV's columns and separator.
        check_files: drop (and count) images whose file does not exist.
    """
    path = Path(path)
    root = path.parent if image_root is None or str(image_root) == "" else Path(image_root)
    if path.suffix.lower() in (".csv", ".tsv"):
        _need(vocabulary, path)
        return load_caption_csv(
            path, root, vocabulary, image_key, caption_key, separator, check_files
        )
    data = _read_json_object(path)
    images = data["images"]
    if any(isinstance(i, dict) and "pos_category_ids" in i for i in images):
        return load_coco_image_labels(path, root, check_files)
    annotations = data.get("annotations")
    if isinstance(annotations, list) and any(
        isinstance(a, dict) and "caption" in a for a in annotations
    ):
        _need(vocabulary, path)
        return load_coco_captions(path, root, vocabulary, check_files)
    raise DataError(
        f"{path} is neither an image-label JSON (images with 'pos_category_ids') nor a captions "
        "JSON (annotations with a 'caption'), nor a .csv/.tsv caption file"
    )


def _need(vocabulary, path: Path) -> None:
    if vocabulary is None or len(vocabulary) == 0:
        raise DataError(f"{path} holds captions: give the vocabulary whose names are looked for")

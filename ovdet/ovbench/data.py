"""Where the benchmark finds a dataset: COCO files, images, split and caption CSVs.

:class:`BenchmarkData` names every path and CSV column of a dataset; its defaults are the layout
:func:`ovdet.data.synthetic.generate_synthetic_dataset` writes, and each can be changed (the
command line has a flag per field), so the benchmark runs on a researcher's own dataset.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from ovdet.utils.errors import DataError

__all__ = ["BenchmarkData"]


@dataclass(frozen=True)
class BenchmarkData:
    """A COCO-format open-vocabulary dataset with captions.

    Paths are relative to ``root`` unless absolute.

    Attributes:
        root: the dataset folder.
        train_json, train_images: training annotations (COCO instances JSON; novel boxes may be
            in it, the split drops them) and the folder of their ``file_name`` paths.
        val_json, val_images: validation annotations and images (every category evaluated).
        split: JSON/YAML file with ``base`` and ``novel`` name lists (or ``ovcoco``).
        captions: image-caption CSV for CLIP pre-training (``image_column``,
            ``caption_column``), image paths relative to the CSV's folder.
        val_captions: labelled crops (``image_column``, ``label_column``) for CLIP's zero-shot
            accuracy; when the file does not exist, CLIP classifies the validation boxes instead.
        weak_labels: image-labelled training images (no boxes) for the weak-supervision rows:
            anything ``DATASETS.WEAK_TRAIN`` takes (COCO JSON with ``pos_category_ids``, COCO
            captions JSON, caption CSV); when the file does not exist, those rows are skipped.
        weak_captions: the same images' captions (COCO captions JSON or caption CSV) for the
            rows with the caption loss; skipped when the file does not exist.
        weak_images: the folder of the image-labelled files' image paths.
        image_column, caption_column, label_column: CSV column names.
        separator: the CSVs' column separator.
    """

    root: Path
    train_json: str = "annotations/instances_train.json"
    train_images: str = "images/train"
    val_json: str = "annotations/instances_val.json"
    val_images: str = "images/val"
    split: str = "split.json"
    captions: str = "captions/train.csv"
    val_captions: str = "captions/val.csv"
    weak_labels: str = "annotations/image_labels_weak.json"
    weak_captions: str = "annotations/captions_weak.json"
    weak_images: str = "images/weak"
    image_column: str = "filepath"
    caption_column: str = "title"
    label_column: str = "label"
    separator: str = "\t"

    #: Fields that name files or folders that must exist.
    PATH_FIELDS = (
        "train_json", "train_images", "val_json", "val_images", "split", "captions",
    )  # fmt: skip

    def path(self, field: str) -> Path:
        """The absolute path of a path field."""
        value = getattr(self, field)
        if field == "split" and value == "ovcoco":
            return Path(value)
        path = Path(value).expanduser()
        return (path if path.is_absolute() else Path(self.root) / path).resolve()

    @property
    def split_spec(self) -> str:
        """The split as :func:`ovdet.data.splits.load_split` takes it."""
        return "ovcoco" if self.split == "ovcoco" else str(self.path("split"))

    #: Optional files: a row that needs one is skipped where it does not exist.
    OPTIONAL_FIELDS = ("val_captions", "weak_labels", "weak_captions", "weak_images")

    def has(self, field: str) -> bool:
        """Whether the optional file or folder ``field`` is given and exists."""
        return bool(getattr(self, field)) and self.path(field).exists()

    def with_root(self, root: str | Path) -> BenchmarkData:
        return dataclasses.replace(self, root=Path(root))

    def check(self) -> None:
        """Raise a :class:`DataError` naming every missing file or folder (and its flag)."""
        missing = []
        for field in self.PATH_FIELDS:
            if field == "split" and self.split == "ovcoco":
                continue
            path = self.path(field)
            exists = path.is_dir() if field.endswith("images") else path.is_file()
            if not exists:
                missing.append(f"--{field.replace('_', '-')} {path}")
        if missing:
            raise DataError(f"dataset {self.root} lacks: {'; '.join(missing)}")
        if len(self.separator) != 1:
            raise DataError(f"the CSV separator must be one character, got {self.separator!r}")
        self.check_split()

    def check_split(self) -> None:
        """Raise a :class:`DataError` unless the split lists every category of the training and
        validation files, and each of its names is one (:func:`ovdet.data.splits.load_split`)."""
        from ovdet.data.splits import load_split
        from ovdet.utils.json_input import read_json_file

        for field in ("train_json", "val_json"):
            data = read_json_file(self.path(field), "annotation file")
            categories = data.get("categories") if isinstance(data, dict) else None
            if isinstance(categories, list) and all(
                isinstance(c, dict) and isinstance(c.get("name"), str) for c in categories
            ):  # a malformed file fails with its own message where it is loaded
                load_split(self.split_spec, categories)

    def describe(self) -> dict[str, str]:
        """Every field as a string (absolute paths), for logs and ``results.json``."""
        out = {}
        for f in dataclasses.fields(self):
            if f.name == "root":
                out["root"] = str(Path(self.root).resolve())
            elif f.name in self.PATH_FIELDS or f.name in self.OPTIONAL_FIELDS:
                out[f.name] = str(self.path(f.name)) if getattr(self, f.name) else ""
            else:
                out[f.name] = getattr(self, f.name)
        return out

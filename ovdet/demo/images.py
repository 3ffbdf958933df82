"""One request of the image tab, without the page: read, detect, draw, tabulate."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ovdet.demo.classes import vocabulary_or_message
from ovdet.demo.model_cache import DemoModel
from ovdet.demo.results import box_text, category_records, upload_message
from ovdet.structures.exemplars import ExemplarSpec
from ovdet.utils.errors import ImageError, OvdetError

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["DISPLAY_MIN_SIDE", "TABLE_HEADERS", "DemoResult", "detect_files", "display_view"]

logger = logging.getLogger("ovdet.demo")

DISPLAY_MIN_SIDE = 512  # smaller pictures are drawn enlarged (see display_view)
TABLE_HEADERS = ["image", "class", "score", "box (x1, y1, x2, y2)", "base / novel"]


@dataclass
class DemoResult:
    """What one request shows.

    Attributes:
        drawn: per readable image, (drawn picture, its file name).
        rows: the detections table, one row per detection (:data:`TABLE_HEADERS`).
        results: the results JSON (``tools/infer.py``'s format, plus ``novel`` per detection).
        messages: one line per problem (``error: ...``), as the command line prints them.
    """

    drawn: list[tuple[Image.Image, str]] = field(default_factory=list)
    rows: list[list[Any]] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        """One line per problem, then a summary line."""
        summary = f"{len(self.rows)} detection(s) in {len(self.drawn)} image(s)"
        return "\n".join([*self.messages, summary] if self.drawn else self.messages or [summary])


def display_view(array: np.ndarray, min_side: int = DISPLAY_MIN_SIDE) -> tuple[np.ndarray, int]:
    """A small picture enlarged by a whole factor (nearest pixel) for drawing, so that its labels
    stay small beside its objects; returns (picture [H * s, W * s, 3], s)."""
    from PIL import Image

    scale = max(1, min_side // max(array.shape[:2]))
    if scale == 1:
        return array, 1
    height, width = array.shape[:2]
    view = Image.fromarray(array).resize((width * scale, height * scale), Image.NEAREST)
    return np.asarray(view), scale


def detect_files(
    model: DemoModel,
    files: Sequence[str | Path],
    class_text: str,
    templates: str,
    score_thresh: float,
    clip_rescoring: bool,
    max_images: int = 16,
    progress: bool = False,
    exemplars: Sequence[ExemplarSpec] = (),
) -> DemoResult:
    """One request of the page, without the page: read, detect, draw, tabulate.

    Bad input never raises: it becomes a message of the result (a bad vocabulary stops the
    request; an unreadable file is skipped, the others are processed, as ``tools/infer.py``).

    Args:
        model: the served checkpoint.
        files: the uploaded images.
        class_text: the class box (see :func:`~ovdet.demo.classes.parse_class_box`).
        templates: one of ``model.template_choices``.
        score_thresh: detections scoring below it are dropped.
        clip_rescoring: combine the detector's scores with CLIP's scores of the box crops.
        max_images: most images per request; more is refused with a message.
        progress: a tqdm progress bar in the server's console.
        exemplars: the page's exemplar classes (:mod:`ovdet.demo.exemplars`).
    """
    from tqdm import tqdm

    from ovdet.structures.masks import resize_masks
    from ovdet.utils.visualizer import draw_detections

    result = DemoResult()
    vocabulary = vocabulary_or_message(class_text, result.messages, exemplars)
    if vocabulary is None:
        return result
    files = [Path(f) for f in files or []]
    if not files:
        result.messages.append("error: no image; upload one or pick an example")
        return result
    if len(files) > max_images:
        result.messages.append(f"error: {len(files)} images; at most {max_images} per request")
        return result
    from ovdet.data.image_io import read_image
    from ovdet.structures.detections import detection_records

    arrays, names, failed = [], [], []
    for path in files:
        try:
            arrays.append(read_image(path, model.max_load_pixels))
            names.append(path.name)
        except ImageError as e:
            result.messages.append(upload_message(e, path))
            failed.append(path.name)
    result.results = {"categories": [], "detections": [], "failed": failed}
    if not arrays:
        return result
    try:
        detections = []
        with tqdm(total=len(arrays), desc="detect", unit="img", disable=not progress) as bar:
            for array in arrays:
                found, is_novel = model.detect(
                    [array], vocabulary, templates, score_thresh, clip_rescoring
                )
                detections += found
                bar.update(1)
    except (OvdetError, OSError) as e:
        result.messages.append(f"error: {e}")
        return result
    result.results["categories"] = category_records(vocabulary, is_novel)
    result.results["images"] = []
    for image_id, (name, array, det) in enumerate(zip(names, arrays, detections), 1):
        novel = [bool(is_novel[i]) for i in det.labels.tolist()]
        view, scale = display_view(array)
        masks = resize_masks(det.masks, view.shape[:2])
        drawn = draw_detections(
            view, det.boxes * scale, det.scores, det.names, novel=novel, masks=masks
        )
        result.drawn.append((drawn, name))
        height, width = array.shape[:2]
        result.results["images"].append(
            {"id": image_id, "file_name": name, "width": width, "height": height}
        )
        records = detection_records(det, name, image_id, det.class_names, None, det.class_kinds)
        for record, flag in zip(records, novel):
            record["novel"] = flag
            kind = "novel" if flag else "base"
            if "query" in record:
                kind += f", {record['query']}"
            result.rows.append(
                [name, record["category"], round(record["score"], 3), box_text(record["bbox"]),
                 kind]
            )  # fmt: skip
            result.results["detections"].append(record)
    logger.info("%s", result.status.replace("\n", "; "))
    return result

"""A detectron2 ``DatasetEvaluator`` reporting box and mask AP on base, novel and all
classes."""

from __future__ import annotations

import itertools
import logging
import os
from collections import OrderedDict

from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from detectron2.utils import comm

from ovdet.d2.datasets import EVALUATOR_TYPE_LVIS, get_dataset_split
from ovdet.data.splits import OpenVocabularySplit
from ovdet.evaluation import evaluate_coco, evaluate_lvis, is_lvis, load_ground_truth
from ovdet.utils.errors import ConfigError
from ovdet.utils.io import atomic_write_json

__all__ = ["OpenVocabularyEvaluator"]

logger = logging.getLogger(__name__)


def _percent(value: float | None) -> float:
    """detectron2 reports AP in percent; a group without ground truth is NaN."""
    return float("nan") if value is None else 100.0 * value


class OpenVocabularyEvaluator(DatasetEvaluator):
    """Collects COCO-format detections and scores them with :mod:`ovdet.evaluation`.

    Predicted classes (contiguous ids of the dataset's ``thing_classes``, which the model must
    be using as its vocabulary: see :func:`ovdet.d2.model_vocabulary.use_dataset_vocabulary`) are
    mapped back to the dataset's category ids; the ground truth is the metadata's ``json_file``,
    restricted to the evaluated images. COCO-style data is scored by
    :func:`~ovdet.evaluation.evaluate_coco`, LVIS by :func:`~ovdet.evaluation.evaluate_lvis`.

    ``evaluate()`` returns ``{"bbox": {...}}``, and ``"segm"`` with the same keys for mask AP
    when the model predicts masks (``MODEL.MASK_ON``), with detectron2's conventions (percent,
    NaN for a group without ground truth): ``AP``, ``AP50`` (over base + novel classes),
    ``base_AP``, ``base_AP50``, ``novel_AP``, ``novel_AP50``, LVIS's ``APr``, ``APc``, ``APf``
    for LVIS, and ``AP-<class>`` / ``AP50-<class>`` per class.

    Args:
        dataset_name: a registered dataset with ``json_file`` and
            ``thing_dataset_id_to_contiguous_id`` in its metadata.
        output_dir: where ``ovdet_instances_results.json`` is written (``None``: nowhere).
        split: the base/novel split; ``None`` takes the dataset's (see
            :func:`~ovdet.d2.datasets.get_dataset_split`).
        distributed: gather predictions from every process (results on the main one only).
    """

    def __init__(
        self,
        dataset_name: str,
        output_dir: str | None = None,
        *,
        split: OpenVocabularySplit | str | None = None,
        distributed: bool = True,
    ) -> None:
        meta = MetadataCatalog.get(dataset_name)
        for key in ("json_file", "thing_dataset_id_to_contiguous_id"):
            if not meta.get(key):
                raise ConfigError(f"dataset {dataset_name!r} has no {key!r} in its metadata")
        self.dataset_name = dataset_name
        self.output_dir = output_dir
        self.distributed = distributed
        self._json_file = meta.json_file
        self._lvis = meta.get("evaluator_type") == EVALUATOR_TYPE_LVIS
        self._split = split if split is not None else get_dataset_split(dataset_name)
        self._contiguous_to_dataset = {
            v: k for k, v in meta.thing_dataset_id_to_contiguous_id.items()
        }
        self._predictions: list[dict] = []
        self._image_ids: list[int] = []

    def reset(self) -> None:
        self._predictions = []
        self._image_ids = []

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        """Convert one batch: ``inputs[i]["image_id"]``, ``outputs[i]["instances"]``."""
        for inp, out in zip(inputs, outputs):
            self._image_ids.append(inp["image_id"])
            if "instances" not in out:
                continue
            instances = out["instances"].to("cpu")
            for det in instances_to_coco_json(instances, inp["image_id"]):
                category = self._contiguous_to_dataset.get(det["category_id"])
                if category is None:
                    raise ValueError(
                        f"predicted class {det['category_id']} is outside the "
                        f"{len(self._contiguous_to_dataset)} classes of {self.dataset_name}; "
                        "is the model using this dataset's vocabulary?"
                    )
                prediction = {
                    "image_id": det["image_id"],
                    "category_id": category,
                    "bbox": det["bbox"],
                    "score": det["score"],
                }
                if "segmentation" in det:  # detectron2's RLE of the pasted mask
                    prediction["segmentation"] = det["segmentation"]
                self._predictions.append(prediction)

    def evaluate(self) -> OrderedDict:
        if self.distributed:
            comm.synchronize()
            predictions = list(itertools.chain(*comm.gather(self._predictions, dst=0)))
            image_ids = list(itertools.chain(*comm.gather(self._image_ids, dst=0)))
            if not comm.is_main_process():
                return OrderedDict()
        else:
            predictions, image_ids = self._predictions, self._image_ids
        if self.output_dir:
            path = os.path.join(self.output_dir, "ovdet_instances_results.json")
            atomic_write_json(predictions, path)
            logger.info("Saved %d detections to %s", len(predictions), path)
        ground_truth = self._ground_truth(set(image_ids))
        evaluate = evaluate_lvis if self._lvis or is_lvis(ground_truth) else evaluate_coco
        results = OrderedDict(bbox=self._summary(evaluate(ground_truth, predictions, self._split)))
        if predictions and all("segmentation" in p for p in predictions):
            masks = evaluate(ground_truth, predictions, self._split, iou_type="segm")
            results["segm"] = self._summary(masks)
        return results

    def _ground_truth(self, image_ids: set[int]) -> dict:
        """The ground truth of the evaluated images only."""
        dataset = load_ground_truth(self._json_file)
        images = [im for im in dataset["images"] if im["id"] in image_ids]
        if len(images) < len(dataset["images"]):
            logger.info(
                "Evaluating %d of the %d images of %s",
                len(images),
                len(dataset["images"]),
                self._json_file,
            )
            annotations = [a for a in dataset["annotations"] if a["image_id"] in image_ids]
            dataset = {**dataset, "images": images, "annotations": annotations}
        return dataset

    @staticmethod
    def _summary(metrics: dict) -> dict:
        summary = {
            "AP": _percent(metrics["all"]["AP"]),
            "AP50": _percent(metrics["all"]["AP50"]),
        }
        for group in ("base", "novel"):
            summary[f"{group}_AP"] = _percent(metrics[group]["AP"])
            summary[f"{group}_AP50"] = _percent(metrics[group]["AP50"])
        for key in ("APr", "APc", "APf"):
            if key in metrics:
                summary[key] = _percent(metrics[key])
        for name, values in metrics.get("per_category", {}).items():
            summary[f"AP-{name}"] = _percent(values["AP"])
            summary[f"AP50-{name}"] = _percent(values["AP50"])
        return summary

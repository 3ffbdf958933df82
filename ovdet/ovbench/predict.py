"""Detections of any checkpoint the project writes, by any method of the benchmark table.

One function, :func:`predict_with_method`, turns (checkpoint, method, COCO ground truth) into
COCO-format results: the benchmark (:mod:`ovdet.ovbench.stages`) and
``tools/evaluate.py`` both call it, so the table and the command line measure the same thing.

Methods:

- ``detector``: the checkpoint as trained. An open-vocabulary model gets every category of the
  ground truth as its vocabulary (the generalized setting); a closed-set model (torchvision's
  ``FasterRCNN``, e.g. the benchmark's baseline) detects its training classes, matched to the
  ground truth's categories by name (it cannot name the others, so their AP is 0).
- ``clip_rescoring``: the open-vocabulary model with its scores rescored by CLIP's scores of
  the box crops (ViLD-text+CLIP in the ViLD paper).
- ``clip_on_proposals``: the model's RPN proposals classified by its CLIP alone
  (:class:`~ovdet.ovbench.clip_proposals.ClipOnProposals`).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Sequence

from ovdet.structures.exemplars import ExemplarSpec
from ovdet.structures.vocabulary import Vocabulary, normalize_name
from ovdet.utils.errors import CheckpointError, ConfigError, VocabularyError

__all__ = [
    "PREDICTION_METHODS",
    "is_closed_set_checkpoint",
    "predict_with_detector",
    "predict_with_method",
]

logger = logging.getLogger(__name__)

#: The ways to turn a checkpoint into detections (see the module docstring).
PREDICTION_METHODS = ("detector", "clip_rescoring", "clip_on_proposals")


def _checkpoint_config(checkpoint: str | Path):
    import yaml

    from ovdet.config import config_from_dict
    from ovdet.tv.engine.checkpoint import load_checkpoint

    state = load_checkpoint(checkpoint)
    try:
        cfg = config_from_dict(yaml.safe_load(state["config"]), f"checkpoint {checkpoint}")
    except (KeyError, yaml.YAMLError) as e:
        raise CheckpointError(f"checkpoint {checkpoint} holds no readable config: {e}") from e
    return state, cfg


def is_closed_set_checkpoint(checkpoint: str | Path) -> bool:
    """Whether ``checkpoint`` holds a closed-set (not open-vocabulary) detector."""
    from ovdet.tv.modeling.build import is_open_vocabulary

    return not is_open_vocabulary(_checkpoint_config(checkpoint)[1])


def _closed_set_results(state, cfg, checkpoint, records, device, batch_size, progress, failed):
    """A closed-set model's detections; its classes are matched to ``records``' by name."""
    from ovdet.tv.engine.build import build_model
    from ovdet.tv.engine.checkpoint import load_model_weights
    from ovdet.tv.engine.inference import inference_on_records

    trained = state.get("class_names")
    if not trained:
        raise CheckpointError(
            f"closed-set checkpoint {checkpoint} does not name its classes (written by an older "
            "ovdet); evaluate it with the training run's --split instead"
        )
    gt_ids = {n.lower(): i for n, i in zip(records.class_names, records.category_ids)}
    unknown = [n for n in trained if n.lower() not in gt_ids]
    if unknown:
        raise ConfigError(
            f"the closed-set model's classes {unknown[:5]} are not categories of the ground truth"
        )
    cfg.defrost()
    cfg.MODEL.DEVICE = device
    model = build_model(cfg, num_classes=len(trained)).to(device)
    load_model_weights(model, state["model"], str(checkpoint))
    as_trained = dataclasses.replace(
        records, class_names=list(trained), category_ids=[gt_ids[n.lower()] for n in trained]
    )
    logger.info(
        "closed-set model: %d of the %d ground-truth categories are its classes",
        len(trained),
        len(records.class_names),
    )
    return inference_on_records(
        model, as_trained, cfg, device, batch_size, True, progress=progress, failed=failed
    )


def _open_vocabulary_model(
    checkpoint, method: str, class_names, device: str, overrides, exemplars=()
):
    """The model that predicts by ``method``, with ``class_names`` as its vocabulary (classes
    of ``exemplars`` given by them, :mod:`ovdet.core.exemplars`)."""
    from ovdet.api import OVDetector
    from ovdet.ovbench.clip_proposals import ClipOnProposals
    from ovdet.tv.engine.build import build_clip_teacher

    detector = OVDetector.from_checkpoint(checkpoint, device=device, overrides=overrides)
    vocabulary = Vocabulary.from_names(class_names)
    unknown = [s.name for s in exemplars if normalize_name(s.name) not in
               {normalize_name(n) for n in class_names}]  # fmt: skip
    if unknown:
        raise VocabularyError(
            f"exemplar class {unknown[0]!r} is not a category of the ground truth"
        )
    detector.set_classes(vocabulary.with_exemplars(list(exemplars)))
    if method == "clip_rescoring":
        detector.enable_clip_rescoring(True)
        return detector.model, detector.cfg
    if method == "clip_on_proposals":
        cfg = detector.cfg
        teacher = build_clip_teacher(cfg, detector._text.clip).to(device)
        model = ClipOnProposals(
            detector.model, teacher,
            num_proposals=cfg.MODEL.OVDET.CLIP_RESCORING.NUM_PROPOSALS,
            clip_temperature=cfg.MODEL.OVDET.CLIP_RESCORING.CLIP_TEMPERATURE,
            score_thresh=cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST,
            nms_thresh=cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST,
            detections_per_img=cfg.TEST.DETECTIONS_PER_IMAGE,
        )  # fmt: skip
        return model, cfg
    return detector.model, detector.cfg


def predict_with_method(
    checkpoint: str | Path,
    gt_json: str | Path,
    image_root: str | Path,
    method: str = "detector",
    device: str = "cpu",
    batch_size: int = 2,
    score_thresh: float | None = None,
    progress: bool = True,
    failed: list[str] | None = None,
    exemplars: Sequence[ExemplarSpec] = (),
    overrides: Sequence[str] = (),
) -> list[dict]:
    """COCO-format detections of ``checkpoint`` on every image of ``gt_json``.

    Args:
        checkpoint: a checkpoint written by ``tools/train.py`` (open-vocabulary or closed-set).
        gt_json: the COCO ground truth; its categories are the vocabulary.
        image_root: the folder of its images' ``file_name`` paths.
        method: one of :data:`PREDICTION_METHODS`.
        device: torch device.
        batch_size: images per forward pass.
        score_thresh: least score kept (``MODEL.ROI_HEADS.SCORE_THRESH_TEST``); ``None``: the
            checkpoint's. AP counts every detection up to the per-image cap, so a low threshold
            (e.g. 0.001) measures a model whose scores are not yet confident fairly.
        progress: a progress bar.
        failed: if given, the images that could not be read are appended to it.
        exemplars: categories given by image exemplars instead of (``name=``) or beside
            (``name+=``) their names (:mod:`ovdet.structures.exemplars`); open-vocabulary only.
        overrides: more config ``KEY VALUE`` pairs (e.g. ``MODEL.OVDET.EXEMPLARS.SOURCE``).

    Started by torchrun, the processes share the images
    (:func:`~ovdet.tv.engine.inference.inference_on_records`); every process returns all results.

    Returns:
        A list of ``{image_id, category_id, bbox: [x, y, w, h], score}``.

    Raises:
        ConfigError: an unknown method, or a method a closed-set model cannot run.
        CheckpointError: an unreadable checkpoint.
    """
    import torch

    from ovdet.data.coco import load_coco_detection
    from ovdet.tv.engine import distributed as comm
    from ovdet.tv.engine.inference import inference_on_records
    from ovdet.tv.modeling.build import is_open_vocabulary

    if method not in PREDICTION_METHODS:
        raise ConfigError(f"method must be one of {PREDICTION_METHODS}, got {method!r}")
    if batch_size < 1:
        raise ConfigError("batch size must be at least 1")
    comm.init_distributed(torch.device(device).type)
    device = str(comm.local_device(device))
    state, cfg = _checkpoint_config(checkpoint)
    overrides = list(overrides)
    if score_thresh is not None:
        overrides += ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", str(float(score_thresh))]
        cfg.defrost()
        cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = float(score_thresh)
    records = load_coco_detection(str(gt_json), str(image_root), split=None, filter_empty=False)
    logger.info(
        "predicting with %s (%s) on %d images of %s",
        Path(checkpoint).name, method, len(records.images), gt_json,
    )  # fmt: skip
    if not is_open_vocabulary(cfg):
        if exemplars:
            raise ConfigError(
                f"{checkpoint} is a closed-set {cfg.MODEL.META_ARCHITECTURE} model without region "
                "embeddings: exemplar classes need an open-vocabulary model"
            )
        if method != "detector":
            raise ConfigError(
                f"{checkpoint} is a closed-set {cfg.MODEL.META_ARCHITECTURE} model: "
                f"method {method!r} needs an open-vocabulary model (one with a CLIP)"
            )
        return _closed_set_results(
            state, cfg, checkpoint, records, device, batch_size, progress, failed
        )
    model, cfg = _open_vocabulary_model(
        checkpoint, method, records.class_names, device, overrides, exemplars
    )
    return inference_on_records(
        model, records, cfg, device, batch_size, progress=progress, failed=failed
    )


def predict_with_detector(
    detector,
    gt_json: str | Path,
    image_root: str | Path,
    batch_size: int = 2,
    score_thresh: float | None = None,
    progress: bool = True,
    failed: list[str] | None = None,
) -> list[dict]:
    """COCO-format detections of a loaded detector on every image of ``gt_json``, its
    categories the vocabulary (the generalized setting, as :func:`predict_with_method`).

    Args:
        detector: anything with the interface of :class:`ovdet.api.OVDetector` (``set_classes``,
            ``predict``, ``cfg.INPUT.MAX_LOAD_PIXELS``), e.g. an
            :class:`~ovdet.owl.OwlDetector`.
        gt_json, image_root: the COCO ground truth and the folder of its images.
        batch_size: images per forward pass.
        score_thresh: least score kept (``None``: the detector's).
        progress: a progress bar.
        failed: if given, the images that could not be read are appended to it.

    Returns:
        A list of ``{image_id, category_id, bbox: [x, y, w, h], score}``; an unreadable image
        is skipped with a warning.
    """
    from tqdm import tqdm

    from ovdet.data.coco import load_coco_detection
    from ovdet.data.image_io import load_image
    from ovdet.structures.detections import detection_records
    from ovdet.utils.errors import ImageError

    records = load_coco_detection(str(gt_json), str(image_root), split=None, filter_empty=False)
    detector.set_classes(records.class_names)
    max_pixels = detector.cfg.INPUT.MAX_LOAD_PIXELS
    logger.info("predicting on %d images of %s", len(records.images), gt_json)
    results, unreadable = [], []
    images = records.images
    for start in tqdm(
        range(0, len(images), batch_size), desc="inference", disable=not progress, leave=False
    ):
        batch, loaded = [], []
        for record in images[start : start + batch_size]:
            try:
                loaded.append(load_image(record.path, max_pixels))
                batch.append(record)
            except ImageError as e:
                unreadable.append(str(e))
        if not loaded:
            continue
        dets = detector.predict(loaded, score_thresh=score_thresh, batch_size=len(loaded))
        for record, det in zip(batch, dets):
            names = records.class_names
            for entry in detection_records(det, str(record.path), record.image_id, names):
                results.append(
                    {"image_id": record.image_id, "bbox": entry["bbox"], "score": entry["score"],
                     "category_id": records.category_ids[entry["category_id"] - 1]}
                )  # fmt: skip
    if unreadable:
        logger.warning(
            "%d image(s) could not be read and have no detections: %s",
            len(unreadable), "; ".join(unreadable[:3]),
        )  # fmt: skip
    if failed is not None:
        failed.extend(unreadable)
    return results

"""The benchmark's F-VLM rows (``--fvlm``): a frozen CLIP backbone against crop rescoring.

:data:`~ovdet.ovbench.plan.FVLM_DETECTOR` freezes the run's own pre-trained CLIP (a ResNet CLIP)
as its backbone and trains an FPN and the detector heads on the base boxes (ViLD-text). Its two
rows: the detector alone, and with CLIP's scores of its regions pooled from the frozen backbone
(CLIP rescoring with ``SOURCE backbone``, no crops; :mod:`ovdet.core.clip_backbone`). Its
inference time with those scores is measured against the same checkpoint without them, and, in
the same run, crop rescoring's against the detector ``vild`` alone
(:func:`~ovdet.ovbench.timing.time_against`). Targets (at the default size): novel AP50 at least
that of ViLD-text + ViLD-image with crop rescoring, and an inference time at most
:data:`MAX_TIME_RATIO` x the detector without CLIP scores.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ovdet.ovbench.plan import FVLM_DETECTOR

__all__ = ["CROP_ROW", "MAX_TIME_RATIO", "fvlm_targets", "fvlm_time_line", "time_fvlm"]

logger = logging.getLogger(__name__)

#: The row F-VLM is measured against: the quick start's detector with CLIP crop rescoring.
CROP_ROW = "vild_clip_rescoring"
_CROP_DETECTOR = "vild"

#: The target: F-VLM's inference time at most this multiple of its detector's alone.
MAX_TIME_RATIO = 1.2


def _time_rescoring(checkpoint: Path, gt_json: Path, image_root: Path, device: str) -> dict:
    """Inference over every image of ``gt_json`` with CLIP rescoring (as the checkpoint's config
    sets its source) against without: :func:`~ovdet.ovbench.timing.time_against`."""
    from ovdet.api import OVDetector
    from ovdet.data.coco import load_coco_detection
    from ovdet.ovbench.timing import time_against
    from ovdet.tv.engine.inference import inference_on_records

    detector = OVDetector.from_checkpoint(checkpoint, device=device)
    records = load_coco_detection(str(gt_json), str(image_root), split=None, filter_empty=False)
    detector.set_classes(records.class_names)

    def run(rescoring: bool) -> int:
        detector.enable_clip_rescoring(rescoring)
        results = inference_on_records(
            detector.model, records, detector.cfg, device, progress=False
        )
        return len(results)

    return {**time_against(run), "images": len(records.images)}


def time_fvlm(out: Path, data, device: str) -> dict | None:
    """The inference-time ratios of the F-VLM detector in ``out`` (``fvlm``: with CLIP scores
    from its backbone / without) and of crop rescoring in the same run (``crops``: the detector
    ``vild`` with CLIP crop rescoring / without), cached in ``out/eval/fvlm_time.json`` with the
    checkpoints' SHA-256.

    Returns:
        ``{"fvlm": {...}, "crops": {...}}`` (each :func:`~ovdet.ovbench.timing.time_against`'s
        result and ``images``), or ``None`` where ``out`` has no trained F-VLM detector.
    """
    from ovdet.clip.spec import file_digest
    from ovdet.ovbench.stages import start_stage
    from ovdet.utils.io import atomic_write_json

    checkpoints = {
        "fvlm": out / FVLM_DETECTOR.name / "model_final.pt",
        "crops": out / _CROP_DETECTOR / "model_final.pt",
    }
    if not all(c.is_file() for c in checkpoints.values()):
        return None
    path = out / "eval" / "fvlm_time.json"
    digests = {k: file_digest(c) for k, c in checkpoints.items()}
    if path.is_file():
        cached = json.loads(path.read_text())
        if cached.get("checkpoint_sha256") == digests:
            return {k: cached[k] for k in checkpoints}
    gt, images = data.path("val_json"), data.path("val_images")
    timing = {}
    for key, checkpoint in checkpoints.items():
        start_stage(f"stage 3: inference time of {checkpoint.parent.name}, CLIP scores or not")
        timing[key] = _time_rescoring(checkpoint, gt, images, device)
    atomic_write_json({**timing, "checkpoint_sha256": digests}, path)
    logger.info(
        "stage 3: inference with / without CLIP scores: F-VLM %.2f x, crop rescoring %.2f x",
        timing["fvlm"]["ratio"], timing["crops"]["ratio"],
    )  # fmt: skip
    return timing


def fvlm_time_line(timing: dict) -> str:
    """The report's line of the two inference-time ratios."""
    f, c = timing["fvlm"], timing["crops"]
    return (
        f"Inference time with CLIP scores / without, on the {f['images']} validation images: "
        f"F-VLM (pooled from its frozen backbone) {f['ratio']:.2f} x ({f['candidate_s']:.1f} s "
        f"against {f['reference_s']:.1f} s), crop rescoring of ViLD-text + ViLD-image "
        f"{c['ratio']:.2f} x ({c['candidate_s']:.1f} s against {c['reference_s']:.1f} s); "
        f"medians of {f['rounds']} interleaved rounds, {f['torch_threads']} torch thread."
    )


def fvlm_targets(metrics: dict, timing: dict | None) -> list[dict]:
    """F-VLM's targets: novel AP50 at least the crop-rescoring row's, and inference with CLIP
    scores at most :data:`MAX_TIME_RATIO` x without (none without the F-VLM rows)."""
    from ovdet.ovbench.targets import _description, _target, ap50

    if "fvlm" not in metrics or CROP_ROW not in metrics:
        return []
    novel, crops = ap50(metrics, "fvlm", "novel"), ap50(metrics, CROP_ROW, "novel")
    targets = [
        _target(
            f"F-VLM novel AP50 {novel:.3f} >= {_description(CROP_ROW)} ({crops:.3f})",
            novel >= crops,
        )
    ]
    if timing:
        ratio, crop_ratio = timing["fvlm"]["ratio"], timing["crops"]["ratio"]
        targets.append(
            _target(
                f"F-VLM inference time {ratio:.2f} x its detector's alone <= {MAX_TIME_RATIO} x "
                f"(crop rescoring: {crop_ratio:.2f} x)",
                ratio <= MAX_TIME_RATIO,
            )
        )
    return targets

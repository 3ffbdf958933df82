"""The benchmark's mask rows (``--masks``), without training: which detector they add and when,
how a finished run takes them, the mask branch switched off for the time ratio, their target and
their lines in the report. The run itself: tests/ovbench/test_synthetic_benchmark_masks.py."""

from __future__ import annotations

import json

import pytest
import torch

from ovdet.ovbench.masks import (
    check_mask_annotations,
    mask_prediction,
    mask_row_label,
    mask_targets,
    masks_off,
)
from ovdet.ovbench.plan import DETECTORS, MASK_DETECTOR, SIZES
from ovdet.utils.errors import ConfigError


def _size(*argv):
    from ovdet.cli.benchmark_synthetic import _size, build_parser

    spec = _size(build_parser().parse_args(list(argv)))
    return SIZES[spec] if isinstance(spec, str) else spec


def test_masks_add_one_detector_trained_as_long_as_vild():
    assert _size("--small").detectors() == DETECTORS  # the quick start is unchanged
    assert MASK_DETECTOR not in DETECTORS
    for argv, iters in ((("--small",), 120), (("--small", "--iters", "7"), 7), ((), 600)):
        spec = _size(*argv, "--masks")
        assert spec.detectors() == [*DETECTORS, MASK_DETECTOR]
        assert spec.trains(MASK_DETECTOR)
        assert spec.iters("vild_masks") == spec.iters("vild") == iters


def test_the_mask_detector_is_vild_with_a_mask_head(tmp_path):
    """Its config is ViLD-text + ViLD-image's but for the mask head and its folder; it is a task
    of its own after the CLIP."""
    from ovdet.ovbench.data import BenchmarkData
    from ovdet.ovbench.plan import run_opts
    from ovdet.ovbench.schedule import stage_tasks
    from ovdet.ovbench.stages import detector_config

    spec, data = _size("--small", "--masks"), BenchmarkData(tmp_path)
    opts = run_opts(spec, True, ())
    vild = next(d for d in DETECTORS if d.name == "vild")

    def config(detector):
        cfg = detector_config(tmp_path, data, "local-dir:c", detector, spec, 0, "cpu", opts)
        return {k: v for k, v in _flat(cfg).items() if k != "OUTPUT_DIR"}

    with_masks, without = config(MASK_DETECTOR), config(vild)
    assert {k for k in with_masks if with_masks[k] != without[k]} == {"MODEL.MASK_ON"}
    assert with_masks["MODEL.MASK_ON"] is True
    tasks = {t.name: t for t in stage_tasks(tmp_path, data, None, spec, 0, "cpu", False, opts)}
    assert list(tasks) == ["clip", "closed_set", "vild", "vild_text", "vild_masks"]
    assert tasks["vild_masks"].after == ("clip",)


def _flat(cfg, prefix: str = "") -> dict:
    out = {}
    for key, value in cfg.items():
        if hasattr(value, "items"):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def test_masks_join_a_finished_run_which_keeps_its_inputs(tmp_path):
    from ovdet.ovbench.resume import check_same_inputs, run_inputs

    def check(spec):
        check_same_inputs(tmp_path, run_inputs(None, spec, 0, None, ()))

    small, masks = _size("--small"), _size("--small", "--masks")
    check(small)
    check(masks)  # the quick start's folder takes the mask detector
    recorded = json.loads((tmp_path / "inputs.json").read_text())["iterations"]
    assert recorded == {"closed_set": 240, "vild": 120, "vild_text": 120, "vild_masks": 120}
    check(small)  # and a run without it reuses the folder
    with pytest.raises(ConfigError, match=r"the iterations of vild_masks \(120, now 60\)"):
        check(_size("--small", "--masks", "--iters", "60"))


def test_masks_off_keeps_every_detection_and_drops_the_masks():
    from ovdet.config import load_config
    from ovdet.core import get_head
    from ovdet.tv import build_open_vocabulary_rcnn

    cfg = load_config("tiny", ["MODEL.OVDET.EMBED_DIM", "32", "MODEL.MASK_ON", "True"])
    torch.manual_seed(0)
    model = build_open_vocabulary_rcnn(cfg, embed_dim=32).eval()
    get_head(model).set_vocabulary(torch.nn.functional.normalize(torch.randn(5, 32), dim=-1))
    image = torch.rand(3, 96, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), get_head(model).score_threshold(0.0):
        (masks,) = model([image])
        with masks_off(model):
            (boxes,) = model([image])
        (again,) = model([image])
    assert len(masks["boxes"]) > 0 and "mask_probs" in masks and "mask_probs" not in boxes
    assert torch.equal(masks["boxes"], boxes["boxes"])
    assert torch.equal(masks["labels"], boxes["labels"])
    assert torch.equal(again["mask_probs"], masks["mask_probs"])  # the mask head is back


def _masks(box_novel, mask_novel) -> dict:
    def groups(novel):
        return {g: {"AP": 0.3, "AP50": v} for g, v in (("base", 0.6), ("novel", novel),
                                                         ("all", 0.5))}  # fmt: skip

    timing = {"boxes_s": 10.0, "masks_s": 13.0, "ratio": 1.3, "ratios": [1.3] * 5, "images": 100,
              "rounds": 5, "score_thresh": 0.05, "detections_per_image": 2.5,
              "torch_threads": 1}  # fmt: skip
    return {"label": "ViLD + mask head", "prediction": "detector", "box": groups(box_novel),
            "segm": groups(mask_novel), "num_detections": 9, "inference": timing}  # fmt: skip


def test_the_mask_detector_predicts_as_the_best_row_of_its_recipe():
    def metrics(vild, rescored):
        rows = {"vild_text": 0.9, "vild": vild, "vild_clip_rescoring": rescored}
        return {k: {"novel": {"AP50": v}} for k, v in rows.items()}

    best = mask_prediction(metrics(0.2, 0.4))
    assert best.key == "vild_clip_rescoring" and best.prediction == "clip_rescoring"
    assert mask_row_label(best) == "ViLD-text + ViLD-image, CLIP rescoring + mask head"
    assert mask_prediction(metrics(0.5, 0.4)).prediction == "detector"


def test_the_mask_target_is_novel_mask_ap50_against_box():
    assert mask_targets(None) == []
    (met,) = mask_targets(_masks(0.5, 0.4))
    assert met["status"] == "met" and "novel mask AP50 0.400 >= 0.8 x" in met["text"]
    assert mask_targets(_masks(0.5, 0.39))[0]["status"] == "MISSED"
    assert mask_targets(_masks(0.0, 0.0))[0]["status"] == "not applicable"


def test_the_report_shows_the_mask_rows_and_the_time_ratio():
    from ovdet.ovbench.report import format_results

    groups = {g: {"AP": 0.2, "AP50": 0.4} for g in ("base", "novel", "all")}
    report = {"metrics": {"vild": groups}, "clip_zero_shot": {"base": 0.9, "novel": 0.8},
              "targets": mask_targets(_masks(0.5, 0.45)), "masks": _masks(0.5, 0.45)}  # fmt: skip
    text = format_results(report)
    assert "| ViLD + mask head, box AP | 0.600 | 0.500 | 0.500 | 0.300 |" in text
    assert "| ViLD + mask head, mask AP | 0.600 | 0.450 | 0.500 | 0.300 |" in text
    assert "masks / boxes only: 1.30 x (the median of 5 rounds" in text
    assert "13.0 s against 10.0 s" in text
    assert "met: ViLD + mask head: novel mask AP50 0.450 >= 0.8 x its novel box AP50" in text
    del report["masks"]
    assert "box AP |" not in format_results(report)
    assert "Inference time" not in format_results(report)


def test_own_data_without_masks_is_refused_before_training(tmp_path):
    from ovdet.ovbench.data import BenchmarkData

    data = BenchmarkData(tmp_path)
    for key, segmentation in (("train_json", [[1, 1, 5, 1, 5, 5]]), ("val_json", None)):
        data.path(key).parent.mkdir(parents=True, exist_ok=True)
        ann = {"id": 4, "image_id": 1, "category_id": 1, "bbox": [1, 1, 4, 4]}
        if segmentation:
            ann["segmentation"] = segmentation
        data.path(key).write_text(json.dumps({"annotations": [ann]}))
    with pytest.raises(ConfigError, match="annotation 4 of .*instances_val.json has none"):
        check_mask_annotations(data)

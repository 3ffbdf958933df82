"""A converted Detic checkpoint in the tools: ``ovdet-infer`` (images and video),
``ovdet-evaluate``, ``ovdet-export-onnx`` (vocabulary as input) and the web demo accept it.

The checkpoint is converted from a hand-made Detic R50-C4 state dict (random weights); its
config is then pointed at a local stand-in CLIP of ViT-B/32's embedding size (nothing is
downloaded) and small test sizes, as a user's overrides would.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from ovdet.cli.convert_checkpoint import main as convert_main
from ovdet.cli.evaluate import main as evaluate_main
from ovdet.cli.infer import main as infer_main
from tests.d2.conftest import TINY_CLIP_CONFIG
from tests.detic_state import detic_layout_state


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """(converted checkpoint, a photo file): Detic layout -> ovdet, small test settings."""
    from skimage import data

    root = tmp_path_factory.mktemp("detic_checkpoint")
    source = root / "detic.pth"
    torch.save({"model": detic_layout_state()}, source)
    checkpoint = root / "boxsup.pt"
    assert convert_main(["--from", "detic", str(source), str(checkpoint), "-q"]) == 0
    clip_dir = root / "clip512"
    clip_dir.mkdir()
    tiny = json.loads(json.dumps(TINY_CLIP_CONFIG))
    tiny["model_cfg"]["embed_dim"] = 512
    (clip_dir / "open_clip_config.json").write_text(json.dumps(tiny))
    state = torch.load(checkpoint, weights_only=True)
    cfg = yaml.safe_load(state["config"])
    assert cfg["MODEL"]["OVDET"]["CLIP"] == "ViT-B-32:openai"
    cfg["MODEL"]["OVDET"].update(CLIP=f"local-dir:{clip_dir}", TEXT_CACHE_DIR=str(root))
    cfg["INPUT"].update(MIN_SIZE_TEST=96, MAX_SIZE_TEST=160)
    cfg["MODEL"]["RPN"]["POST_NMS_TOPK_TEST"] = 8
    cfg["MODEL"]["ROI_HEADS"]["SCORE_THRESH_TEST"] = 0.0
    state["config"] = yaml.safe_dump(cfg)
    torch.save(state, checkpoint)
    photo = root / "coffee.jpg"
    Image.fromarray(data.coffee()[::4, ::4].copy()).save(photo)
    return checkpoint, photo


def test_infer_accepts_a_converted_checkpoint(converted, tmp_path):
    checkpoint, photo = converted
    out = tmp_path / "out"
    code = infer_main(["--checkpoint", str(checkpoint), "--classes", "kite,umbrella,cup",
                       "--input", str(photo), "--output", str(out), "--no-draw", "-q"])  # fmt: skip
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert [c["name"] for c in results["categories"]] == ["kite", "umbrella", "cup"]
    assert len(results["images"]) == 1 and len(results["detections"]) > 0


def test_evaluate_accepts_a_converted_checkpoint(converted, tmp_path):
    checkpoint, photo = converted
    w, h = Image.open(photo).size
    gt = {
        "images": [{"id": 1, "file_name": photo.name, "height": h, "width": w}],
        "categories": [{"id": 1, "name": "cup"}, {"id": 2, "name": "umbrella"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [20, 20, 60, 40], "area": 2400,
             "iscrowd": 0},
        ],
    }  # fmt: skip
    gt_file = tmp_path / "gt.json"
    gt_file.write_text(json.dumps(gt))
    metrics = tmp_path / "metrics.json"
    args = ["--checkpoint", str(checkpoint), "--gt", str(gt_file), "--image-root",
            str(photo.parent), "--output", str(metrics), "-q"]  # fmt: skip
    code = evaluate_main(args)
    assert code == 0
    assert metrics.is_file() and json.loads(metrics.read_text())


def test_onnx_export_of_a_converted_checkpoint(converted, tmp_path):
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (extra 'deploy')")
    from ovdet.api import OVDetector
    from ovdet.cli.export_onnx import main as export_main
    from ovdet.export.runtime import OnnxDetector

    checkpoint, photo = converted
    assert export_main(["--checkpoint", str(checkpoint), "--output", str(tmp_path), "-q"]) == 0
    torch_detector = OVDetector.from_checkpoint(checkpoint)
    onnx_detector = OnnxDetector(tmp_path, providers=["CPUExecutionProvider"])
    image = np.asarray(Image.open(photo))
    (ours,) = torch_detector.predict(image, classes="kite,umbrella,cup")
    (theirs,) = onnx_detector.predict(image, classes="kite,umbrella,cup")
    assert len(ours.scores) > 0
    np.testing.assert_array_equal(theirs.labels, ours.labels)
    np.testing.assert_allclose(theirs.scores, ours.scores, atol=1e-4)
    np.testing.assert_allclose(theirs.boxes, ours.boxes, rtol=1e-3, atol=1e-2)


def test_video_accepts_a_converted_checkpoint(converted, tmp_path):
    av = pytest.importorskip("av", reason="PyAV (av) is not installed")
    from tests.cli.test_video import make_clip

    checkpoint, _ = converted
    clip = tmp_path / "clip.mp4"
    make_clip(clip, "libx264" if "libx264" in av.codecs_available else "mpeg4")
    out = tmp_path / "out"
    code = infer_main(["--checkpoint", str(checkpoint), "--classes", "kite,cup", "--input",
                       str(clip), "--fps", "1", "--output", str(out), "--no-progress"])  # fmt: skip
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert [im["timestamp"] for im in results["images"]] == [0.0, 1.0]
    assert results["detections"] and {d["category"] for d in results["detections"]} <= {
        "kite",
        "cup",
    }


def test_web_demo_serves_a_converted_checkpoint(converted, tmp_path):
    pytest.importorskip("gradio", reason="the web demo needs gradio")
    from ovdet.demo import DemoModel, detect_files

    checkpoint, photo = converted
    model = DemoModel.from_checkpoint(checkpoint)
    result = detect_files(model, [photo], "kite, umbrella, cup", model.default_templates, 0.0,
                          False)  # fmt: skip
    assert result.messages == [] and result.rows
    assert {row[1] for row in result.rows} <= {"kite", "umbrella", "cup"}
    # the same detections as the command line on the same photo (one code path)
    out = tmp_path / "cli"
    assert infer_main(["--checkpoint", str(checkpoint), "--classes", "kite, umbrella, cup",
                       "--input", str(photo), "--output", str(out), "--no-draw",
                       "--score-thresh", "0", "-q"]) == 0  # fmt: skip
    cli = json.loads((out / "results.json").read_text())["detections"]
    assert [d["score"] for d in cli] == [d["score"] for d in result.results["detections"]]

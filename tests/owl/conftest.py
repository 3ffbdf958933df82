"""Tiny random OWL-ViT and OWLv2 models saved with ``save_pretrained`` (nothing downloaded)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

_TOWER = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
          "num_attention_heads": 2}  # fmt: skip
_TEXT = {**_TOWER, "max_position_embeddings": 16}
_VISION = {**_TOWER, "image_size": 64, "patch_size": 16}


def _save_owl(folder, model_type: str):
    from tests.clip.test_clip_backends import _clip_tokenizer

    tokenizer = _clip_tokenizer(folder)
    tokenizer.model_max_length = 16
    if model_type == "owlv2":
        config = transformers.Owlv2Config(
            text_config=_TEXT, vision_config=_VISION, projection_dim=32
        )
        model_class, processor_class = transformers.Owlv2ForObjectDetection, "Owlv2"
        image_processor = transformers.Owlv2ImageProcessor(size={"height": 64, "width": 64})
    else:
        config = transformers.OwlViTConfig(
            text_config=_TEXT, vision_config=_VISION, projection_dim=32
        )
        model_class, processor_class = transformers.OwlViTForObjectDetection, "OwlViT"
        image_processor = transformers.OwlViTImageProcessor(
            size={"height": 64, "width": 64}, crop_size={"height": 64, "width": 64}
        )
    torch.manual_seed(0)
    model = model_class(config)
    with torch.no_grad():  # a random box head saturates its sigmoid (every box degenerate):
        model.box_head.dense2.weight.mul_(0.01)  # scaled down, boxes of many shapes and places
    model.save_pretrained(folder)
    processor = getattr(transformers, f"{processor_class}Processor")(image_processor, tokenizer)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def owlv2_dir(tmp_path_factory):
    """A folder: a tiny random ``Owlv2ForObjectDetection`` and its processor."""
    return _save_owl(tmp_path_factory.mktemp("owlv2"), "owlv2")


@pytest.fixture(scope="session")
def owlvit_dir(tmp_path_factory):
    """A folder: a tiny random ``OwlViTForObjectDetection`` and its processor."""
    return _save_owl(tmp_path_factory.mktemp("owlvit"), "owlvit")


def evaluate_infer_and_detector(
    tmp_path: Path, capsys, labels: Path, infer_out: Path, *detector_args: str
) -> tuple[dict, dict]:
    """``ovdet-evaluate`` metrics on ``labels`` of the detections ``ovdet-infer`` wrote to
    ``infer_out``, and of ``--detector ... DETECTOR_ARGS`` run by the evaluator itself."""
    from ovdet.cli import evaluate as evaluate_cli

    detections = tmp_path / "detections.json"
    results = json.loads((infer_out / "results.json").read_text())
    detections.write_text(json.dumps(results["detections"]))

    def evaluate(*source: str) -> dict:
        metrics = tmp_path / "metrics.json"
        argv = ["--gt", str(labels), "--output", str(metrics), "--no-progress", *source]
        assert evaluate_cli.main(argv) == 0, capsys.readouterr().err
        return json.loads(metrics.read_text())

    return evaluate("--results", str(detections)), evaluate("--detector", *detector_args)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A folder of two real photos (scikit-image's astronaut, cropped, and rocket)."""
    from PIL import Image

    skimage_data = pytest.importorskip("skimage.data")
    folder = tmp_path_factory.mktemp("photos")
    Image.fromarray(skimage_data.astronaut()[40:, :360]).save(folder / "astronaut.png")
    Image.fromarray(skimage_data.rocket()).save(folder / "rocket.png")
    return folder

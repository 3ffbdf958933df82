"""Tiny random OWL-ViT and OWLv2 models saved with ``save_pretrained`` (nothing downloaded)."""

from __future__ import annotations

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

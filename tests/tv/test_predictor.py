"""OVDetector's score joining: CLIP rescoring is refused on a model with ViLD's image head."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ovdet import OVDetector
from ovdet.utils.errors import ConfigError


@pytest.fixture(scope="module")
def image_head_checkpoint(tiny_clip, tmp_path_factory) -> Path:
    """A checkpoint of the tiny config with ``MODEL.OVDET.DISTILL.IMAGE_HEAD`` (random weights)."""
    from ovdet.config import load_config
    from ovdet.tv.engine.build import build_model
    from ovdet.tv.engine.checkpoint import save_checkpoint

    cfg = load_config("tiny", ["MODEL.OVDET.CLIP", tiny_clip, "MODEL.OVDET.TEMPLATES", "a",
                               "MODEL.OVDET.DISTILL.IMAGE_HEAD", "True"])  # fmt: skip
    torch.manual_seed(0)
    state = {"model": build_model(cfg).state_dict(), "config": cfg.dump(),
             "class_names": ["red square"], "embed_dim": 32}  # fmt: skip
    return save_checkpoint(state, tmp_path_factory.mktemp("image_head"), "model.pt")


def test_clip_rescoring_is_refused_on_a_model_with_an_image_head(image_head_checkpoint):
    detector = OVDetector.from_checkpoint(image_head_checkpoint)
    assert detector.head.has_image_head
    with pytest.raises(ConfigError, match="IMAGE_HEAD") as error:
        detector.enable_clip_rescoring(True)
    assert "\n" not in str(error.value) and "VILD_ENSEMBLE" in str(error.value)
    assert detector.head.clip_teacher is None  # refused before CLIP's image tower was loaded
    assert detector.head.clip_rescoring is None
    detector.enable_clip_rescoring(False)  # off is fine
    detector.predict([torch.zeros(48, 64, 3, dtype=torch.uint8).numpy()], ["red square"])
    with pytest.raises(ConfigError, match="IMAGE_HEAD"):  # nor with the config key
        OVDetector.from_checkpoint(
            image_head_checkpoint, overrides=["MODEL.OVDET.CLIP_RESCORING.ENABLED", "True"]
        )

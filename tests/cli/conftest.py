"""Fixtures of the command-line tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import TINY_CONFIG

#: The load limit (``INPUT.MAX_LOAD_PIXELS``) of :func:`untrained_checkpoint`: 100 x 80 pixels.
LOAD_LIMIT = 8000


@pytest.fixture(scope="session")
def untrained_checkpoint(tmp_path_factory, tiny_clip) -> Path:
    """The tiny detector, untrained (random weights, written by the training code's checkpoint
    writer), testing at 64 pixels, whose load limit is :data:`LOAD_LIMIT`: a test of how input
    and output are handled needs no training run."""
    from ovdet.config import load_config
    from ovdet.tv.engine.build import build_model
    from ovdet.tv.engine.checkpoint import save_checkpoint

    cfg = load_config(TINY_CONFIG, [
        "MODEL.OVDET.CLIP", tiny_clip, "MODEL.OVDET.TEMPLATES", "a", "INPUT.MIN_SIZE_TEST", "64",
        "INPUT.MAX_SIZE_TEST", "64", "INPUT.MAX_LOAD_PIXELS", str(LOAD_LIMIT),
    ])  # fmt: skip
    torch.manual_seed(0)
    state = {"model": build_model(cfg).state_dict(), "config": cfg.dump(),
             "class_names": ["red square", "blue circle"], "embed_dim": 32}  # fmt: skip
    return save_checkpoint(state, tmp_path_factory.mktemp("untrained"), "model_final.pt")


@pytest.fixture()
def no_model(monkeypatch):
    """Loading a checkpoint fails the test: a check that must come before it."""
    from ovdet.api import OVDetector

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(OVDetector, "from_checkpoint", refuse)

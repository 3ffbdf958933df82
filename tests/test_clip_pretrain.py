"""Tests of stage 0: the tiny CLIP config and pre-training through open_clip_train."""

from __future__ import annotations

import logging

import pytest
import torch

from ovdet.clip_pretrain import (
    TINY_CLIP_DIR,
    _log_level,
    export_clip_dir,
    pretrain_clip,
    tiny_clip_model,
)
from ovdet.data.synthetic import generate_synthetic_dataset
from ovdet.errors import CheckpointError, ConfigError, DataError

open_clip = pytest.importorskip("open_clip")


def test_tiny_clip_config_loads():
    name = tiny_clip_model()
    assert name == "local-dir:" + str(TINY_CLIP_DIR)
    model, _, preprocess = open_clip.create_model_and_transforms(name)
    tokenizer = open_clip.get_tokenizer(name)
    assert tokenizer.context_length == 16
    tokens = tokenizer(["a photo of a small purple hexagon", "red circle"])
    assert tokens.shape == (2, 16)
    with torch.no_grad():
        image = model.encode_image(torch.zeros(2, 3, 32, 32))
        text = model.encode_text(tokens)
    assert image.shape == text.shape == (2, 64)
    assert model.visual.image_size in (32, (32, 32))  # ModifiedResNet keeps an int


def test_log_levels():
    assert _log_level("2026-01-01,00:00:00 | INFO | Train Epoch: 0 [64/256]") == logging.INFO
    assert _log_level("2026-01-01,00:00:00 | INFO |   batch_size: 64") == logging.DEBUG
    assert _log_level("Traceback (most recent call last):") == logging.INFO


def test_bad_inputs(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        pretrain_clip(tmp_path / "missing.csv", tmp_path / "runs")
    csv_path = tmp_path / "train.csv"
    csv_path.write_text("filepath\ttitle\n")
    with pytest.raises(DataError):
        pretrain_clip(csv_path, tmp_path / "runs", epochs=0)
    with pytest.raises(ConfigError):
        pretrain_clip(csv_path, tmp_path / "runs", model=f"local-dir:{tmp_path}")


@pytest.mark.slow
def test_failing_trainer_raises(tmp_path):
    csv_path = tmp_path / "train.csv"
    csv_path.write_text("filepath\ttitle\n")
    with pytest.raises(CheckpointError, match="open_clip_train failed"):
        pretrain_clip(csv_path, tmp_path / "runs", extra_args=["--no-such-flag"])


@pytest.mark.slow
def test_pretrain_tiny_clip_end_to_end(tmp_path):
    data = generate_synthetic_dataset(
        tmp_path / "data",
        num_train_images=0,
        num_val_images=0,
        num_caption_crops=256,
        progress=False,
    )
    checkpoint = pretrain_clip(
        data.train_captions,
        tmp_path / "runs",
        epochs=1,
        batch_size=64,
        warmup=2,
        name="tiny",
    )
    assert checkpoint == tmp_path / "runs" / "tiny" / "checkpoints" / "epoch_1.pt"
    assert checkpoint.is_file()

    # open_clip ignores `pretrained=` for local-dir models: load the checkpoint afterwards.
    model, _, _ = open_clip.create_model_and_transforms(tiny_clip_model())
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    open_clip.load_checkpoint(model, str(checkpoint))
    trained = model.state_dict()
    assert any(not torch.equal(initial[k], trained[k]) for k in trained)

    # The exported folder loads config and weights from one `local-dir:` name.
    folder = export_clip_dir(checkpoint, tmp_path / "export")
    exported, _, _ = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    x = torch.rand(2, 3, 48, 48)
    with torch.no_grad():
        assert torch.allclose(model.encode_image(x), exported.encode_image(x))

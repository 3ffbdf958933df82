"""Tests of stage 0: the tiny CLIP config and pre-training through open_clip_train."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest
import torch

import ovdet.clip.pretrain
from ovdet.clip.pretrain import (
    TINY_CLIP_DIR,
    _log_level,
    export_clip_dir,
    last_error_line,
    pretrain_clip,
    tiny_clip_model,
)
from ovdet.data.synthetic import generate_synthetic_dataset
from ovdet.utils.errors import CheckpointError, ConfigError, DataError

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
    assert _log_level("2026-01-01,00:00:00 | WARNING | out of memory?") == logging.WARNING
    # expected when ovdet pre-trains from scratch
    expected = "2026-01-01,00:00:00 | WARNING | No weights loaded. Model initialized randomly."
    assert _log_level(expected) == logging.INFO
    # a multi-line message (the model printout) continues at its first line's level
    assert _log_level("    (conv1): Conv2d(3, 8)", logging.DEBUG) == logging.DEBUG
    assert _log_level("    (conv1): Conv2d(3, 8)", logging.INFO) == logging.INFO
    assert _log_level("Traceback (most recent call last):") == logging.WARNING
    assert _log_level("main.py: error: unrecognized arguments: --x") == logging.WARNING
    assert _log_level("I0101 00:00:00.000 torch chatter") == logging.DEBUG


#: open_clip_train's output as it starts: settings, its model printout, expected warnings, a
#: Python warning of its data loader, its progress.
_TRAINER_OUTPUT = [
    "2026-01-01,00:00:00 | INFO | Running with a single process. Device cpu.\n",
    "2026-01-01,00:00:00 | WARNING | Local config loaded, but no CLIP weights found in /c\n",
    "2026-01-01,00:00:00 | INFO | Model:\n",
    "2026-01-01,00:00:00 | INFO | CLIP(\n",
    "  (visual): ModifiedResNet(\n",
    "    (conv1): Conv2d(3, 8, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), bias=False)\n",
    ")\n",
    "2026-01-01,00:00:00 | INFO | Start epoch 0\n",
    "/x/dataloader.py:759: UserWarning: 'pin_memory' argument is set as true\n",
    "  super().__init__(loader)\n",
    "2026-01-01,00:00:01 | INFO | Train Epoch: 0 [ 128/9600 (1%)] Loss: 4.8\n",
]


def _fake_trainer(lines, returncode):
    class FakeTrainer:
        def __init__(self, cmd, **kwargs):
            self.stdout = iter(lines)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def wait(self):
            return returncode

    return FakeTrainer


def test_the_trainers_progress_is_ovdets_and_its_other_lines_its_own(tmp_path, monkeypatch, caplog):
    """Its progress is logged by ovdet (the console shows it); its settings, model printout and
    expected warnings under the logger ``open_clip_train`` at INFO (``log.txt`` only, at the
    default level: ovdet.cli.common)."""
    csv_path = tmp_path / "train.csv"
    csv_path.write_text("filepath\ttitle\na.png\ta red circle\n")
    monkeypatch.setattr(ovdet.clip.pretrain.subprocess, "Popen", _fake_trainer(_TRAINER_OUTPUT, 0))
    with caplog.at_level(logging.DEBUG), pytest.raises(CheckpointError, match="no checkpoint"):
        pretrain_clip(csv_path, tmp_path / "runs", name="r")
    trainer = [(r.name, r.levelno, r.getMessage()) for r in caplog.records if "[open_clip_train]"
               in r.getMessage() or r.name == "open_clip_train"]  # fmt: skip
    progress = [m for name, _, m in trainer if name == "ovdet.clip.pretrain"]
    assert progress == [
        "[open_clip_train] Start epoch 0",
        "[open_clip_train] Train Epoch: 0 [ 128/9600 (1%)] Loss: 4.8",
    ]
    own = [(level, m) for name, level, m in trainer if name == "open_clip_train"]
    assert len(own) == len(_TRAINER_OUTPUT) - 2
    assert {level for level, _ in own} == {logging.INFO}  # nothing shown at the default level
    assert any("ModifiedResNet" in m for _, m in own)


def test_an_interrupted_pre_training_leaves_no_trainer_running(tmp_path, monkeypatch):
    """Ctrl-C while the trainer runs ends the trainer too (``Popen``'s own exit would leave it
    running)."""
    csv_path = tmp_path / "train.csv"
    csv_path.write_text("filepath\ttitle\na.png\ta red circle\n")
    started = []
    real_popen = subprocess.Popen

    def sleeping_trainer(cmd, **kwargs):
        child = "print('Start epoch 0', flush=True); import time; time.sleep(120)"
        started.append(real_popen([sys.executable, "-c", child], **kwargs))
        return started[-1]

    def interrupt(line, previous=logging.INFO):
        raise KeyboardInterrupt

    monkeypatch.setattr(ovdet.clip.pretrain.subprocess, "Popen", sleeping_trainer)
    monkeypatch.setattr(ovdet.clip.pretrain, "_log_level", interrupt)
    with pytest.raises(KeyboardInterrupt):
        pretrain_clip(csv_path, tmp_path / "runs", name="r")
    try:
        assert started[0].wait(timeout=30) is not None  # ended, not left sleeping
    finally:
        started[0].kill()


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
def test_failing_trainer_raises_with_its_own_error_line(tmp_path):
    csv_path = tmp_path / "train.csv"
    csv_path.write_text("filepath\ttitle\na.png\ta red circle\n")
    with pytest.raises(CheckpointError, match="open_clip_train failed") as info:
        pretrain_clip(csv_path, tmp_path / "runs", extra_args=["--no-such-flag"])
    assert "error: unrecognized arguments: --no-such-flag" in str(info.value)
    assert "\n" not in str(info.value)  # one line for the command line's "error: ..."


def test_a_missing_caption_column_fails_before_the_trainer_starts(tmp_path, monkeypatch):
    csv_path = tmp_path / "train.csv"
    csv_path.write_text("filepath,caption\na.png,a red circle\n")
    monkeypatch.setattr(
        ovdet.clip.pretrain.subprocess, "Popen", lambda *a, **k: pytest.fail("trainer started")
    )
    with pytest.raises(DataError, match="no column 'title'.*'filepath', 'caption'"):
        pretrain_clip(csv_path, tmp_path / "runs", separator=",")


def test_caption_columns_and_separator_reach_the_trainer(tmp_path, monkeypatch):
    """The user's column names go to open_clip_train; its failure comes back as its own last
    error line (not buried under its other output)."""
    csv_path = tmp_path / "train.csv"
    csv_path.write_text("image,caption\na.png,a red circle\n")
    seen = {}

    class FakeTrainer:
        def __init__(self, cmd, **kwargs):
            seen["cmd"] = cmd
            self.stdout = iter(
                [
                    "2026-01-01,00:00:00 | INFO | Running with a config\n",
                    "Traceback (most recent call last):\n",
                    '  File "main.py", line 1, in <module>\n',
                    "KeyError: 'caption'\n",
                    "2026-01-01,00:00:01 | INFO | shutting down\n",
                ]
            )

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def wait(self):
            return 1

    monkeypatch.setattr(ovdet.clip.pretrain.subprocess, "Popen", FakeTrainer)
    with pytest.raises(CheckpointError) as info:
        pretrain_clip(
            csv_path, tmp_path / "runs", image_column="image", caption_column="caption",
            separator=",", name="r",
        )  # fmt: skip
    cmd = seen["cmd"]
    for flag, value in (
        ("--csv-img-key", "image"), ("--csv-caption-key", "caption"), ("--csv-separator", ",")
    ):  # fmt: skip
        assert cmd[cmd.index(flag) + 1] == value
    assert str(info.value).startswith("open_clip_train failed (exit status 1")
    assert str(info.value).endswith(": KeyError: 'caption'")


def test_last_error_line():
    assert last_error_line(["x", "ValueError: bad", "2026 | INFO | done"]) == "ValueError: bad"
    assert last_error_line(["main.py: error: unrecognized arguments: --x"]).endswith("--x")
    assert last_error_line(["2026-01-01 | ERROR | torch.cuda.OutOfMemoryError: CUDA"]) == (
        "torch.cuda.OutOfMemoryError: CUDA"
    )
    assert last_error_line(["just", "lines"]) == "lines"
    assert last_error_line([]) == ""


def test_export_loads_the_weights_without_a_random_init_warning(tmp_path, caplog):
    model = open_clip.create_model(tiny_clip_model())
    checkpoint = tmp_path / "epoch_1.pt"
    # As open_clip_train writes it under DDP: a "state_dict" entry with "module." keys.
    state = {"module." + k: v for k, v in model.state_dict().items()}
    torch.save({"epoch": 1, "name": "r", "state_dict": state}, checkpoint)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        folder = export_clip_dir(checkpoint, tmp_path / "export")
    assert not any("initialized randomly" in m for m in caplog.messages), caplog.messages
    exported = open_clip.create_model(f"local-dir:{folder}")
    for key, value in model.state_dict().items():
        assert torch.equal(exported.state_dict()[key], value), key
    torch.save({"state_dict": {"foo": torch.zeros(1)}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="cannot load"):
        export_clip_dir(tmp_path / "other.pt", tmp_path / "bad")
    assert not (tmp_path / "bad" / "open_clip_pytorch_model.bin").exists()


def test_docstrings_describe_the_shipped_tiny_clip():
    """configs/clip/tiny is a ModifiedResNet (layers as a list) at 32 px, as the docs say."""
    config = json.loads((TINY_CLIP_DIR / "open_clip_config.json").read_text())["model_cfg"]
    assert isinstance(config["vision_cfg"]["layers"], list)  # ModifiedResNet, not a ViT
    size = config["vision_cfg"]["image_size"]
    for doc in (ovdet.clip.pretrain.__doc__, pretrain_clip.__doc__ or ""):
        assert "ViT" not in doc and "48 px" not in doc
    assert f"ModifiedResNet image tower at {size} px" in " ".join(
        ovdet.clip.pretrain.__doc__.split()
    )


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

"""Stage 0: pre-train a CLIP on crop-caption pairs with open_clip's own trainer.

ovdet does not implement a CLIP trainer: :func:`pretrain_clip` runs
``python -m open_clip_train.main`` in a subprocess on a caption CSV (by default the format
:mod:`ovdet.data.synthetic` writes: tab separated, columns ``filepath`` and ``title``, image paths
relative to the CSV's directory; other separators and column names are arguments), streams its
log through :mod:`logging`, and returns the final checkpoint. Its progress (epochs, steps) is
logged as ovdet's; its other lines (settings, model printout) under the logger
``open_clip_train`` at their own level, which the tools' console leaves to ``log.txt``
(:mod:`ovdet.cli.common`). A failure of the trainer is raised with the trainer's own last error
line.

The default model is the tiny CLIP shipped in ``configs/clip/tiny``: a ModifiedResNet
image tower at 32 px (layers 1-1-1-1, width 16) and a 2-layer text transformer (width 64,
context 16), embedding 64. open_clip resizes every training image to the model's 32 px, so
larger crops are downscaled.

The checkpoint is open_clip_train's (``{"epoch", "name", "state_dict", "optimizer"}``). Load it
with the CLIP spec ``local-dir:CONFIG_DIR:CHECKPOINT`` (:func:`ovdet.clip.load_clip`), i.e.
``open_clip.create_model_and_transforms("local-dir:CONFIG_DIR")`` followed by
``open_clip.load_checkpoint(model, CHECKPOINT)``; open_clip ignores ``pretrained=`` for
``local-dir:`` models. Or :func:`export_clip_dir` writes a self-contained folder (config and
weights) that ``local-dir:FOLDER`` alone loads.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import pickle
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Sequence

from ovdet.config.catalog import CONFIG_DIR
from ovdet.utils.errors import CheckpointError, ConfigError, DataError
from ovdet.utils.io import atomic_torch_save

__all__ = [
    "TINY_CLIP_DIR",
    "check_caption_csv",
    "export_clip_dir",
    "is_progress_line",
    "last_error_line",
    "pretrain_clip",
    "tiny_clip_model",
]

logger = logging.getLogger(__name__)
#: The trainer's own lines other than its progress, at their own level.
trainer_logger = logging.getLogger("open_clip_train")

#: The tiny CLIP config shipped in the package: ModifiedResNet at 32 px (layers 1-1-1-1, width
#: 16), text transformer width 64 / 2 layers / context 16, embedding 64.
TINY_CLIP_DIR = CONFIG_DIR / "clip" / "tiny"

_LOCAL_DIR = "local-dir:"
_CONFIG_FILE = "open_clip_config.json"
_WEIGHTS_FILE = "open_clip_pytorch_model.bin"
# open_clip_train's progress lines, logged as ovdet's.
_PROGRESS_KEYS = ("Train Epoch", "Start epoch")
# Its warnings that are expected when ovdet pre-trains a CLIP from scratch: logged at INFO.
_EXPECTED_WARNINGS = ("no CLIP weights found", "Model initialized randomly")


def tiny_clip_model() -> str:
    """The open_clip model name of the tiny CLIP: ``local-dir:<absolute path>``.

    Raises:
        ConfigError: the config folder is missing (ovdet installed without the repository).
    """
    if not (TINY_CLIP_DIR / _CONFIG_FILE).is_file():
        raise ConfigError(
            f"the tiny CLIP config {TINY_CLIP_DIR / _CONFIG_FILE} is missing; pass a model name "
            "or 'local-dir:DIR' explicitly"
        )
    return _LOCAL_DIR + str(TINY_CLIP_DIR)


_ERROR_LINE = re.compile(r"^(\w+\.)*\w*(Error|Exception|Exit)\b|\berror: ")
_LOG_PREFIX = re.compile(r"^.*? \| [A-Z]+ \| ")
_LEVEL = re.compile(r" \| (DEBUG|INFO|WARNING|ERROR|CRITICAL) \| ")


def is_progress_line(line: str) -> bool:
    """Whether a line of ``open_clip_train``'s output reports its progress (epoch, step)."""
    return any(key in line for key in _PROGRESS_KEYS)


def _log_level(line: str, previous: int = logging.INFO) -> int:
    """The level of one line of ``open_clip_train``'s output.

    A line of its log carries its level (`` | INFO | ``), except the warnings a CLIP trained
    from scratch always gets (INFO); torch's C++ log lines are DEBUG; the start of an error (a
    traceback, an exception's line, argparse's ``error:``) is WARNING; any other line continues
    the message before it (e.g. the lines of its model printout) at that message's level
    ``previous``.
    """
    match = _LEVEL.search(line)
    if match:
        level = logging.getLevelName(match.group(1))
        if level == logging.WARNING and any(w in line for w in _EXPECTED_WARNINGS):
            return logging.INFO
        return level
    if re.match(r"[IDV]\d{4} ", line):
        return logging.DEBUG
    if line.startswith("Traceback") or _ERROR_LINE.search(line.strip()):
        return max(previous, logging.WARNING)
    return previous


def last_error_line(lines: Sequence[str]) -> str:
    """The last line of a program's output that states an error (an exception's ``Type: message``
    line, or argparse's ``prog: error: ...``); else the last line; '' for no output."""
    lines = [_LOG_PREFIX.sub("", line).strip() for line in lines if line.strip()]
    for line in reversed(lines):
        if _ERROR_LINE.search(line):
            return line
    return lines[-1] if lines else ""


def check_caption_csv(path: Path, columns: Sequence[str], separator: str = "\t") -> None:
    """Fail early (before the trainer starts) if the CSV lacks a column or rows.

    Raises:
        DataError: a column is missing (the columns found are named), or no data row.
    """
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f, delimiter=separator)
            header = next(reader, [])
            has_row = next(reader, None) is not None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"cannot read caption CSV {path}: {e}") from None
    missing = [c for c in columns if c not in header]
    if missing:
        raise DataError(
            f"caption CSV {path} has no column {missing[0]!r} (columns with separator "
            f"{separator!r}: {', '.join(map(repr, header)) or 'none'}); name the image and caption "
            "columns (--image-column, --caption-column) and the separator (--csv-separator)"
        )
    if not has_row:
        raise DataError(f"caption CSV {path} has a header but no rows")


def _absolute_model(model: str) -> str:
    """``local-dir:`` names made absolute (the trainer runs in another working directory)."""
    if not model.startswith(_LOCAL_DIR):
        return model
    path = Path(model[len(_LOCAL_DIR) :]).expanduser().resolve()
    if not (path / _CONFIG_FILE).is_file():
        raise ConfigError(f"CLIP model folder {path} has no {_CONFIG_FILE}")
    return _LOCAL_DIR + str(path)


def pretrain_clip(
    captions_csv: str | Path,
    output_dir: str | Path,
    *,
    model: str | None = None,
    epochs: int = 10,
    batch_size: int = 256,
    lr: float = 2e-3,
    warmup: int = 100,
    weight_decay: float = 0.1,
    workers: int = 0,
    seed: int = 0,
    device: str = "cpu",
    precision: str | None = None,
    name: str | None = None,
    keep_all_checkpoints: bool = False,
    log_every_n_steps: int = 10,
    image_column: str = "filepath",
    caption_column: str = "title",
    separator: str = "\t",
    extra_args: Sequence[str] = (),
) -> Path:
    """Train a CLIP from scratch (or fine-tune one) with ``open_clip_train`` on a caption CSV.

    Args:
        captions_csv: a CSV with an image-path and a caption column (``image_column`` and
            ``caption_column``, separated by ``separator``); relative image paths are relative
            to the CSV's directory.
        output_dir: open_clip_train's ``--logs`` folder; the run writes ``output_dir/name/``
            (``out.log``, ``params.txt``, ``checkpoints/epoch_N.pt``).
        model: open_clip model name; default: the repository's tiny CLIP
            (:func:`tiny_clip_model`). Relative ``local-dir:`` paths are resolved here.
        epochs: training epochs.
        batch_size: batch size (also the number of negatives of the contrastive loss).
        lr: peak learning rate (AdamW, cosine schedule).
        warmup: linear warm-up steps.
        weight_decay: AdamW weight decay.
        workers: data-loader worker processes (0 loads in the training process).
        seed: random seed of the trainer.
        device: torch device, e.g. ``cpu`` or ``cuda``.
        precision: open_clip_train ``--precision``; default ``fp32`` on CPU, ``amp`` otherwise.
        name: run name (a new folder under ``output_dir``); default: a unique time-stamped one.
        keep_all_checkpoints: keep every epoch's checkpoint; by default each epoch's checkpoint
            replaces the previous one (still resumable with ``--resume latest``).
        log_every_n_steps: trainer log frequency.
        image_column: the CSV column of image paths.
        caption_column: the CSV column of captions.
        separator: the CSV's column separator (one character).
        extra_args: more ``open_clip_train`` flags, appended last (they override ours).

    Returns:
        Path of the final checkpoint, ``output_dir/name/checkpoints/epoch_{epochs}.pt``.

    Raises:
        DataError: the CSV is missing, lacks a column or rows, or the arguments are invalid.
        CheckpointError: the trainer failed (its last error line is in the message) or wrote no
            final checkpoint.
    """
    csv_path = Path(captions_csv).expanduser().resolve()
    if not csv_path.is_file():
        raise DataError(f"caption CSV {csv_path} does not exist")
    if epochs < 1 or batch_size < 1 or lr <= 0 or warmup < 0 or workers < 0:
        raise DataError(
            "need epochs >= 1, batch_size >= 1, lr > 0, warmup >= 0 and workers >= 0; got "
            f"{epochs}, {batch_size}, {lr}, {warmup}, {workers}"
        )
    model = _absolute_model(model if model is not None else tiny_clip_model())
    check_caption_csv(csv_path, (image_column, caption_column), separator)
    logs = Path(output_dir).expanduser().resolve()
    name = name or f"clip-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    run_dir = logs / name
    if run_dir.exists():
        raise DataError(f"run folder {run_dir} already exists; choose another name")
    if precision is None:
        precision = "fp32" if device == "cpu" else "amp"

    cmd = [
        sys.executable,
        "-m",
        "open_clip_train.main",
        "--train-data", str(csv_path),
        "--dataset-type", "csv",
        "--csv-separator", separator,
        "--csv-img-key", image_column,
        "--csv-caption-key", caption_column,
        "--model", model,
        "--device", device,
        "--precision", precision,
        "--report-to", "",
        "--name", name,
        "--logs", str(logs),
        "--save-frequency", "1",
        "--zeroshot-frequency", "0",
        "--epochs", str(epochs),
        "--batch-size", str(batch_size),
        "--lr", str(lr),
        "--warmup", str(warmup),
        "--wd", str(weight_decay),
        # CLIP's ViT settings; open_clip_train only picks them for names containing "vit".
        "--beta1", "0.9",
        "--beta2", "0.98",
        "--eps", "1e-6",
        "--workers", str(workers),
        "--seed", str(seed),
        "--log-every-n-steps", str(log_every_n_steps),
    ]  # fmt: skip
    if not keep_all_checkpoints:
        cmd.append("--delete-previous-checkpoint")
    cmd.extend(extra_args)

    logs.mkdir(parents=True, exist_ok=True)
    logger.info("pre-training CLIP %s on %s -> %s", model, csv_path, run_dir)
    logger.debug("command: %s", " ".join(cmd))
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    tail: deque[str] = deque(maxlen=50)
    start = time.monotonic()
    # The CSV's image paths are relative to its folder, so the trainer runs there.
    with subprocess.Popen(
        cmd,
        cwd=csv_path.parent,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    ) as proc:
        assert proc.stdout is not None
        level = logging.INFO
        try:
            for line in proc.stdout:
                line = line.rstrip()
                if not line:
                    continue
                tail.append(line)
                level = _log_level(line, level)
                if is_progress_line(line):
                    logger.info("[open_clip_train] %s", _LOG_PREFIX.sub("", line))
                else:
                    trainer_logger.log(level, "%s", line)
        except BaseException:  # interrupted (Ctrl-C, SIGTERM in a worker): no trainer left on
            proc.kill()
            raise
        returncode = proc.wait()

    checkpoint = run_dir / "checkpoints" / f"epoch_{epochs}.pt"
    # open_clip_train exits with status 0 even when it refuses to run, so check the output too.
    if returncode != 0 or not checkpoint.is_file():
        log = run_dir / "out.log"
        where = f"; its log: {log}" if log.is_file() else ""
        raise CheckpointError(
            f"open_clip_train failed (exit status {returncode}, no checkpoint {checkpoint.name}): "
            f"{last_error_line(tail) or 'no output'}{where}"
        )
    logger.info("CLIP pre-training done in %.0f s: %s", time.monotonic() - start, checkpoint)
    return checkpoint


def export_clip_dir(
    checkpoint: str | Path, output_dir: str | Path, *, model: str | None = None
) -> Path:
    """Write a self-contained open_clip folder: the model config and the checkpoint's weights.

    The folder holds ``open_clip_config.json`` and ``open_clip_pytorch_model.bin`` (the bare
    state dict, without optimizer state), so ``local-dir:FOLDER`` loads config *and* weights,
    in :func:`open_clip.create_model_and_transforms` as in :func:`ovdet.clip.load_clip`.

    Args:
        checkpoint: an ``open_clip_train`` checkpoint (or a bare state dict).
        output_dir: the folder to write (created; existing files are replaced).
        model: the checkpoint's model name; default: the tiny CLIP. For a built-in name the
            config comes from ``open_clip.get_model_config`` with default preprocessing.

    Returns:
        ``output_dir``; use it as ``"local-dir:" + str(output_dir)``.

    Raises:
        CheckpointError: the checkpoint is missing or does not fit the model.
        ConfigError: unknown model.
    """
    import open_clip
    from open_clip.factory import load_state_dict

    model = _absolute_model(model if model is not None else tiny_clip_model())
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if model.startswith(_LOCAL_DIR):
        shutil.copyfile(Path(model[len(_LOCAL_DIR) :]) / _CONFIG_FILE, out / _CONFIG_FILE)
    else:
        model_cfg = open_clip.get_model_config(model)
        if model_cfg is None:
            raise ConfigError(f"unknown open_clip model {model!r}")
        config = {"model_cfg": model_cfg, "preprocess_cfg": {}}
        (out / _CONFIG_FILE).write_text(json.dumps(config, indent=4) + "\n", encoding="utf-8")
    weights = out / _WEIGHTS_FILE
    try:  # open_clip's reader: weights only, the "state_dict" entry, no DDP "module." prefix
        state = load_state_dict(str(checkpoint), device="cpu")
    except (OSError, RuntimeError, KeyError, pickle.UnpicklingError) as e:
        raise CheckpointError(f"cannot read CLIP checkpoint {checkpoint}: {e}") from e
    atomic_torch_save(state, weights)
    # The weights are in the folder before the model is built from it, so open_clip loads (and
    # checks) them instead of announcing a randomly initialised model.
    try:
        clip = open_clip.create_model(_LOCAL_DIR + str(out), device="cpu")
    except (RuntimeError, KeyError, ValueError) as e:
        weights.unlink(missing_ok=True)
        raise CheckpointError(f"cannot load CLIP checkpoint {checkpoint} into {model}: {e}") from e
    atomic_torch_save(clip.state_dict(), weights)
    logger.info("exported CLIP weights to %s (use 'local-dir:%s')", out, out)
    return out

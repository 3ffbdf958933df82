"""Bad inputs and faults: what the user sees (docs/RELIABILITY.md lists every case and its test).

The detector here is built and saved untrained (no training run): these tests check how inputs
are handled, not what is detected.
"""

from __future__ import annotations

import errno
import json
import os
import struct
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from ovdet import OVDetector
from ovdet.cli import evaluate as evaluate_cli
from ovdet.cli import infer as infer_cli
from ovdet.cli import train as train_cli
from ovdet.clip.text_classifier import TextClassifierBuilder, Vocabulary
from ovdet.config import load_config
from ovdet.data.image_io import read_image
from ovdet.tv.engine.build import build_model
from ovdet.tv.engine.checkpoint import load_checkpoint, save_checkpoint
from ovdet.utils.errors import CheckpointError, ImageError, VocabularyError
from ovdet.utils.io import atomic_write_json
from ovdet.utils.visualizer import save_image
from tests.conftest import (
    TINY_CLIP_CONFIG,
    TINY_CONFIG,
    assert_one_line_error,
    toy_overrides,
    write_toy_dataset,
)

CLASSES = "red square,blue circle"


def _tiny_config(clip: str, *extra: str):
    return load_config(
        TINY_CONFIG,
        ["MODEL.OVDET.CLIP", clip, "MODEL.OVDET.TEMPLATES", "a", "INPUT.MIN_SIZE_TEST", "64",
         "INPUT.MAX_SIZE_TEST", "64", *extra],
    )  # fmt: skip


def _save_untrained(cfg, folder: Path, embed_dim: int = 32) -> Path:
    """An untrained detector written by the training code's own checkpoint writer."""
    torch.manual_seed(0)
    model = build_model(cfg)
    state = {"model": model.state_dict(), "config": cfg.dump(),
             "class_names": ["red square", "blue circle"], "embed_dim": embed_dim}  # fmt: skip
    return save_checkpoint(state, folder, "model_final.pt")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_clip) -> Path:
    return _save_untrained(_tiny_config(tiny_clip), tmp_path_factory.mktemp("untrained"))


@pytest.fixture(scope="module")
def detector(checkpoint) -> OVDetector:
    return OVDetector.from_checkpoint(checkpoint)


@pytest.fixture(scope="module")
def clip16(tmp_path_factory) -> str:
    """A CLIP spec of a model embedding into 16 dimensions (the tiny detector uses 32)."""
    other = json.loads(json.dumps(TINY_CLIP_CONFIG))
    other["model_cfg"]["embed_dim"] = 16
    root = tmp_path_factory.mktemp("clip16")
    (root / "open_clip_config.json").write_text(json.dumps(other))
    return f"local-dir:{root}"


def _one_line_error(capsys, *fragments: str) -> str:
    return assert_one_line_error(capsys.readouterr().err, *fragments)


# ---------------------------------------------------------------------------------------- images


@pytest.mark.parametrize("width,height", [(1, 1), (1000, 1), (1, 1000)])
def test_tiny_and_thin_images_give_boxes_inside_them(detector, tmp_path, width, height):
    Image.new("RGB", (width, height), (200, 10, 10)).save(tmp_path / "x.png")
    assert read_image(tmp_path / "x.png").shape == (height, width, 3)
    [det] = detector.predict(str(tmp_path / "x.png"), classes=CLASSES, score_thresh=0.0)
    assert len(det) > 0
    x1, y1, x2, y2 = det.boxes.T  # in the original's pixels
    assert (x1 >= 0).all() and (y1 >= 0).all()
    assert (x2 <= width + 1e-3).all() and (y2 <= height + 1e-3).all()


def test_huge_image_is_downscaled_on_load_and_resized_per_config(detector, tmp_path):
    path = tmp_path / "huge.jpg"
    Image.new("L", (12000, 12000), 90).save(path, quality=30)  # 144 Mpixel
    max_pixels = detector.cfg.INPUT.MAX_LOAD_PIXELS
    loaded = read_image(path, max_pixels)
    assert loaded.shape[0] * loaded.shape[1] <= max_pixels and loaded.shape[0] == loaded.shape[1]
    tensor, scale, _ = detector._prepare(str(path))
    assert tuple(tensor.shape) == (3, 64, 64)  # INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST
    [det] = detector.predict(str(path), classes=CLASSES, score_thresh=0.0)
    assert len(det) > 0
    assert det.boxes.max() <= 12000 + 1e-2 and det.boxes.max() > 64  # in the original's pixels


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_decompression_bomb_is_an_image_error(tmp_path):
    (tmp_path / "bomb.png").write_bytes(_png_header_only(30000, 30000))  # 900 Mpixel claimed
    with pytest.raises(ImageError, match="too large to decode safely"):
        read_image(tmp_path / "bomb.png", max_pixels=1_000_000)


def test_truncated_jpeg_is_an_image_error(tmp_path):
    Image.effect_noise((120, 120), 60).convert("RGB").save(tmp_path / "full.jpg")
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="truncated"):
        read_image(tmp_path / "cut.jpg")


def test_wrong_extension_is_read_by_content(tmp_path):
    Image.new("RGB", (9, 4), (1, 2, 3)).save(tmp_path / "really_a_png.jpg", format="PNG")
    assert read_image(tmp_path / "really_a_png.jpg").shape == (4, 9, 3)
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(ImageError, match="cannot read image"):
        read_image(tmp_path / "notes.png")
    folder = tmp_path / "folder"
    folder.mkdir()
    for name in ("A.JPG", "b.jpeg", "c.txt", "d.png.bak"):
        (folder / name).write_bytes(b"x")
    assert [p.name for p in infer_cli.collect_images(str(folder))] == ["A.JPG", "b.jpeg"]


# ---------------------------------------------------------------------------------- vocabularies


def test_unicode_names_are_encoded_and_cached(tiny_clip, tmp_path):
    vocab = Vocabulary.parse("café, 猫, Ünïcödé 🐱")
    assert vocab.names == ("café", "猫", "Ünïcödé 🐱")
    first = TextClassifierBuilder(tiny_clip, "a", cache_dir=tmp_path)
    emb = first(vocab)
    assert emb.shape == (3, 32) and torch.isfinite(emb).all()
    second = TextClassifierBuilder(tiny_clip, "a", cache_dir=tmp_path)
    assert torch.equal(second(vocab), emb) and second.num_text_tower_calls == 0


def test_vocabulary_files_with_a_byte_order_mark(tmp_path):
    (tmp_path / "classes.txt").write_text("\ufeffcar, automobile\nperson\n", encoding="utf-8")
    assert Vocabulary.parse(str(tmp_path / "classes.txt")).names == ("car", "person")
    (tmp_path / "cats.json").write_text(
        "\ufeff" + json.dumps({"categories": [{"id": 1, "name": "dog"}]}), encoding="utf-8"
    )
    assert Vocabulary.parse(str(tmp_path / "cats.json")).names == ("dog",)
    (tmp_path / "bad.txt").write_text("car\n, automobile\n")
    with pytest.raises(VocabularyError, match="line 2: no class name"):
        Vocabulary.parse(str(tmp_path / "bad.txt"))


@pytest.mark.parametrize("spec", ["cat, cat ", "big  dog,big dog", [" cat", "cat"], "Cat,CAT"])
def test_duplicates_after_stripping_are_rejected(spec):
    with pytest.raises(VocabularyError, match="appears twice"):
        Vocabulary.parse(spec)


def test_twenty_thousand_names(detector, tmp_path):
    names = [f"object {i}" for i in range(20_000)]
    image = np.full((64, 64, 3), 120, np.uint8)
    [det] = detector.predict(image, classes=names, score_thresh=1e-3)
    assert detector.class_names == names
    assert len(det) > 0 and det.labels.max() < 20_000
    assert set(det.names) <= set(names)


# --------------------------------------------------------------------------------------- configs


@pytest.mark.parametrize(
    "argv,message",
    [
        (["SOLVER.BASE_LRR", "0.1"], "did you mean SOLVER.BASE_LR?"),
        (["SOLVER.MAX_ITER", "many"], "SOLVER.MAX_ITER in the command line must be of type int"),
        (["SOLVER.BASE_LR"], "KEY VALUE pairs"),
        (["--config", "/nonexistent/config.yaml"], "does not exist"),
    ],
)
def test_train_cli_config_errors_are_one_line(capsys, argv, message):
    args = argv if argv[0] == "--config" else ["--config", str(TINY_CONFIG), *argv]
    assert train_cli.main(args) == 2
    _one_line_error(capsys, message)


# ----------------------------------------------------------------------------------- checkpoints


def _not_ovdet_checkpoints(folder: Path, checkpoint: Path) -> dict[str, tuple[Path, str]]:
    data = checkpoint.read_bytes()
    cases = {
        "zero bytes": (b"", "truncated or not a PyTorch checkpoint"),
        "truncated": (data[: len(data) // 3], "truncated"),
        "text": (b"hello, I am a text file", "not a PyTorch checkpoint"),
    }
    paths = {}
    for name, (content, message) in cases.items():
        paths[name] = (folder / f"{name.replace(' ', '_')}.pt", message)
        paths[name][0].write_bytes(content)
    state = load_checkpoint(checkpoint)
    others = {
        "a CLIP weights file": ({"state_dict": {"w": torch.zeros(1)}}, "not an ovdet checkpoint"),
        "a detectron2 checkpoint": (
            {"model": state["model"], "iteration": 9},
            "no readable config",
        ),
        "a closed-set model": (
            {**state, "config": state["config"].replace("OpenVocabularyRCNN", "FasterRCNN")},
            "closed-set FasterRCNN model",
        ),
    }
    for name, (obj, message) in others.items():
        paths[name] = (folder / f"{name.replace(' ', '_')}.pt", message)
        torch.save(obj, paths[name][0])
    return paths


def test_files_that_are_not_ovdet_checkpoints_are_checkpoint_errors(checkpoint, tmp_path):
    for name, (path, message) in _not_ovdet_checkpoints(tmp_path, checkpoint).items():
        with pytest.raises(CheckpointError, match=message) as info:
            OVDetector.from_checkpoint(path)
        assert "\n" not in str(info.value), name


@pytest.mark.parametrize(
    "override,message",
    [
        (["MODEL.FPN.OUT_CHANNELS", "32"], "checkpoint (64, 64, 1, 1) vs model (32, 64, 1, 1)"),
        (["MODEL.RESNETS.DEPTH", "34"], "weights missing"),  # 18 -> 34: more blocks
        (["MODEL.OVDET.BACKGROUND", "fixed"], "1 unexpected, e.g. roi_heads.box_predictor"),
    ],
)
def test_checkpoint_of_another_architecture_is_a_clear_error(checkpoint, override, message):
    with pytest.raises(CheckpointError, match="does not fit this model") as info:
        OVDetector.from_checkpoint(checkpoint, overrides=override)
    assert message in str(info.value)


def test_clip_of_another_dimension_is_a_clear_error(checkpoint, clip16, tmp_path):
    with pytest.raises(CheckpointError, match="embeds into 16 dimensions .* 32-dimensional"):
        OVDetector.from_checkpoint(checkpoint, clip=clip16)
    # The CLIP named in the checkpoint itself changed size since training.
    cfg = _tiny_config(clip16, "MODEL.OVDET.EMBED_DIM", "32")
    moved = OVDetector.from_checkpoint(_save_untrained(cfg, tmp_path))
    with pytest.raises(CheckpointError, match="embeds into 16 dimensions"):
        moved.set_classes(CLASSES)


@pytest.mark.parametrize("case", ["truncated", "other CLIP"])
def test_infer_cli_checkpoint_errors_are_one_line(checkpoint, clip16, tmp_path, capsys, case):
    image = tmp_path / "x.png"
    Image.new("RGB", (20, 20)).save(image)
    ckpt, extra, message = checkpoint, [], "embeds into 16"
    if case == "truncated":
        ckpt = tmp_path / "cut.pt"
        ckpt.write_bytes(checkpoint.read_bytes()[:5000])
        message = "truncated"
    else:
        extra = ["--clip", clip16]
    argv = ["--checkpoint", str(ckpt), "--classes", CLASSES, "--input", str(image),
            "--output", str(tmp_path / "out"), "--no-progress", *extra]  # fmt: skip
    assert infer_cli.main(argv) == 2
    _one_line_error(capsys, message)
    assert not (tmp_path / "out" / "results.json").exists()


# ------------------------------------------------------------------------- output folder faults


def _cli_argv(cli: str, tmp_path: Path, output: Path) -> list[str]:
    """Arguments whose other inputs are all missing: if the output check did not come first,
    the error would be about those instead."""
    missing = str(tmp_path / "missing")
    if cli == "train":
        return ["--config", str(TINY_CONFIG), "--no-progress", "OUTPUT_DIR", str(output),
                "DATASETS.TRAIN_JSON", f"{missing}.json"]  # fmt: skip
    if cli == "infer":
        image = tmp_path / "x.png"
        Image.new("RGB", (8, 8)).save(image)
        return ["--checkpoint", f"{missing}.pt", "--classes", "cat", "--input", str(image),
                "--output", str(output), "--no-progress"]  # fmt: skip
    return ["--gt", f"{missing}.json", "--checkpoint", f"{missing}.pt", "--image-root", missing,
            "--output", str(output / "metrics.json")]  # fmt: skip


MAINS = {"train": train_cli.main, "infer": infer_cli.main, "evaluate": evaluate_cli.main}


@pytest.mark.parametrize("cli", list(MAINS))
def test_unwritable_output_folder_is_reported_before_work(tmp_path, capsys, cli):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert MAINS[cli](_cli_argv(cli, tmp_path, blocker / "out")) == 2
    _one_line_error(capsys, "is not writable")


@pytest.mark.parametrize("cli", list(MAINS))
def test_full_output_folder_is_reported_before_work(tmp_path, capsys, monkeypatch, cli):
    real = os.statvfs

    def nearly_full(path):
        return SimpleNamespace(f_bavail=2, f_frsize=real(path).f_frsize)

    monkeypatch.setattr(os, "statvfs", nearly_full)
    assert MAINS[cli](_cli_argv(cli, tmp_path, tmp_path / "out")) == 2
    _one_line_error(capsys, "bytes free")


def test_evaluate_output_that_is_a_folder_is_reported_before_work(tmp_path, capsys):
    (tmp_path / "out").mkdir()
    argv = _cli_argv("evaluate", tmp_path, tmp_path)
    argv[-1] = str(tmp_path / "out")
    assert evaluate_cli.main(argv) == 2
    _one_line_error(capsys, "is a folder")


# --------------------------------------------------------------------------------- atomic writes


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _no_temporary_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_failed_checkpoint_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    save_checkpoint({"model": {"w": torch.ones(3)}, "iteration": 1}, tmp_path, "model_final.pt")

    def half_then_full(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        _disk_full()

    monkeypatch.setattr(torch, "save", half_then_full)
    for name in ("model_final.pt", "model_0000002.pt"):
        with pytest.raises(OSError, match="No space left"):
            save_checkpoint({"model": {"w": torch.zeros(3)}, "iteration": 2}, tmp_path, name)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last_checkpoint", "model_final.pt"]
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pt"
    assert load_checkpoint(tmp_path / "model_final.pt")["iteration"] == 1


def test_failed_json_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "results.json"
    atomic_write_json({"detections": [1, 2]}, path)
    with pytest.raises(TypeError):  # fails after json.dump has written part of the file
        atomic_write_json({"detections": [1, 2, 3], "bad": object()}, path)
    assert json.loads(path.read_text()) == {"detections": [1, 2]}
    assert _no_temporary_files(tmp_path)


def test_failed_image_write_leaves_no_partial_picture(tmp_path, monkeypatch):
    def half_then_full(self, fp, *args, **kwargs):
        fp.write(b"\xff\xd8\xff half a jpeg")
        _disk_full()

    monkeypatch.setattr(Image.Image, "save", half_then_full)
    with pytest.raises(OSError, match="No space left"):
        save_image(Image.new("RGB", (8, 8)), tmp_path / "x_det.jpg")
    assert list(tmp_path.iterdir()) == []


def test_outputs_get_the_usual_file_mode(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    atomic_write_json([], tmp_path / "r.json")
    save_image(Image.new("RGB", (4, 4)), tmp_path / "x.png")
    for name in ("r.json", "x.png"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


def test_infer_cli_disk_full_at_the_results_file(checkpoint, tmp_path, capsys, monkeypatch):
    import ovdet.utils.io

    images = tmp_path / "in"
    images.mkdir()
    for i in range(2):
        Image.new("RGB", (32, 32), (40 * i, 90, 90)).save(images / f"{i}.png")

    def half_then_full(obj, f, **kwargs):
        f.write('{"categories": [')
        _disk_full()

    monkeypatch.setattr(ovdet.utils.io, "json", SimpleNamespace(dump=half_then_full))
    out = tmp_path / "out"
    argv = ["--checkpoint", str(checkpoint), "--classes", CLASSES, "--input", str(images),
            "--output", str(out), "--no-progress", "--score-thresh", "0"]  # fmt: skip
    assert infer_cli.main(argv) == 2
    _one_line_error(capsys, "No space left on device")
    # no partial JSON (log.txt holds the run's log lines)
    assert sorted(p.name for p in out.iterdir()) == ["0_det.jpg", "1_det.jpg", "log.txt"]
    for name in ("0_det.jpg", "1_det.jpg"):
        with Image.open(out / name) as drawn:
            drawn.load()  # complete pictures


def test_resume_ignores_a_metrics_line_cut_short(tmp_path):
    from ovdet.tv.engine.trainer import Trainer

    lines = [json.dumps({"iteration": i, "total_loss": 1.0 / i}) for i in (1, 2, 3, 4)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + '\n{"iteration": 5, "tot')
    Trainer._truncate_metrics(SimpleNamespace(output_dir=tmp_path, is_main=True), 3)
    assert (tmp_path / "metrics.jsonl").read_text().splitlines() == lines[:3]


# ----------------------------------------------------------------------- batches with bad inputs


def test_infer_cli_keeps_the_good_results_of_a_batch(checkpoint, tmp_path, capsys):
    images = tmp_path / "in"
    images.mkdir()
    Image.new("RGB", (40, 30), (200, 20, 20)).save(images / "good.png")
    Image.new("RGB", (1, 1)).save(images / "tiny.png")
    Image.new("I;16", (20, 20), 3000).save(images / "deep.png")
    Image.new("CMYK", (20, 20), (0, 90, 90, 0)).save(images / "print.jpg")
    (images / "empty.jpg").write_bytes(b"")
    (images / "junk.png").write_bytes(b"\x89PNG not really")
    (images / "half.png").write_bytes((images / "good.png").read_bytes()[:50])
    out = tmp_path / "out"
    argv = ["--checkpoint", str(checkpoint), "--classes", CLASSES, "--input", str(images),
            "--output", str(out), "--no-progress", "--score-thresh", "0",
            "--batch-size", "3"]  # fmt: skip
    assert infer_cli.main(argv) == 0
    captured = capsys.readouterr()
    assert "4 image(s) processed" in captured.out and "3 skipped" in captured.out
    results = json.loads((out / "results.json").read_text())
    good = ["deep.png", "good.png", "print.jpg", "tiny.png"]
    assert sorted(Path(p).name for p in results["failed"]) == ["empty.jpg", "half.png", "junk.png"]
    assert sorted({Path(d["file_name"]).name for d in results["detections"]}) == good
    assert sorted(p.name for p in out.glob("*_det.jpg")) == [
        f"{Path(n).stem}_det.jpg" for n in good
    ]


def test_evaluation_inference_skips_unreadable_images(checkpoint, tmp_path, caplog):
    from ovdet.tv.engine.inference import predict_coco_dataset

    gt = write_toy_dataset(tmp_path, 3, seed=1)
    (tmp_path / "images" / "0001.png").write_bytes(b"corrupt")
    with caplog.at_level("WARNING", logger="ovdet.tv.engine.inference"):
        results = predict_coco_dataset(str(checkpoint), str(gt), str(tmp_path / "images"))
    assert {r["image_id"] for r in results} == {100, 102}
    assert "1 image(s) could not be read" in caplog.text and "0001.png" in caplog.text


def test_evaluation_inference_of_a_thin_image_gives_boxes_inside_it(checkpoint, tmp_path):
    from ovdet.tv.engine.inference import predict_coco_dataset

    Image.new("RGB", (1, 1000), (30, 30, 200)).save(tmp_path / "thin.png")
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "thin.png", "width": 1, "height": 1000}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 10, 1, 50]}],
        "categories": [{"id": 1, "name": "blue circle"}],
    }))  # fmt: skip
    # threshold 0: the boxes' frame is under test, not how confident the tiny model is
    results = predict_coco_dataset(str(checkpoint), str(gt), str(tmp_path), score_thresh=0.0)
    assert results
    for r in results:
        x, y, w, h = r["bbox"]
        assert x >= 0 and x + w <= 1 + 0.02 and y >= 0 and y + h <= 1000 + 0.02, r["bbox"]


def test_corrupt_training_image_stops_training_with_one_line(tiny_clip, tmp_path, capsys):
    toy = tmp_path / "toy"
    write_toy_dataset(toy, 4, seed=2)
    for image in (toy / "images").iterdir():  # whichever the first batch draws is unreadable
        image.write_bytes(b"corrupt")
    (toy / "split.json").write_text(json.dumps({"base": ["red square", "blue circle"],
                                                "novel": ["green square"]}))  # fmt: skip
    overrides = toy_overrides(toy, tiny_clip, tmp_path / "out", max_iter=1)
    assert train_cli.main(["--config", str(TINY_CONFIG), "--no-progress", *overrides]) == 2
    _one_line_error(capsys, "cannot read image", str(toy / "images"))


def test_a_tool_stopped_by_sigterm_runs_its_clean_up_and_exits_143(tmp_path):
    """SIGTERM's default action ends a process with no clean-up; a tool's ``finally`` blocks
    (which end its subprocesses, remove temporary files) must run."""
    import signal
    import subprocess
    import sys
    import time

    ready, cleaned = tmp_path / "ready", tmp_path / "cleaned"
    script = (
        "import time\n"
        "from pathlib import Path\n"
        "from ovdet.cli.common import cli_entry\n"
        "@cli_entry\n"
        "def main(argv=None):\n"
        "    try:\n"
        f"        Path({str(ready)!r}).touch()\n"
        "        time.sleep(120)\n"
        "    finally:\n"
        f"        Path({str(cleaned)!r}).touch()\n"
        "    return 0\n"
        "raise SystemExit(main())\n"
    )
    tool = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not ready.is_file() and time.monotonic() < deadline and tool.poll() is None:
            time.sleep(0.05)
        assert ready.is_file(), tool.stderr.read() if tool.poll() is not None else "not ready"
        tool.send_signal(signal.SIGTERM)
        _, stderr = tool.communicate(timeout=60)
    finally:
        tool.kill()
    assert tool.returncode == 128 + signal.SIGTERM
    assert cleaned.is_file()
    assert stderr.strip().endswith("terminated")

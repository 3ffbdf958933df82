"""Image exemplars on the command line: ``ovdet-infer --exemplar`` and a vocabulary file's
exemplar lines, ``ovdet-evaluate --exemplar-file``, and each bad exemplar as one ``error:``
line before any model loads, with nothing written to the cache (docs/RELIABILITY.md)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

from ovdet.cli import evaluate as evaluate_cli
from ovdet.cli import infer as infer_cli
from tests.conftest import TINY_CONFIG, assert_one_line_error


@pytest.fixture()
def photo(tmp_path) -> Path:
    """A 40 x 30 photo with a green square at (10, 5), 12 x 12."""
    image = Image.new("RGB", (40, 30), (120, 120, 120))
    ImageDraw.Draw(image).rectangle((10, 5, 21, 16), fill=(30, 200, 60))
    path = tmp_path / "photo.png"
    image.save(path)
    return path


def _cache() -> Path:
    return Path(os.environ["OVDET_CACHE_DIR"]) / "exemplars"


def _cached() -> set[Path]:
    """The exemplar cache's files (the cache folder is the test session's)."""
    return set(_cache().glob("*")) if _cache().is_dir() else set()


def test_infer_with_exemplar_classes_marks_them_in_the_results(
    untrained_checkpoint, photo, tmp_path
):
    out = tmp_path / "out"
    before = _cached()
    classes = tmp_path / "classes.txt"
    classes.write_text("red square\nlogo=photo.png  # the whole image\n")
    argv = ["--checkpoint", str(untrained_checkpoint), "--classes", str(classes),
            "--exemplar", f"my mug={photo}:10,5,12,12", "--exemplar", f"red square+={photo}",
            "--exemplar-source", "region", "--input", str(photo), "--output", str(out),
            "--score-thresh", "0", "--no-draw", "--no-progress"]  # fmt: skip
    assert infer_cli.main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["categories"] == [
        {"id": 1, "name": "red square", "query": "text+exemplar"},
        {"id": 2, "name": "logo", "query": "exemplar"},
        {"id": 3, "name": "my mug", "query": "exemplar"},
    ]
    kinds = {c["name"]: c["query"] for c in results["categories"]}
    detections = results["detections"]
    assert detections and all(d["query"] == kinds[d["category"]] for d in detections)
    # cached: the box and the whole photo (given twice), and the photo's reference regions
    assert len(_cached() - before) == 3


@pytest.mark.parametrize(
    "spec, message",
    [
        ("mug={photo}:30,5,20,10", "exemplar box {photo}:30,5,20,10 is not inside its 40x30 image"),
        ("mug={photo}:3,5,0,10", "has zero area"),
        ("mug={photo}:3,5,x,10", "is not four numbers x,y,w,h"),
        ("mug={missing}", "cannot read exemplar image {missing}"),
        ("mug={broken}", "exemplar image {broken}"),
        ("mug", "has no '='; write name=image.jpg:x,y,w,h"),
        ("kitty={photo}", "exemplar class 'kitty' is a synonym of class 'cat'"),
        ("cat+={photo}", "class 'cat' is given both by exemplars alone"),
    ],
)  # fmt: skip
def test_bad_exemplars_are_one_line_errors_before_the_model_loads(
    spec, message, photo, tmp_path, capsys, no_model
):
    paths = {"photo": photo, "missing": tmp_path / "missing.png", "broken": tmp_path / "bad.png"}
    paths["broken"].write_bytes(b"not a png")
    out = tmp_path / "out"
    before = _cached()
    (tmp_path / "classes.txt").write_text("cat, kitty\n")  # kitty: a synonym of cat
    argv = ["--checkpoint", str(tmp_path / "x.pt"), "--classes", str(tmp_path / "classes.txt"),
            "--input",
            str(photo), "--output", str(out), "--exemplar", f"cat={photo}",
            "--exemplar", spec.format(**paths)]  # fmt: skip
    assert infer_cli.main(argv) == 2
    assert_one_line_error(capsys.readouterr().err, message.format(**paths))
    assert not out.exists() and _cached() == before


def test_infer_needs_classes_or_exemplars(photo, tmp_path, capsys, no_model):
    argv = ["--checkpoint", "x.pt", "--input", str(photo), "--output", str(tmp_path / "o")]
    assert infer_cli.main(argv) == 2
    assert_one_line_error(capsys.readouterr().err, "--classes, --exemplar or both")


def _toy_args(toy: Path, *more: str) -> list[str]:
    return ["--gt", str(toy / "instances.json"), "--image-root", str(toy / "images"),
            "--split", str(toy / "split.json"), "--no-progress", *more]  # fmt: skip


def test_evaluate_takes_a_category_by_exemplars_from_a_file(
    untrained_checkpoint, toy_dataset, tmp_path
):
    exemplars = tmp_path / "exemplars.txt"
    exemplars.write_text(f"green square={toy_dataset / 'images' / '0000.png'}:0,0,20,20\n")
    out = tmp_path / "metrics.json"
    before = _cached()
    argv = _toy_args(toy_dataset, "--checkpoint", str(untrained_checkpoint), "--exemplar-file",
                     str(exemplars), "--score-thresh", "0.001", "--output", str(out))  # fmt: skip
    assert evaluate_cli.main(argv) == 0
    assert json.loads(out.read_text())["num_detections"] > 0
    # its CLIP crop embedding, and the detector's regions sampled on its image (the centring)
    assert len(_cached() - before) == 2


@pytest.fixture()
def closed_set_checkpoint(tmp_path, tiny_clip) -> Path:
    """torchvision's closed-set Faster R-CNN (random weights): no region embeddings."""
    from ovdet.config import load_config
    from ovdet.tv.engine.build import build_model
    from ovdet.tv.engine.checkpoint import save_checkpoint

    cfg = load_config(TINY_CONFIG, ["MODEL.OVDET.CLIP", tiny_clip,
                                    "MODEL.META_ARCHITECTURE", "FasterRCNN"])  # fmt: skip
    torch.manual_seed(0)
    state = {"model": build_model(cfg, num_classes=2).state_dict(), "config": cfg.dump(),
             "class_names": ["red square", "blue circle"]}  # fmt: skip
    return save_checkpoint(state, tmp_path, "closed.pt")


def test_exemplars_on_a_closed_set_detector_are_a_one_line_error(
    closed_set_checkpoint, toy_dataset, tmp_path, capsys
):
    before = _cached()
    argv = _toy_args(toy_dataset, "--checkpoint", str(closed_set_checkpoint), "--exemplar",
                     f"green square={toy_dataset / 'images' / '0000.png'}")  # fmt: skip
    assert evaluate_cli.main(argv) == 2
    assert_one_line_error(capsys.readouterr().err, "closed-set", "exemplar classes need")
    assert _cached() == before

"""Search by an image crop: the crop, embedded as an image exemplar by the trained tiny
detector, ranks the indexed regions of its class first (precision@10 far above chance); a bad
crop is one ``error:`` line before the model loads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("faiss", reason="faiss-cpu is not installed")

from ovdet.cli.search import main  # noqa: E402
from ovdet.search import RegionIndex  # noqa: E402
from ovdet.search.evaluation import box_iou, ground_truth_boxes  # noqa: E402
from tests.conftest import assert_one_line_error  # noqa: E402


def _is_right(entry: dict, truth: dict) -> bool:
    """Whether a hit overlaps a ground-truth box (IoU >= 0.5) of its file."""
    boxes = truth.get(str(Path(entry["file"]).resolve()), [])
    return any(box_iou(entry["box"], g) >= 0.5 for g in boxes)


def _a_box_of(coco: dict, name: str, image_root: Path, skip: set[str]) -> str:
    """``path:x,y,w,h`` of the first ``name`` box in an image not in ``skip``."""
    category = next(c["id"] for c in coco["categories"] if c["name"] == name)
    files = {im["id"]: im["file_name"] for im in coco["images"]}
    for a in coco["annotations"]:
        if a["category_id"] == category and files[a["image_id"]] not in skip:
            return f"{image_root / files[a['image_id']]}:" + ",".join(str(v) for v in a["bbox"])
    raise AssertionError(f"no {name} outside the index")


@pytest.mark.slow
def test_query_by_an_image_crop_finds_its_class(trained_checkpoint, toy_dataset, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    indexed = sorted((toy_dataset / "images").iterdir())[:24]
    for f in indexed:
        shutil.copy(f, images / f.name)
    index_file = tmp_path / "toy.index"
    assert main(["index", "--checkpoint", str(trained_checkpoint), "--input", str(images),
                 "--index", str(index_file), "--no-progress", "--no-images"]) == 0  # fmt: skip
    index = RegionIndex.load(index_file)
    coco = json.loads((toy_dataset / "instances.json").read_text())
    regions = [e for e in index.entries if e["kind"] == "region"]
    for name in ("red square", "blue circle"):
        crop = _a_box_of(coco, name, toy_dataset / "images", {f.name for f in indexed})
        out = tmp_path / name
        assert main(["query", "--index", str(index_file), "--image", crop, "--exemplar-source",
                     "region", "--output", str(out)]) == 0  # fmt: skip
        found = json.loads((out / "hits.json").read_text())
        assert found["image"] == crop and found["exemplar_source"] == "region"
        truth = ground_truth_boxes(coco, images, name)
        precision = sum(_is_right(h, truth) for h in found["hits"]) / len(found["hits"])
        chance = sum(_is_right(e, truth) for e in regions) / len(regions)
        assert len(found["hits"]) == 10 and precision >= max(0.7, 2 * chance), (
            name, precision, chance,
        )  # fmt: skip


def test_a_bad_crop_is_a_one_line_error(tmp_path, capsys):
    from PIL import Image

    Image.new("RGB", (20, 10)).save(tmp_path / "a.png")
    for crop, message in [
        (f"{tmp_path / 'a.png'}:15,0,10,10", "is not inside its 20x10 image"),
        (f"{tmp_path / 'none.png'}", "cannot read exemplar image"),
    ]:
        argv = ["query", "--index", str(tmp_path / "none.index"), "--image", crop,
                "--output", str(tmp_path / "o")]  # fmt: skip
        assert main(argv) == 2
        assert_one_line_error(capsys.readouterr().err, message)
    assert not (tmp_path / "o").exists()

"""Text search: an index of regions and whole images, incremental and resumable, queried by text
with a contact sheet; precision@10 of the trained tiny model far above chance."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("faiss", reason="faiss-cpu is not installed")

from ovdet.cli.search import main  # noqa: E402
from ovdet.search import RegionIndex  # noqa: E402
from ovdet.search.evaluation import box_iou, ground_truth_boxes  # noqa: E402
from ovdet.utils.errors import DataError  # noqa: E402


def test_index_search_and_persistence(tmp_path):
    rng = np.random.default_rng(0)
    index = RegionIndex(8, {"clip": "x"})
    vectors = rng.normal(size=(20, 8)).astype(np.float32)
    entries = [{"file": f"{i}.png", "kind": "region" if i % 2 else "image",
                "box": [0, 0, i + 1, i + 1], "timestamp": None} for i in range(20)]  # fmt: skip
    index.add(vectors, entries)
    hits = index.search(vectors[7] * 3.0, k=3)
    assert hits[0].file == "7.png" and abs(hits[0].score - 1.0) < 1e-5
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    regions = index.search(vectors[4], k=5, kind="region")
    assert len(regions) == 5 and all(h.kind == "region" for h in regions)
    path = tmp_path / "a.index"
    index.save(path)
    loaded = RegionIndex.load(path)
    assert loaded.meta == {"clip": "x"} and len(loaded) == 20
    assert [h.file for h in loaded.search(vectors[3], 4)] == [h.file for h in index.search(
        vectors[3], 4)]  # fmt: skip
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DataError, match="not a readable search index"):
        RegionIndex.load(path)
    with pytest.raises(DataError, match="does not exist"):
        RegionIndex.load(tmp_path / "none.index")


def _chance(index: RegionIndex, truth: dict) -> float:
    """The fraction of indexed regions that are right: precision@k of a random ranking."""
    from pathlib import Path

    regions = [e for e in index.entries if e["kind"] == "region"]
    right = sum(
        any(box_iou(e["box"], g) >= 0.5 for g in truth.get(str(Path(e["file"]).resolve()), []))
        for e in regions
    )
    return right / len(regions)


@pytest.mark.slow
def test_search_cli_end_to_end(trained_checkpoint, toy_dataset, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    all_files = sorted((toy_dataset / "images").iterdir())
    for f in all_files[:30]:
        shutil.copy(f, images / f.name)
    index_file = tmp_path / "toy.index"
    base = ["index", "--checkpoint", str(trained_checkpoint), "--input", str(images),
            "--index", str(index_file), "--no-progress", "--save-every", "4"]  # fmt: skip
    assert main(base) == 0
    first = RegionIndex.load(index_file)
    assert len(first.files) == 30
    assert sum(e["kind"] == "image" for e in first.entries) == 30

    # Incremental: only the new files are embedded.
    for f in all_files[30:]:
        shutil.copy(f, images / f.name)
    capsys.readouterr()
    assert main(base) == 0
    assert "18 file(s) indexed, 30 already there" in capsys.readouterr().out
    index = RegionIndex.load(index_file)
    assert len(index.files) == 48 and index.entries[: len(first)] == first.entries

    # Query: hits and a contact sheet.
    out = tmp_path / "query"
    assert main(["query", "--index", str(index_file), "--text", "red square",
                 "--output", str(out)]) == 0  # fmt: skip
    hits = json.loads((out / "hits.json").read_text())["hits"]
    assert len(hits) == 10 and all(h["kind"] == "region" for h in hits)
    from PIL import Image

    assert Image.open(out / "contact_sheet.jpg").size[0] > 0

    # Precision@10 per class against the ground truth, far above chance.
    report = tmp_path / "precision.json"
    assert main(["evaluate", "--index", str(index_file), "--gt",
                 str(toy_dataset / "instances.json"), "--images", str(images),
                 "--classes", "red square,blue circle", "--output", str(report)]) == 0  # fmt: skip
    precision = json.loads(report.read_text())["precision"]
    coco = json.loads((toy_dataset / "instances.json").read_text())
    for name in ("red square", "blue circle"):
        chance = _chance(index, ground_truth_boxes(coco, images, name))
        assert precision[name] >= max(0.7, 3 * chance), (name, precision, chance)


@pytest.mark.slow
def test_interrupted_indexing_resumes(trained_checkpoint, toy_dataset, tmp_path, monkeypatch):
    from ovdet.search.indexer import Indexer

    images = tmp_path / "images"
    shutil.copytree(toy_dataset / "images", images)
    files = sorted(images.iterdir())[:12]
    for f in sorted(images.iterdir())[12:]:
        f.unlink()
    index_file = tmp_path / "r.index"
    args = ["index", "--checkpoint", str(trained_checkpoint), "--input", str(images), "--index",
            str(index_file), "--no-progress", "--save-every", "3", "--no-images"]  # fmt: skip
    real = Indexer._file_vectors
    seen = []

    def dies_on_the_eighth(self, path):
        seen.append(path)
        if len(seen) == 8:
            raise KeyboardInterrupt
        return real(self, path)

    monkeypatch.setattr(Indexer, "_file_vectors", dies_on_the_eighth)
    assert main(args) == 130
    partial = RegionIndex.load(index_file)  # saved every 3 files: 6 of the 7 done
    assert sorted(partial.files) == [str(f) for f in files[:6]]
    monkeypatch.setattr(Indexer, "_file_vectors", real)
    assert main(args) == 0
    assert sorted(RegionIndex.load(index_file).files) == [str(f) for f in files]


@pytest.mark.slow
def test_bad_input_is_one_line_error(trained_checkpoint, tmp_path, capsys):
    bad = tmp_path / "bad.index"
    bad.write_text("garbage")
    cases = [
        (["index", "--checkpoint", str(trained_checkpoint), "--input", str(tmp_path / "none"),
          "--index", str(tmp_path / "i.index")], "matches no file"),
        (["query", "--index", str(tmp_path / "none.index"), "--text", "cat", "--output",
          str(tmp_path / "o")], "does not exist"),
        (["query", "--index", str(bad), "--text", "cat", "--output", str(tmp_path / "o")],
         "not a readable search index"),
    ]  # fmt: skip
    for argv, message in cases:
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and message in err and "\n" not in err

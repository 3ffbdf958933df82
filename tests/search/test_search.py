"""Text search: an index of regions and whole images, incremental and resumable, queried by text
with a contact sheet; precision@10 of the trained tiny model far above chance."""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("faiss", reason="faiss-cpu is not installed")

from ovdet.cli.search import main  # noqa: E402
from ovdet.search import Indexer, RegionIndex  # noqa: E402
from ovdet.search.evaluation import box_iou, ground_truth_boxes  # noqa: E402
from ovdet.utils.errors import DataError, ImageError  # noqa: E402


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


class _ContentIndexer(Indexer):
    """An indexer without a model: a file ``img:<R>:<seed>`` gives R region vectors and one image
    vector drawn from ``seed``; anything else is unreadable."""

    def __init__(self) -> None:  # no detector
        pass

    def _file_vectors(self, path):
        parts = Path(path).read_text().split(":")
        if parts[0] != "img":
            raise ImageError(f"cannot read image {path}")
        regions, seed = int(parts[1]), int(parts[2])
        vectors = np.random.default_rng(seed).normal(size=(regions + 1, 8))
        entries = [
            {
                "file": str(path),
                "kind": "region" if i < regions else "image",
                "box": [0, 0, i + 1, i + 1],
                "timestamp": None,
            }
            for i in range(regions + 1)
        ]
        yield vectors, entries  # fmt: skip


def _by_file(index: RegionIndex) -> Counter:
    return Counter((Path(e["file"]).name, e["kind"]) for e in index.entries)


def test_reindex_replaces_changed_files_skips_touched_ones_and_prunes(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name, content in [("a.png", "img:2:1"), ("b.png", "img:3:2"), ("c.png", "img:1:3"),
                          ("d.png", "img:2:4"), ("e.png", "img:1:5")]:  # fmt: skip
        (folder / name).write_text(content)
    files = sorted(folder.iterdir())
    index, indexer = RegionIndex(8), _ContentIndexer()
    first = indexer.index_files(index, files, lambda: None, progress=False)
    assert first["indexed"] == 5 and len(index) == 14
    a_before = [e for e in index.entries if e["file"].endswith("a.png")]

    later = os.stat(folder / "a.png").st_mtime + 10
    os.utime(folder / "a.png", (later, later))  # touched: same content
    (folder / "b.png").write_text("img:1:9")  # another image: 1 region instead of 3
    (folder / "c.png").write_text("broken")  # now unreadable
    (folder / "d.png").unlink()
    stats = indexer.index_files(index, sorted(folder.iterdir()), lambda: None, progress=False)
    assert {k: stats[k] for k in ("indexed", "replaced", "skipped", "failed", "missing")} == {
        "indexed": 1, "replaced": 1, "skipped": 2, "failed": 1, "missing": 1}  # fmt: skip
    assert _by_file(index) == Counter({("a.png", "region"): 2, ("a.png", "image"): 1,
                                       ("b.png", "region"): 1, ("b.png", "image"): 1,
                                       ("d.png", "region"): 2, ("d.png", "image"): 1,
                                       ("e.png", "region"): 1, ("e.png", "image"): 1})  # fmt: skip
    assert [e for e in index.entries if e["file"].endswith("a.png")] == a_before
    assert index.index.ntotal == len(index.entries)
    # Every vector still sits beside its own entry: b's new image vector finds b's image entry.
    new_b = np.random.default_rng(9).normal(size=(2, 8))[1]
    [hit] = index.search(new_b, k=1, kind="image")
    assert hit.file == str(folder / "b.png") and hit.score == pytest.approx(1.0, abs=1e-5)
    assert index.files[str(folder / "a.png")]["mtime"] == later  # touched: no hash next time
    assert str(folder / "c.png") not in index.files  # retried next time

    stats = indexer.index_files(index, sorted(folder.iterdir()), lambda: None, False, prune=True)
    assert stats["pruned"] == 1 and not any(e["file"].endswith("d.png") for e in index.entries)
    assert sorted(Path(f).name for f in index.files) == ["a.png", "b.png", "e.png"]
    assert len(index) == index.index.ntotal == 7


def test_index_records_the_clip_spec_with_absolute_paths(tmp_path, monkeypatch):
    from types import SimpleNamespace

    (tmp_path / "clip").mkdir()
    monkeypatch.chdir(tmp_path)
    indexer = Indexer.__new__(Indexer)  # no model: only what meta reads
    cfg = SimpleNamespace(MODEL=SimpleNamespace(OVDET=SimpleNamespace(CLIP="local-dir:clip:w.pt")))
    indexer.detector = SimpleNamespace(cfg=cfg, head=SimpleNamespace(embed_dim=8))
    indexer.region_classes, indexer.min_score, indexer.teacher, indexer.fps = "object", 0, None, 1
    indexer.whole_images = False
    assert indexer.meta["clip"] == f"local-dir:{tmp_path}/clip:{tmp_path}/w.pt"


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
    assert "18 file(s) indexed (0 changed), 30 unchanged" in capsys.readouterr().out
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
def test_cli_reindex_after_touch_overwrite_and_delete(
    trained_checkpoint, toy_dataset, tmp_path, capsys
):
    images = tmp_path / "images"
    images.mkdir()
    sources = sorted((toy_dataset / "images").iterdir())
    for f in sources[:4]:
        shutil.copy(f, images / f.name)
    touched, overwritten, deleted = (images / f.name for f in sources[:3])
    index_file = tmp_path / "r.index"
    base = ["index", "--checkpoint", str(trained_checkpoint), "--input", str(images),
            "--index", str(index_file), "--no-progress"]  # fmt: skip
    assert main(base) == 0
    before = RegionIndex.load(index_file)
    kept = [e for e in before.entries if e["file"] == str(touched)]

    later = os.stat(touched).st_mtime + 10
    os.utime(touched, (later, later))
    shutil.copy(sources[10], overwritten)  # a different image under the same name
    os.utime(overwritten, (later, later))
    deleted.unlink()
    capsys.readouterr()
    assert main(base) == 0
    assert (
        "1 file(s) indexed (1 changed), 2 unchanged, 0 unreadable, 1 deleted file(s) kept "
        "(--prune drops them)" in capsys.readouterr().out
    )
    index = RegionIndex.load(index_file)
    assert [e for e in index.entries if e["file"] == str(touched)] == kept

    # The overwritten file has exactly the entries of its new content, regions not doubled.
    fresh_dir = tmp_path / "fresh"
    fresh_dir.mkdir()
    shutil.copy(sources[10], fresh_dir / overwritten.name)
    fresh_file = tmp_path / "fresh.index"
    assert main([*base[:4], str(fresh_dir), "--index", str(fresh_file), "--no-progress"]) == 0
    fresh = RegionIndex.load(fresh_file).entries
    now = [e for e in index.entries if e["file"] == str(overwritten)]
    assert [{**e, "file": ""} for e in now] == [{**e, "file": ""} for e in fresh]
    assert Counter(e["file"] for e in index.entries if e["kind"] == "image") == Counter(
        str(f) for f in [touched, overwritten, deleted, images / sources[3].name]
    )

    # A query lists each image once.
    out = tmp_path / "q"
    assert main(["query", "--index", str(index_file), "--text", "red square", "--kind", "image",
                 "--top-k", "10", "--output", str(out)]) == 0  # fmt: skip
    hits = json.loads((out / "hits.json").read_text())["hits"]
    assert len(hits) == 4 and len({h["file"] for h in hits}) == 4

    assert main([*base, "--prune"]) == 0
    pruned = RegionIndex.load(index_file)
    assert str(deleted) not in pruned.files and len(pruned.files) == 3
    assert not any(e["file"] == str(deleted) for e in pruned.entries)
    assert len(pruned) == len(index) - sum(e["file"] == str(deleted) for e in index.entries)


@pytest.mark.slow
def test_index_made_with_a_relative_clip_spec_works_from_another_folder(
    trained_checkpoint, toy_dataset, tiny_clip, tmp_path, monkeypatch, capsys
):
    _, folder, weights = tiny_clip.split(":")
    root = Path(os.path.commonpath([folder, weights]))
    relative = f"local-dir:{os.path.relpath(folder, root)}:{os.path.relpath(weights, root)}"
    images = tmp_path / "images"
    images.mkdir()
    for f in sorted((toy_dataset / "images").iterdir())[:2]:
        shutil.copy(f, images / f.name)
    index_file = tmp_path / "c.index"
    monkeypatch.chdir(root)
    assert (
        main(
            [
                "index",
                "--checkpoint",
                str(trained_checkpoint),
                "--clip",
                relative,
                "--input",
                str(images),
                "--index",
                str(index_file),
                "--no-progress",
            ]
        )
        == 0
    )
    assert RegionIndex.load(index_file).meta["clip"] == tiny_clip  # stored absolute

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the relative spec names nothing here
    assert main(["query", "--index", str(index_file), "--text", "red square",
                 "--output", "q"]) == 0  # fmt: skip
    assert json.loads((elsewhere / "q" / "hits.json").read_text())["hits"]
    # Extending it from here needs no --clip either: the index's own CLIP is used.
    capsys.readouterr()
    assert main(["index", "--checkpoint", str(trained_checkpoint), "--input", str(images),
                 "--index", str(index_file), "--no-progress"]) == 0  # fmt: skip
    assert "0 file(s) indexed (0 changed), 2 unchanged" in capsys.readouterr().out


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

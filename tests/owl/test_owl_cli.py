"""``--detector hf:...`` in infer (auto-annotation, video), evaluate and the web demo."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from PIL import Image

from ovdet.cli import demo as demo_cli
from ovdet.cli import evaluate as evaluate_cli
from ovdet.cli import infer as infer_cli
from ovdet.owl import OwlDetector
from tests.conftest import assert_one_line_error
from tests.owl.conftest import evaluate_infer_and_detector

transformers = pytest.importorskip("transformers")
skimage_data = pytest.importorskip("skimage.data")

CLASSES = "person,rocket"
THRESH = 0.3


def test_infer_writes_the_detectors_detections_and_auto_labels(owlv2_dir, photos, tmp_path):
    out = tmp_path / "out"
    argv = ["--detector", f"hf:{owlv2_dir}", "--classes", CLASSES, "--input", str(photos),
            "--output", str(out), "--score-thresh", str(THRESH), "--save-embeddings",
            "--coco-out", str(out / "auto.json"), "--label-thresh", str(THRESH),
            "--no-progress"]  # fmt: skip
    assert infer_cli.main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert [c["name"] for c in results["categories"]] == CLASSES.split(",")

    detector = OwlDetector.from_spec(f"hf:{owlv2_dir}")
    expected = detector.predict(sorted(photos.iterdir()), classes=CLASSES, score_thresh=THRESH)
    assert len(results["detections"]) == sum(len(d) for d in expected) > 0
    for image, det in zip(results["images"], expected):
        found = [r for r in results["detections"] if r["image_id"] == image["id"]]
        np.testing.assert_allclose([r["score"] for r in found], det.scores, atol=1e-5)
        xyxy = [[x, y, x + w, y + h] for x, y, w, h in (r["bbox"] for r in found)]
        np.testing.assert_allclose(xyxy, det.boxes.reshape(-1, 4), atol=0.02)
    embeddings = np.load(out / "embeddings.npy")
    assert embeddings.shape == (len(results["detections"]), detector.head.embed_dim)
    auto = json.loads((out / "auto.json").read_text())
    assert len(auto["annotations"]) == len(results["detections"])  # all score >= THRESH
    assert (out / "astronaut_det.jpg").is_file()


def test_evaluate_detector_scores_what_infer_detects(owlv2_dir, photos, tmp_path, capsys):
    """Ground truth: the detector's confident detections (infer --coco-out); evaluating
    --detector equals evaluating infer's own detections of the whole vocabulary."""
    labels, out = tmp_path / "auto.json", tmp_path / "out"
    argv = ["--detector", f"hf:{owlv2_dir}", "--classes", CLASSES, "--input", str(photos),
            "--output", str(out), "--coco-out", str(labels), "--score-thresh", "0.05",
            "--label-thresh", "0.5", "--no-draw", "--no-progress"]  # fmt: skip
    assert infer_cli.main(argv) == 0
    from_infer, from_detector = evaluate_infer_and_detector(
        tmp_path, capsys, labels, out, f"hf:{owlv2_dir}", "--image-root", str(photos),
        "--score-thresh", "0.05", "--device", "cpu",
    )  # fmt: skip
    assert from_detector["all"] == from_infer["all"]
    assert from_detector["num_detections"] == from_infer["num_detections"] > 0
    assert 0 < from_detector["all"]["AP50"] <= 100


def test_infer_on_a_video(owlvit_dir, tmp_path):
    from tests.cli.test_video import make_clip

    av = pytest.importorskip("av")
    video = tmp_path / "clip.mp4"
    make_clip(video, "libx264" if "libx264" in av.codecs_available else "mpeg4", frames=6)
    argv = ["--detector", f"hf:{owlvit_dir}", "--classes", "square,circle", "--input",
            str(video), "--fps", "0", "--output", str(tmp_path / "out"), "--score-thresh", "0",
            "--no-progress"]  # fmt: skip
    assert infer_cli.main(argv) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [f["frame"] for f in results["images"]] == list(range(6))
    # threshold 0: every patch (16 of the tiny model) of every frame is a detection
    assert len(results["detections"]) == 6 * 16
    assert (tmp_path / "out" / "clip_det.mp4").is_file()


@pytest.mark.parametrize("tool", ["infer", "evaluate"])
def test_missing_transformers_is_one_line_naming_the_extra(
    tool, owlv2_dir, photos, tmp_path, monkeypatch, capsys
):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers fails
    spec = f"hf:{owlv2_dir}"
    if tool == "infer":
        argv = ["--detector", spec, "--classes", CLASSES, "--input", str(photos), "--output",
                str(tmp_path)]  # fmt: skip
        assert infer_cli.main(argv) == 2
    else:
        gt = tmp_path / "gt.json"
        gt.write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
        argv = ["--gt", str(gt), "--image-root", str(photos), "--detector", spec]
        assert evaluate_cli.main(argv) == 2
    assert_one_line_error(capsys.readouterr().err, "needs the transformers library", "ovdet[hf]")


def test_bad_detectors_are_one_line_errors(tmp_path, photos, capsys):
    transformers.CLIPConfig().save_pretrained(tmp_path / "clip")
    base = ["--classes", CLASSES, "--input", str(photos), "--output", str(tmp_path / "o")]
    clip_exemplar = ["--exemplar", f"mug={photos / 'rocket.png'}", "--exemplar-source", "clip"]
    cases = [
        (["--detector", f"hf:{tmp_path / 'clip'}"], "'clip' model", "owlv2"),
        (["--detector", f"hf:{tmp_path / 'none'}"], "no such folder"),
        (["--detector", "google/owlv2-base-patch16"], "not a transformers detector", "hf:"),
        (["--detector", f"hf:{tmp_path / 'clip'}", "--clip-rescoring"], "--clip-rescoring"),
        (  # refused before the model loads (this one is no OWL)
            ["--detector", f"hf:{tmp_path / 'clip'}", *clip_exemplar],
            "exemplar source 'clip'",
            "its own box queries",
        ),
    ]
    for flags, *fragments in cases:
        assert infer_cli.main(flags + base) == 2
        assert_one_line_error(capsys.readouterr().err, *fragments)


def test_demo_serves_an_owl_detector(owlv2_dir, photos, capsys):
    from ovdet.demo import DemoModel, detect_files

    model = DemoModel.from_hf_detector(f"hf:{owlv2_dir}")
    assert model.default_score_thresh == pytest.approx(0.1)
    image = photos / "astronaut.png"
    result = detect_files(model, [image], CLASSES, "a", THRESH, False)
    assert result.messages == []
    templates_a = model._detector_for("a").predict(image, score_thresh=THRESH)[0]
    expected = model.detector.predict(image, CLASSES, score_thresh=THRESH)[0]  # "openai"
    assert len(result.rows) == len(templates_a) > 0
    assert not np.array_equal(templates_a.scores, expected.scores)  # "a" was applied
    refused = detect_files(model, [image], CLASSES, "a", THRESH, True)  # CLIP rescoring
    assert refused.rows == [] and "scores its regions itself" in " ".join(refused.messages)
    assert demo_cli.main(["--detector", f"hf:{owlv2_dir}"]) == 2
    assert_one_line_error(capsys.readouterr().err, "needs --classes")


def test_search_indexes_and_queries_with_an_owl_detector(owlv2_dir, photos, tmp_path):
    from ovdet.cli import search as search_cli
    from ovdet.search import RegionIndex

    index_path = tmp_path / "photos.index"
    argv = ["index", "--detector", f"hf:{owlv2_dir}", "--input", str(photos), "--index",
            str(index_path), "--min-score", "0.3", "--no-progress"]  # fmt: skip
    assert search_cli.main(argv) == 0
    index = RegionIndex.load(index_path)
    assert index.meta["detector"] == f"hf:{owlv2_dir}"

    detector = OwlDetector.from_spec(f"hf:{owlv2_dir}")
    found = detector.predict(sorted(photos.iterdir()), classes="object", score_thresh=0.3,
                             return_embeddings=True)  # fmt: skip
    assert len(index) == sum(len(d) for d in found) + len(found)  # regions + whole images
    query = detector.text_embeddings(["a person"])[0].numpy()
    regions = np.concatenate([d.embeddings for d in found])
    boxes = np.concatenate([d.boxes for d in found])
    best = int(np.argmax(regions @ query / np.linalg.norm(regions, axis=1)))

    out = tmp_path / "hits"
    argv = ["query", "--index", str(index_path), "--text", "a person", "--output", str(out)]
    assert search_cli.main(argv) == 0  # the index's own detector, from its settings
    hits = json.loads((out / "hits.json").read_text())["hits"]
    np.testing.assert_allclose(hits[0]["box"], boxes[best], atol=0.01)
    whole = detector.embed_images([np.asarray(Image.open(p)) for p in sorted(photos.iterdir())])
    assert whole.shape == (len(found), detector.head.embed_dim)


def test_a_hub_model_that_cannot_be_fetched_is_one_line(photos, tmp_path):
    import os
    import subprocess

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}  # empty cache
    code = ("import sys; from ovdet.cli.infer import main; "
            "sys.exit(main(sys.argv[1:]))")  # fmt: skip
    argv = ["--detector", "hf:google/owlv2-base-patch16-ensemble", "--classes", CLASSES,
            "--input", str(photos), "--output", str(tmp_path / "out")]  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", code, *argv], env=env, capture_output=True, text=True
    )
    assert done.returncode == 2
    assert_one_line_error(done.stderr, "cannot load --detector hf:google/owlv2-base-patch16")
    assert not (tmp_path / "out" / "results.json").exists()

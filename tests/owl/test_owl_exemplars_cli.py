"""Exemplar classes with ``--detector hf:...``: infer, evaluate, search by an image crop, demo."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ovdet.cli import evaluate as evaluate_cli
from ovdet.cli import infer as infer_cli
from ovdet.owl import OwlDetector
from ovdet.structures.exemplars import parse_exemplar_spec
from ovdet.structures.vocabulary import Vocabulary
from tests.conftest import assert_one_line_error
from tests.owl.conftest import evaluate_infer_and_detector

transformers = pytest.importorskip("transformers")
skimage_data = pytest.importorskip("skimage.data")

THRESH = 0.3
BOX = (40.0, 60.0, 300.0, 200.0)  # x, y, w, h of the rocket photo's box exemplar


def _exemplar(photos, name: str = "rocket") -> str:
    return f"{name}={photos / 'rocket.png'}:{','.join(f'{v:g}' for v in BOX)}"


def test_infer_detects_and_marks_exemplar_classes(owlv2_dir, photos, tmp_path):
    out = tmp_path / "out"
    exemplars = [_exemplar(photos), _exemplar(photos, "person+")]
    argv = ["--detector", f"hf:{owlv2_dir}", "--classes", "person", "--input", str(photos),
            "--output", str(out), "--score-thresh", str(THRESH), "--no-draw", "--no-progress",
            "--exemplar", exemplars[0], "--exemplar", exemplars[1],
            "--exemplar-text-weight", "0.25"]  # fmt: skip
    assert infer_cli.main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["categories"] == [
        {"id": 1, "name": "person", "query": "text+exemplar"},
        {"id": 2, "name": "rocket", "query": "exemplar"},
    ]

    detector = OwlDetector.from_spec(
        f"hf:{owlv2_dir}", overrides=["MODEL.OVDET.EXEMPLARS.TEXT_WEIGHT", "0.25"]
    )
    specs = [parse_exemplar_spec(e) for e in exemplars]
    detector.set_classes(Vocabulary.parse("person").with_exemplars(specs))
    expected = detector.predict(sorted(photos.iterdir()), score_thresh=THRESH)
    assert len(results["detections"]) == sum(len(d) for d in expected) > 0
    for image, det in zip(results["images"], expected):
        found = [r for r in results["detections"] if r["image_id"] == image["id"]]
        np.testing.assert_allclose([r["score"] for r in found], det.scores, atol=1e-5)
        assert [r.get("query") for r in found] == [det.class_kinds[i] for i in det.labels]
    # the rocket class is the rocket box's query, as OwlDetector makes it
    box = torch.tensor([[BOX[0], BOX[1], BOX[0] + BOX[2], BOX[1] + BOX[3]]])
    query = detector.box_query_embeddings(skimage_data.rocket(), box)[0]
    torch.testing.assert_close(detector.head.get_vocabulary()[0][1], F.normalize(query, dim=0))


def test_evaluate_exemplar_categories_scores_what_infer_detects(
    owlv2_dir, photos, tmp_path, capsys
):
    """Ground truth: the detector's confident text detections; a category given by an exemplar
    in --detector evaluation equals evaluating infer's detections with the same exemplar."""
    labels = tmp_path / "auto.json"
    argv = ["--detector", f"hf:{owlv2_dir}", "--classes", "person,rocket", "--input",
            str(photos), "--output", str(tmp_path / "gt"), "--coco-out", str(labels),
            "--score-thresh", "0.05", "--label-thresh", "0.5", "--no-draw",
            "--no-progress"]  # fmt: skip
    assert infer_cli.main(argv) == 0
    exemplar_file = tmp_path / "exemplars.txt"
    exemplar_file.write_text(_exemplar(photos) + "\n")
    out = tmp_path / "out"
    argv = ["--detector", f"hf:{owlv2_dir}", "--classes", "person,rocket", "--input",
            str(photos), "--output", str(out), "--score-thresh", "0.05", "--no-draw",
            "--no-progress", "--exemplar", _exemplar(photos)]  # fmt: skip
    assert infer_cli.main(argv) == 0
    from_infer, from_detector = evaluate_infer_and_detector(
        tmp_path, capsys, labels, out, f"hf:{owlv2_dir}", "--image-root", str(photos),
        "--score-thresh", "0.05", "--device", "cpu", "--exemplar-file", str(exemplar_file),
    )  # fmt: skip
    assert from_detector["all"] == from_infer["all"]
    assert from_detector["num_detections"] == from_infer["num_detections"] > 0

    argv = ["--gt", str(labels), "--detector", f"hf:{owlv2_dir}", "--image-root", str(photos),
            "--exemplar", _exemplar(photos, "mug"), "--no-progress"]  # fmt: skip
    assert evaluate_cli.main(argv) == 2
    assert_one_line_error(capsys.readouterr().err, "'mug' is not a category of the ground truth")


def test_search_by_an_image_crop_in_an_owl_index(owlv2_dir, photos, tmp_path):
    from ovdet.cli import search as search_cli
    from ovdet.search import RegionIndex

    index_path = tmp_path / "photos.index"
    argv = ["index", "--detector", f"hf:{owlv2_dir}", "--input", str(photos), "--index",
            str(index_path), "--min-score", "0.3", "--no-images", "--no-progress"]  # fmt: skip
    assert search_cli.main(argv) == 0
    crop = f"{photos / 'rocket.png'}:{','.join(f'{v:g}' for v in BOX)}"
    out = tmp_path / "hits"
    argv = ["query", "--index", str(index_path), "--image", crop, "--output", str(out)]
    assert search_cli.main(argv) == 0
    answer = json.loads((out / "hits.json").read_text())
    assert answer["exemplar_source"] == "region"

    detector = OwlDetector.from_spec(f"hf:{owlv2_dir}")
    box = torch.tensor([[BOX[0], BOX[1], BOX[0] + BOX[2], BOX[1] + BOX[3]]])
    query = detector.box_query_embeddings(skimage_data.rocket(), box)[0].numpy()
    index = RegionIndex.load(index_path)
    assert len(index) > 1
    best = index.search(query, 1)[0]  # the region closest to the crop's box query
    assert answer["hits"][0]["box"] == list(best.box) and answer["hits"][0]["file"] == best.file

    argv = ["query", "--index", str(index_path), "--image", crop, "--exemplar-source", "both",
            "--output", str(tmp_path / "both")]  # fmt: skip
    assert search_cli.main(argv) == 2


def test_the_demo_takes_exemplar_classes_with_an_owl_detector(owlv2_dir, photos):
    from ovdet.demo import DemoModel, detect_files

    model = DemoModel.from_hf_detector(f"hf:{owlv2_dir}")
    specs = [parse_exemplar_spec(_exemplar(photos, "my rocket"))]
    result = detect_files(
        model, [photos / "rocket.png"], "person", "a", 0.0, False, exemplars=specs
    )
    assert result.messages == []
    assert result.results["categories"][1] == {
        "id": 2, "name": "my rocket", "novel": False, "query": "exemplar"
    }  # fmt: skip
    assert any(d.get("query") == "exemplar" for d in result.results["detections"])

"""A tiny detector really trained on generated images: detection, vocabulary swap, infer CLI."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from ovdet import OVDetector
from ovdet.utils.errors import CheckpointError
from tests.conftest import REPO

pytestmark = pytest.mark.slow


def _ap50_on_toy(detector, toy, classes):
    from ovdet.evaluation import evaluate_coco

    data = json.loads((toy / "instances.json").read_text())
    name_to_id = {c["name"]: c["id"] for c in data["categories"]}
    results = []
    for img in data["images"]:
        det = detector.predict(str(toy / "images" / img["file_name"]), classes=classes)[0]
        for (x1, y1, x2, y2), s, n in zip(det.boxes.tolist(), det.scores.tolist(), det.names):
            results.append({"image_id": img["id"], "category_id": name_to_id[n],
                            "bbox": [x1, y1, x2 - x1, y2 - y1], "score": s})  # fmt: skip
    # the other classes are left out on purpose: a split must list every category
    others = [name for name in name_to_id if name not in classes]
    split = {"base": list(classes), "novel": [], "excluded": others}
    path = toy / f"split_{len(classes)}.json"
    path.write_text(json.dumps(split))
    return evaluate_coco(toy / "instances.json", results, str(path))


def test_trained_model_detects_its_objects(trained_checkpoint, toy_dataset):
    detector = OVDetector.from_checkpoint(trained_checkpoint)
    metrics = _ap50_on_toy(detector, toy_dataset, ["red square", "blue circle"])
    assert metrics["all"]["AP50"] > 0.5, metrics


def test_checkpoint_predicts_with_reordered_and_enlarged_vocabulary(
    trained_checkpoint, toy_dataset
):
    detector = OVDetector.from_checkpoint(trained_checkpoint)
    image = str(toy_dataset / "images" / "0000.png")
    base = detector.predict(image, classes=["red square", "blue circle"], score_thresh=0.3)[0]
    swapped = detector.predict(image, classes=["blue circle", "red square"], score_thresh=0.3)[0]
    assert len(base) > 0
    # Same boxes and scores, labels follow the new order.
    np.testing.assert_allclose(base.boxes, swapped.boxes, atol=1e-4)
    assert base.names == swapped.names
    enlarged = detector.predict(
        image, classes=["kite", "red square", "umbrella", "blue circle", "car"], score_thresh=0.0
    )[0]
    assert enlarged.labels.max() < 5 and set(enlarged.names) <= {
        "kite", "red square", "umbrella", "blue circle", "car"
    }  # fmt: skip
    with_emb = detector.predict(image, return_embeddings=True)[0]
    assert with_emb.embeddings.shape == (len(with_emb), 32)
    np.testing.assert_allclose(np.linalg.norm(with_emb.embeddings, axis=1), 1.0, atol=1e-4)


def test_missing_and_truncated_checkpoints_are_clear_errors(trained_checkpoint, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        OVDetector.from_checkpoint(tmp_path / "nope.pt")
    cut = tmp_path / "cut.pt"
    cut.write_bytes(trained_checkpoint.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated"):
        OVDetector.from_checkpoint(cut)


def _infer(*args):
    return subprocess.run(
        [sys.executable, str(REPO / "tools" / "infer.py"), "--no-progress", *args],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_infer_cli_writes_pictures_and_results(trained_checkpoint, toy_dataset, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(3):
        (inputs / f"im{i}.png").write_bytes((toy_dataset / "images" / f"000{i}.png").read_bytes())
    Image.new("LA", (50, 40)).save(inputs / "gray_alpha.png")
    (inputs / "broken.jpg").write_bytes(b"garbage")
    out = tmp_path / "out"
    proc = _infer("--checkpoint", str(trained_checkpoint), "--classes", "red square,blue circle",
                  "--input", str(inputs), "--output", str(out), "--batch-size", "2")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "4 image(s) processed" in proc.stdout and "1 skipped" in proc.stdout
    assert sorted(p.name for p in out.glob("*_det.jpg")) == [
        "gray_alpha_det.jpg", "im0_det.jpg", "im1_det.jpg", "im2_det.jpg"
    ]  # fmt: skip
    results = json.loads((out / "results.json").read_text())
    assert results["failed"] == [str(inputs / "broken.jpg")]
    assert "broken.jpg" in (out / "log.txt").read_text()  # the skip is logged there too
    assert {d["category"] for d in results["detections"]} <= {"red square", "blue circle"}
    assert any(d["file_name"].endswith("im0.png") for d in results["detections"])


@pytest.mark.parametrize(
    "args,message",
    [
        (["--classes", ",,"], "no class name"),
        (["--classes", "a,a"], "appears twice"),
        (["--input", "/nonexistent/*.jpg"], "matches no image"),
        (["--checkpoint", "/nonexistent.pt"], "does not exist"),
    ],
)
def test_infer_cli_bad_inputs_get_one_line_errors(trained_checkpoint, toy_dataset, tmp_path,
                                                  args, message):  # fmt: skip
    image = str(toy_dataset / "images" / "0000.png")
    base = {"--checkpoint": str(trained_checkpoint), "--classes": "red square",
            "--input": image, "--output": str(tmp_path)}  # fmt: skip
    base.update(dict(zip(args[::2], args[1::2])))
    proc = _infer(*[x for kv in base.items() for x in kv])
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr

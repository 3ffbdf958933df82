"""ONNX export: the detector with the vocabulary as an input and the text tower agree with
PyTorch (same labels, boxes within 1e-3 relative, scores within 1e-4) for C = 1, 80, 1203 and
20000 classes and images of several sizes; bad input is a one-line error."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (extra 'deploy')")
pytest.importorskip("onnx", reason="onnx is not installed (extra 'deploy')")

from ovdet.api import OVDetector  # noqa: E402
from ovdet.cli.export_onnx import main  # noqa: E402
from ovdet.errors import CheckpointError  # noqa: E402
from ovdet.export.runtime import OnnxDetector, default_providers  # noqa: E402


@pytest.fixture(scope="module")
def untrained_checkpoint(tiny_clip, tmp_path_factory):
    """A checkpoint of the tiny config with random weights (the export does not care)."""
    from ovdet.config import load_config
    from ovdet.engine.build import build_model
    from ovdet.engine.checkpoint import save_checkpoint

    cfg = load_config("tiny", ["MODEL.OVDET.CLIP", tiny_clip, "MODEL.OVDET.TEMPLATES", "a"])
    torch.manual_seed(0)
    model = build_model(cfg)
    state = {"model": model.state_dict(), "config": cfg.dump(), "class_names": ["red square"],
             "embed_dim": 32}  # fmt: skip
    return save_checkpoint(state, tmp_path_factory.mktemp("untrained"), "model.pt")


@pytest.fixture(scope="module")
def exported(untrained_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx")
    assert main(["--checkpoint", str(untrained_checkpoint), "--output", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def detectors(untrained_checkpoint, exported):
    """The same detector in PyTorch and in onnxruntime (CPU)."""
    return (
        OVDetector.from_checkpoint(untrained_checkpoint),
        OnnxDetector(exported, providers=["CPUExecutionProvider"]),
    )


def _names(count: int) -> list[str]:
    colours = ["red", "green", "blue", "yellow", "purple", "orange", "black", "white"]
    return [f"{colours[i % 8]} thing {i}" for i in range(count)]


def test_export_folder_is_complete(exported):
    for name in ("detector.onnx", "text_encoder.onnx", "templates.json", "config.yaml",
                 "manifest.json"):  # fmt: skip
        assert (exported / name).is_file(), name
    assert default_providers()[-1] == "CPUExecutionProvider"


def test_text_graph_matches_the_text_classifier(detectors):
    torch_detector, onnx_detector = detectors
    names = _names(300)
    np.testing.assert_allclose(
        onnx_detector.text_embeddings(names), torch_detector.text_embeddings(names).numpy(),
        atol=1e-5,
    )  # fmt: skip


@pytest.mark.parametrize("num_classes", [1, 80, 1203, 20000])
def test_detections_agree_with_pytorch(detectors, num_classes):
    torch_detector, onnx_detector = detectors
    names = _names(num_classes)
    rng = np.random.default_rng(num_classes)
    sizes = [(64, 64), (100, 150), (210, 97)]
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]
    # Threshold 0 keeps every region (the most detections to compare); the model's own
    # threshold (0.05) for the small vocabularies, where scores can exceed it.
    for thresh in (0.0, None) if num_classes <= 80 else (0.0,):
        expected = torch_detector.predict(images, classes=names, score_thresh=thresh,
                                          return_embeddings=True)  # fmt: skip
        got = onnx_detector.predict(images, classes=names, score_thresh=thresh,
                                    return_embeddings=True)  # fmt: skip
        if thresh == 0.0:  # every region scores above 0: the comparison is never empty
            assert all(len(ref) > 0 for ref in expected)
        for ref, out in zip(expected, got):
            assert len(out) == len(ref)
            np.testing.assert_array_equal(out.labels, ref.labels)
            np.testing.assert_allclose(out.scores, ref.scores, atol=1e-4, rtol=0)
            np.testing.assert_allclose(out.boxes, ref.boxes, rtol=1e-3, atol=1e-3)
            np.testing.assert_allclose(out.embeddings, ref.embeddings, atol=1e-4)


def test_bad_input_is_one_line_error(untrained_checkpoint, tmp_path, capsys):
    cases = [
        (["--checkpoint", str(tmp_path / "none.pt"), "--output", str(tmp_path / "o")],
         "does not exist"),
        (["--checkpoint", str(untrained_checkpoint), "--output", str(tmp_path / "o"),
          "--opset", "11"], "at least 16"),
    ]  # fmt: skip
    for argv, message in cases:
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and message in err and "\n" not in err
    with pytest.raises(CheckpointError, match="manifest.json"):
        OnnxDetector(tmp_path)

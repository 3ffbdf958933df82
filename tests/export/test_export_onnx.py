"""ONNX export: the detector with the vocabulary as an input and the text tower agree with
PyTorch (same labels, boxes within 1e-3 relative, scores within 1e-4) for C = 1, 80, 1203 and
20000 classes and images of several sizes, and with image-exemplar rows; the runtime runs where
torch cannot be imported; bad input is a one-line error."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (extra 'deploy')")
pytest.importorskip("onnx", reason="onnx is not installed (extra 'deploy')")

from ovdet.api import OVDetector  # noqa: E402
from ovdet.cli.export_onnx import main  # noqa: E402
from ovdet.export.runtime import OnnxDetector, default_providers  # noqa: E402
from ovdet.structures import Vocabulary  # noqa: E402
from ovdet.structures.exemplars import exemplar_specs  # noqa: E402
from ovdet.utils.errors import CheckpointError, VocabularyError  # noqa: E402


def _untrained_checkpoint(tiny_clip: str, folder: Path, *opts: str) -> Path:
    """A checkpoint of the tiny config (``opts`` on top) with random weights."""
    from ovdet.config import load_config
    from ovdet.tv.engine.build import build_model
    from ovdet.tv.engine.checkpoint import save_checkpoint

    cfg = load_config("tiny", ["MODEL.OVDET.CLIP", tiny_clip, "MODEL.OVDET.TEMPLATES", "a", *opts])
    torch.manual_seed(0)
    model = build_model(cfg)
    state = {"model": model.state_dict(), "config": cfg.dump(), "class_names": ["red square"],
             "embed_dim": 32}  # fmt: skip
    return save_checkpoint(state, folder, "model.pt")


@pytest.fixture(scope="module")
def untrained_checkpoint(tiny_clip, tmp_path_factory):
    """A checkpoint of the tiny config with random weights (the export does not care)."""
    return _untrained_checkpoint(tiny_clip, tmp_path_factory.mktemp("untrained"))


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


def test_bad_input_is_one_line_error(untrained_checkpoint, exported, tiny_clip, tmp_path, capsys):
    cases = [
        (["--checkpoint", str(tmp_path / "none.pt"), "--output", str(tmp_path / "o")],
         "does not exist"),
        (["--checkpoint", str(untrained_checkpoint), "--output", str(tmp_path / "o"),
          "--opset", "11"], "at least 16"),
    ]  # fmt: skip
    image_head = _untrained_checkpoint(
        tiny_clip, tmp_path / "image_head", "MODEL.OVDET.DISTILL.IMAGE_HEAD", "True"
    )
    cases.append((["--checkpoint", str(image_head), "--output", str(tmp_path / "o")], "IMAGE_HEAD"))
    for argv, message in cases:
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and message in err and "\n" not in err
    with pytest.raises(CheckpointError, match="manifest.json"):
        OnnxDetector(tmp_path)
    # a damaged graph: the folder names the problem, not onnxruntime's traceback
    damaged = tmp_path / "damaged"
    shutil.copytree(exported, damaged)
    (damaged / "detector.onnx").write_bytes(b"not a graph")
    with pytest.raises(CheckpointError, match="cannot load the ONNX graphs"):
        OnnxDetector(damaged)


# Run in a fresh interpreter where importing torch (or anything built on it) fails.
_WITHOUT_TORCH = textwrap.dedent(
    """
    import sys
    for name in ("torch", "torchvision", "open_clip"):
        sys.modules[name] = None  # `import torch` now raises ImportError
    import numpy as np
    from ovdet.export.runtime import OnnxDetector

    export_dir, images_file, out_file = sys.argv[1:]
    images = list(np.load(images_file))
    detector = OnnxDetector(export_dir, providers=["CPUExecutionProvider"])
    results = detector.predict(images, classes=["red square", "blue circle"], score_thresh=0.0)
    np.savez(out_file, **{f"{key}{i}": getattr(r, key) for i, r in enumerate(results)
                          for key in ("boxes", "scores", "labels")})
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision",
                                                                 "open_clip")
                    and sys.modules[m] is not None)
    print("torch modules loaded:", loaded)
    """
)


def test_runtime_runs_without_torch(exported, detectors, tmp_path):
    """A deployed vocabulary needs no PyTorch: the runtime loads the export, tokenises a new
    vocabulary and detects, with torch unimportable, and gives the detections of a normal run."""
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (2, 80, 120, 3), dtype=np.uint8)
    np.save(tmp_path / "images.npy", images)
    proc = subprocess.run(
        [sys.executable, "-c", _WITHOUT_TORCH, str(exported), str(tmp_path / "images.npy"),
         str(tmp_path / "out.npz")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "torch modules loaded: []" in proc.stdout
    got = np.load(tmp_path / "out.npz")
    torch_detector, onnx_detector = detectors
    classes = ["red square", "blue circle"]
    same_runtime = onnx_detector.predict(list(images), classes=classes, score_thresh=0.0)
    pytorch = torch_detector.predict(list(images), classes=classes, score_thresh=0.0)
    for i, (ref, ref_torch) in enumerate(zip(same_runtime, pytorch)):
        assert len(ref) > 0  # threshold 0 keeps every region: never an empty comparison
        np.testing.assert_array_equal(got[f"labels{i}"], ref.labels)
        np.testing.assert_allclose(got[f"scores{i}"], ref.scores, rtol=0, atol=1e-6)
        np.testing.assert_allclose(got[f"boxes{i}"], ref.boxes, rtol=0, atol=1e-4)
        # and the PyTorch detector's, within the export agreement's tolerances
        np.testing.assert_array_equal(got[f"labels{i}"], ref_torch.labels)
        np.testing.assert_allclose(got[f"scores{i}"], ref_torch.scores, rtol=0, atol=1e-4)
        np.testing.assert_allclose(got[f"boxes{i}"], ref_torch.boxes, rtol=1e-3, atol=1e-3)


def test_exports_of_manifest_version_1_still_load(exported, detectors, tmp_path):
    """Folders exported before the torch-free tokenizer (open_clip's BPE file) still work, through
    open_clip, with the same text classifier."""
    import json

    from open_clip.tokenizer import default_bpe

    old = tmp_path / "old"
    shutil.copytree(exported, old)
    manifest = json.loads((old / "manifest.json").read_text())
    bpe = Path(default_bpe())
    shutil.copy(bpe, old / "tokenizer" / bpe.name)
    (old / "tokenizer" / "tokenizer.json").unlink()
    context = manifest["tokenizer"]["context_length"]
    manifest.update(version=1, tokenizer={"type": "open_clip", "bpe": f"tokenizer/{bpe.name}",
                                          "context_length": context})  # fmt: skip
    (old / "manifest.json").write_text(json.dumps(manifest))
    _, onnx_detector = detectors
    names = _names(20)
    np.testing.assert_array_equal(
        OnnxDetector(old, providers=["CPUExecutionProvider"]).text_embeddings(names),
        onnx_detector.text_embeddings(names),
    )


def test_an_empty_vocabulary_gives_no_detections_in_the_graph(detectors):
    """The graph takes a [0, D] text matrix (no division by the class count); the runtime
    refuses an empty vocabulary before it (one line)."""
    from ovdet.utils.errors import VocabularyError

    _, onnx_detector = detectors
    image = np.random.default_rng(0).random((3, 64, 80), dtype=np.float32)
    boxes, scores, labels, embeddings = onnx_detector.detector.run(
        None,
        {"image": image, "text_embeddings": np.zeros((0, onnx_detector.embed_dim), np.float32),
         "score_thresh": np.array(0.0, np.float32)},
    )  # fmt: skip
    assert boxes.shape == (0, 4) and scores.shape == labels.shape == (0,)
    assert embeddings.shape == (0, onnx_detector.embed_dim)
    with pytest.raises(VocabularyError, match="the vocabulary is empty"):
        onnx_detector.set_classes([])


def test_boxes_of_an_image_downscaled_on_load_are_in_its_pixels(exported, tmp_path):
    """A file above INPUT.MAX_LOAD_PIXELS: the runtime reports boxes in the original's pixels,
    4x those of the same pixels saved at a quarter of the size."""
    import yaml

    from tests.cli.test_huge_images import FACTOR, LOAD_LIMIT, SMALL, write_scene

    folder = tmp_path / "export"
    shutil.copytree(exported, folder)
    config = yaml.safe_load((folder / "config.yaml").read_text())
    config["INPUT"]["MAX_LOAD_PIXELS"] = LOAD_LIMIT
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    small, big = write_scene(tmp_path)
    detector = OnnxDetector(folder, providers=["CPUExecutionProvider"])
    on_small, on_big = detector.predict([small, big], classes=["red square"], score_thresh=0.0)
    assert len(on_small) >= 5 and len(on_big) == len(on_small)
    np.testing.assert_allclose(on_big.boxes, FACTOR * on_small.boxes, rtol=1e-4, atol=1e-3)
    assert on_big.boxes[:, 2].max() > SMALL[0] + 1  # not in the downscaled frame


def test_exemplar_rows_are_vocabulary_rows_and_agree_with_pytorch(detectors):
    """Image-exemplar classes, embedded with PyTorch, are rows of the graph's vocabulary
    input: the ONNX detections equal PyTorch's with the same vocabulary."""
    from ovdet.structures.exemplars import Exemplar

    torch_detector, onnx_detector = detectors
    rng = np.random.default_rng(5)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(64, 64), (90, 70)]]
    exemplars = {"logo": Exemplar(images[1], (10, 12, 30, 20)), "red square+": Exemplar(images[0])}
    torch_detector.set_classes("red square, blue circle", exemplars=exemplars)
    assert torch_detector.class_kinds == ["text+exemplar", "text", "exemplar"]
    rows = torch_detector.class_embeddings("red square, blue circle", exemplars=exemplars)
    onnx_detector.set_class_embeddings(
        torch_detector.class_names, rows.numpy(), torch_detector.class_kinds
    )
    expected = torch_detector.predict(images, score_thresh=0.0)
    got = onnx_detector.predict(images, score_thresh=0.0)
    assert 2 in np.concatenate([d.labels for d in expected])  # the exemplar class is detected
    for ref, out in zip(expected, got):
        assert len(out) == len(ref) > 0 and out.class_kinds == ref.class_kinds
        np.testing.assert_array_equal(out.labels, ref.labels)
        np.testing.assert_allclose(out.scores, ref.scores, atol=1e-4, rtol=0)
        np.testing.assert_allclose(out.boxes, ref.boxes, rtol=1e-3, atol=1e-3)
    with pytest.raises(VocabularyError, match="set_class_embeddings"):
        onnx_detector.set_classes(Vocabulary.from_names(["a"]).with_exemplars(
            exemplar_specs({"b": Exemplar(images[0])})))  # fmt: skip
    with pytest.raises(VocabularyError, match=r"must be \[2, 32\]"):
        onnx_detector.set_class_embeddings(["a", "b"], rows.numpy())


def test_mask_model_exports_masks_equal_to_pytorchs(tiny_clip, tmp_path):
    """A ``MODEL.MASK_ON`` detector's graph has a ``mask_probs`` output: the runtime's masks of
    the original image are PyTorch's."""
    checkpoint = _untrained_checkpoint(tiny_clip, tmp_path, "MODEL.MASK_ON", "True")
    out = tmp_path / "onnx"
    assert main(["--checkpoint", str(checkpoint), "--output", str(out)]) == 0
    torch_detector = OVDetector.from_checkpoint(checkpoint)
    onnx_detector = OnnxDetector(out, providers=["CPUExecutionProvider"])
    assert [o.name for o in onnx_detector.detector.get_outputs()][-1] == "mask_probs"
    image = np.random.default_rng(1).integers(0, 256, (100, 150, 3), dtype=np.uint8)
    names = _names(5)
    (ref,) = torch_detector.predict(image, classes=names, score_thresh=0.0)
    (got,) = onnx_detector.predict(image, classes=names, score_thresh=0.0)
    assert len(ref) > 0 and len(got) == len(ref)
    assert ref.masks.shape == got.masks.shape == (len(ref), 100, 150) and ref.masks.any()
    # Pixels on the 0.5 boundary may flip with float rounding: nearly all agree.
    assert (got.masks != ref.masks).mean() < 1e-3
    np.testing.assert_array_equal(got.labels, ref.labels)


@pytest.mark.parametrize(
    "builder, clip_fixture",
    [("build_clip_resnet_fpn_backbone", "tiny_resnet_clip"),
     ("build_clip_vit_fpn_backbone", "tiny_vit_clip")],
)  # fmt: skip
def test_clip_backbone_model_exports_and_agrees_with_pytorch(
    request, builder, clip_fixture, tmp_path
):
    """F-VLM's detector (a frozen CLIP backbone, ResNet or ViT): the vocabulary is still an
    input; the graph's detections (without CLIP's scores, as for crop rescoring) are PyTorch's,
    on landscape and portrait images (a ViT's positional embedding is resized in the graph)."""
    clip = request.getfixturevalue(clip_fixture)
    checkpoint = _untrained_checkpoint(clip, tmp_path, "MODEL.BACKBONE.NAME", builder)
    out = tmp_path / "onnx"
    assert main(["--checkpoint", str(checkpoint), "--output", str(out)]) == 0
    torch_detector = OVDetector.from_checkpoint(checkpoint)
    onnx_detector = OnnxDetector(out, providers=["CPUExecutionProvider"])
    assert [i.name for i in onnx_detector.detector.get_inputs()][1] == "text_embeddings"
    landscape = np.random.default_rng(2).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    portrait = np.random.default_rng(3).integers(0, 256, (120, 80, 3), dtype=np.uint8)
    for image, names in ((landscape, _names(3)), (landscape, _names(40)), (portrait, _names(3))):
        (ref,) = torch_detector.predict(image, classes=names, score_thresh=0.0)
        (got,) = onnx_detector.predict(image, classes=names, score_thresh=0.0)
        assert len(ref) > 0 and len(got) == len(ref)
        np.testing.assert_array_equal(got.labels, ref.labels)
        np.testing.assert_allclose(got.scores, ref.scores, atol=1e-4)
        np.testing.assert_allclose(got.boxes, ref.boxes, rtol=1e-3, atol=1e-2)

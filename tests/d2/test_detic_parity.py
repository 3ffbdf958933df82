"""Parity with Detic's own code: a Detic OV-COCO model, converted, detects the same in both engines.

Detic's model is built by Detic's code from its ``configs/BoxSup_OVCOCO_CLIP_R50_1x.yaml`` (random
weights, a random zero-shot weight file), its state dict saved and converted with
``ovdet-convert-checkpoint --from detic``; on four scikit-image photos, the torchvision engine
(the converted checkpoint) and the detectron2 plugin (Detic's file loaded as it is) must give
Detic's predictor's boxes (0.01 px), scores (1e-4) and labels, with Detic's zero-shot matrix as
their text embeddings.

Needs Detic's source: ``OVDET_DETIC_ROOT`` names a checkout of facebookresearch/Detic with its
``third_party/CenterNet2`` (docs/pretrained_models.md#checking-against-detics-code); skipped
otherwise, and where detectron2 is missing.
"""

from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip(
    "detectron2", reason="detectron2 is not installed; see README (install by its official guide)"
)
DETIC_ROOT = Path(os.environ.get("OVDET_DETIC_ROOT", ""))
if not os.environ.get("OVDET_DETIC_ROOT") or not (DETIC_ROOT / "detic" / "config.py").is_file():
    pytest.skip(
        "Detic's source is not available: set OVDET_DETIC_ROOT to a checkout of "
        "facebookresearch/Detic (docs/pretrained_models.md)",
        allow_module_level=True,
    )
if not (DETIC_ROOT / "third_party" / "CenterNet2" / "centernet").is_dir():
    pytest.skip(
        f"{DETIC_ROOT}/third_party/CenterNet2 is empty: check out Detic's submodules",
        allow_module_level=True,
    )

from detectron2.config import get_cfg  # noqa: E402
from detectron2.engine import DefaultPredictor  # noqa: E402

from ovdet.cli.convert_checkpoint import main as convert_main  # noqa: E402
from ovdet.d2 import load_d2_config  # noqa: E402
from ovdet.tv.modeling.fast_paths import use_reference_paths  # noqa: E402
from ovdet.tv.predictor import OVDetector  # noqa: E402

NUM_CLASSES, EMBED_DIM = 80, 512
# Small test sizes keep R50-C4 fast on one CPU thread: photos resized beforehand so that their
# short side is the test size (no engine resizes them again), and few proposals.
TEST_SIZE, NUM_PROPOSALS = 160, 12
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
SMALL_SIZES = ["INPUT.MIN_SIZE_TEST", str(TEST_SIZE), "MODEL.RPN.POST_NMS_TOPK_TEST",
               str(NUM_PROPOSALS)]  # fmt: skip


def _import_detic() -> None:
    """Put Detic and CenterNet2 on the path and register their config keys and modules.

    Detic's meta-architecture module imports OpenAI's ``clip`` package for its caption encoder,
    which inference never runs; its tokenizer module is stood in for by open_clip's (the same
    tokenizer) so the import succeeds without that package.
    """
    for path in (DETIC_ROOT, DETIC_ROOT / "third_party" / "CenterNet2"):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
    if "clip" not in sys.modules:
        import open_clip.tokenizer

        clip = types.ModuleType("clip")
        clip.simple_tokenizer = types.ModuleType("clip.simple_tokenizer")
        clip.simple_tokenizer.SimpleTokenizer = open_clip.tokenizer.SimpleTokenizer
        sys.modules["clip"], sys.modules["clip.simple_tokenizer"] = clip, clip.simple_tokenizer
    import detic  # noqa: F401  (registers CustomRCNN, CustomRes5ROIHeads)


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    """The four photos, RGB uint8, resized (PIL bilinear) to a short side of TEST_SIZE."""
    from skimage import data

    out = []
    for name in PHOTOS:
        image = Image.fromarray(getattr(data, name)()).convert("RGB")
        scale = TEST_SIZE / min(image.size)
        size = (round(image.width * scale), round(image.height * scale))
        out.append(np.asarray(image.resize(size, Image.BILINEAR)))
    return out


@pytest.fixture(scope="module")
def detic(tmp_path_factory, photos):
    """(Detic's predictor, its checkpoint file, Tensor[C, D] its zero-shot text matrix)."""
    _import_detic()
    from centernet.config import add_centernet_config
    from detic.config import add_detic_config

    root = tmp_path_factory.mktemp("detic")
    rng = np.random.default_rng(0)
    zero_shot = root / "coco_clip_a+cname.npy"
    np.save(zero_shot, rng.standard_normal((NUM_CLASSES, EMBED_DIM)).astype(np.float32))
    cat_info = root / "cat_info.json"
    counts = [{"id": i + 1, "image_count": int(c)} for i, c in enumerate(rng.integers(1, 99, 80))]
    cat_info.write_text(json.dumps(counts))
    cfg = get_cfg()
    add_centernet_config(cfg)
    add_detic_config(cfg)
    cfg.merge_from_file(str(DETIC_ROOT / "configs" / "BoxSup_OVCOCO_CLIP_R50_1x.yaml"))
    cfg.merge_from_list(
        ["MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu", "MODEL.ROI_HEADS.NUM_CLASSES", "80",
         "MODEL.ROI_BOX_HEAD.ZEROSHOT_WEIGHT_PATH", str(zero_shot),
         "MODEL.ROI_BOX_HEAD.CAT_FREQ_PATH", str(cat_info), *SMALL_SIZES]
    )  # fmt: skip
    torch.manual_seed(0)
    predictor = DefaultPredictor(cfg)
    _calibrate_batch_norms(predictor, photos[0])
    weights = predictor.model.state_dict()
    checkpoint = root / "detic_boxsup.pth"
    torch.save({"model": weights, "iteration": 0}, checkpoint)
    text = weights["roi_heads.box_predictor.cls_score.zs_weight"][:, :-1].t().contiguous()
    return predictor, checkpoint, text


def _calibrate_batch_norms(predictor, photo: np.ndarray) -> None:
    """Give each frozen batch norm the statistics of its input on ``photo`` (in one pass, in
    network order): random weights then give activations of unit scale, hence boxes of
    sensible sizes, instead of ones that grow through 50 layers into degenerate boxes."""
    from detectron2.layers import FrozenBatchNorm2d

    def set_statistics(module, inputs):
        x = inputs[0].detach()
        module.running_mean.copy_(x.mean(dim=(0, 2, 3)))
        module.running_var.copy_(x.var(dim=(0, 2, 3)) - module.eps)

    hooks = [
        m.register_forward_pre_hook(set_statistics)
        for m in predictor.model.modules()
        if isinstance(m, FrozenBatchNorm2d)
    ]
    try:
        _detic_detections(predictor, photo)
    finally:
        for hook in hooks:
            hook.remove()


def _detic_detections(predictor, photo: np.ndarray) -> dict[str, np.ndarray]:
    with torch.no_grad():
        out = predictor(np.ascontiguousarray(photo[:, :, ::-1]))["instances"]  # BGR, as Detic
    return {
        "boxes": out.pred_boxes.tensor.numpy(),
        "scores": out.scores.numpy(),
        "labels": out.pred_classes.numpy(),
    }


def _by_label(detections: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Detections ordered by label, then score: two classes of one region can score within
    float rounding of each other, so the order by score alone is not comparable."""
    order = np.lexsort((-detections["scores"], detections["labels"]))
    return {k: v[order] for k, v in detections.items()}


def _assert_same(ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray], what: str) -> None:
    assert len(theirs["scores"]) > 0, "Detic detected nothing: the comparison would be empty"
    assert len(ours["scores"]) == len(theirs["scores"]), what
    ours, theirs = _by_label(ours), _by_label(theirs)
    np.testing.assert_array_equal(ours["labels"], theirs["labels"], err_msg=what)
    np.testing.assert_allclose(ours["scores"], theirs["scores"], rtol=0, atol=1e-4, err_msg=what)
    np.testing.assert_allclose(ours["boxes"], theirs["boxes"], rtol=0, atol=0.01, err_msg=what)


def test_torchvision_engine_equals_detic(detic, photos, tmp_path):
    predictor, checkpoint, text = detic
    converted = tmp_path / "boxsup.pt"
    assert convert_main(["--from", "detic", str(checkpoint), str(converted)]) == 0
    detector = OVDetector.from_checkpoint(
        converted, overrides=[*SMALL_SIZES, "MODEL.OVDET.TEXT_CACHE_DIR", str(tmp_path)]
    )
    # Detic's zero-shot matrix is its normalised text file: the same text embeddings.
    saved = torch.from_numpy(np.load(predictor.cfg.MODEL.ROI_BOX_HEAD.ZEROSHOT_WEIGHT_PATH))
    torch.testing.assert_close(text, torch.nn.functional.normalize(saved, dim=1))
    detector.head.set_vocabulary(text)
    # torchvision's computation: the speed paths (batch norms folded into the convolutions,
    # channels-last) reorder float operations, which through 50 layers of random weights moves
    # boxes by up to ~0.02 px; tests/tv/test_tv_speed_paths.py holds them to these paths.
    use_reference_paths(detector.model)
    detector.class_names = [f"class {i}" for i in range(NUM_CLASSES)]
    for name, photo in zip(PHOTOS, photos):
        (ours,) = detector.predict(photo)
        _assert_same(
            {"boxes": ours.boxes, "scores": ours.scores, "labels": ours.labels},
            _detic_detections(predictor, photo),
            f"torchvision engine on {name}",
        )


def test_detectron2_plugin_equals_detic(detic, photos, tmp_path):
    predictor, checkpoint, text = detic
    clip_dir = tmp_path / "clip512"
    clip_dir.mkdir()
    from tests.d2.conftest import TINY_CLIP_CONFIG

    tiny = json.loads(json.dumps(TINY_CLIP_CONFIG))
    tiny["model_cfg"]["embed_dim"] = EMBED_DIM  # a stand-in text tower of ViT-B/32's width
    (clip_dir / "open_clip_config.json").write_text(json.dumps(tiny))
    cfg = load_d2_config(
        "d2/ovcoco_detic_boxsup_R50_C4.yaml",
        ["MODEL.WEIGHTS", str(checkpoint), "MODEL.DEVICE", "cpu",
         "MODEL.OVDET.CLIP", f"local-dir:{clip_dir}", "MODEL.OVDET.VOCABULARY", "a,b",
         "MODEL.OVDET.TEXT_CACHE_DIR", str(tmp_path), *SMALL_SIZES],
    )  # fmt: skip
    ours = DefaultPredictor(cfg)  # loads Detic's file as it is
    ours.model.roi_heads.set_vocabulary(text)
    for name, photo in zip(PHOTOS, photos):
        with torch.no_grad():
            out = ours(np.ascontiguousarray(photo[:, :, ::-1]))["instances"]
        _assert_same(
            {
                "boxes": out.pred_boxes.tensor.numpy(),
                "scores": out.scores.numpy(),
                "labels": out.pred_classes.numpy(),
            },
            _detic_detections(predictor, photo),
            f"detectron2 plugin on {name}",
        )

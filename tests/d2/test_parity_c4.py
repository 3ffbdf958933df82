"""Parity of the C4 architecture: the same R50-C4 weights through both engines.

The detectron2 plugin's model (``OpenVocabularyRes5ROIHeads`` on detectron2's ResNet, RPN and
``ROIAlignV2``) is built with random weights, its state dict renamed to the torchvision engine's
C4 model (``ovdet.tv.engine.detic.detic_to_torchvision``), and both must give the same
detections, scores, labels and region embeddings on a real photo, with sigmoid scoring (Detic's)
and with softmax scoring.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip(
    "detectron2", reason="detectron2 is not installed; see README (install by its official guide)"
)

from detectron2.layers import FrozenBatchNorm2d  # noqa: E402
from detectron2.modeling import build_model as build_d2_model  # noqa: E402

from ovdet.config import load_config  # noqa: E402
from ovdet.core import get_head  # noqa: E402
from ovdet.d2 import OpenVocabularyRes5ROIHeads, load_d2_config  # noqa: E402
from ovdet.tv import build_model as build_tv_model  # noqa: E402
from ovdet.tv.engine.detic import detic_to_torchvision  # noqa: E402
from ovdet.tv.modeling.fast_paths import use_reference_paths  # noqa: E402

SIZE, PROPOSALS = 96, 10


def _photo() -> np.ndarray:
    from PIL import Image
    from skimage import data

    image = Image.fromarray(data.coffee())
    scale = SIZE / min(image.size)
    return np.asarray(image.resize((round(image.width * scale), round(image.height * scale))))


def _calibrate(model: torch.nn.Module, inputs: list[dict]) -> None:
    """Frozen batch norms take their input's statistics (one pass): unit-scale activations."""

    def set_statistics(module, args):
        module.running_mean.copy_(args[0].mean(dim=(0, 2, 3)))
        module.running_var.copy_(args[0].var(dim=(0, 2, 3)) - module.eps)

    hooks = [
        m.register_forward_pre_hook(set_statistics)
        for m in model.modules()
        if isinstance(m, FrozenBatchNorm2d)
    ]
    with torch.no_grad():
        model(inputs)
    for hook in hooks:
        hook.remove()


@pytest.mark.parametrize("scoring", ["sigmoid", "softmax"])
def test_c4_engines_agree_on_a_photo(tiny_clip, text_cache, scoring):
    opts = [
        "MODEL.OVDET.CLIP", tiny_clip, "MODEL.OVDET.TEXT_CACHE_DIR", str(text_cache),
        "MODEL.OVDET.VOCABULARY", "cup,saucer,spoon,table", "MODEL.OVDET.SCORING", scoring,
        "INPUT.MIN_SIZE_TEST", str(SIZE), "MODEL.RPN.POST_NMS_TOPK_TEST", str(PROPOSALS),
    ]  # fmt: skip
    d2_cfg = load_d2_config(
        "d2/ovcoco_detic_boxsup_R50_C4.yaml", ["MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu", *opts]
    )
    torch.manual_seed(0)
    d2 = build_d2_model(d2_cfg).eval()
    assert isinstance(d2.roi_heads, OpenVocabularyRes5ROIHeads)
    photo = _photo()
    bgr = torch.from_numpy(np.ascontiguousarray(photo[:, :, ::-1])).permute(2, 0, 1).float()
    inputs = [{"image": bgr, "height": photo.shape[0], "width": photo.shape[1]}]
    _calibrate(d2, inputs)

    tv = build_tv_model(load_config("ovcoco_detic_boxsup_R50_C4.yaml", opts)).eval()
    tv.load_state_dict(detic_to_torchvision(d2.state_dict()))
    use_reference_paths(tv)  # torchvision's own computation (see test_detic_parity.py)
    text = d2.roi_heads.head.text_embeddings
    get_head(tv).set_vocabulary(text)
    assert get_head(tv).classifier.scoring == scoring

    with torch.no_grad():
        (theirs,) = d2(inputs)
        (ours,) = tv([torch.from_numpy(photo.copy()).permute(2, 0, 1).float() / 255.0])
    theirs = theirs["instances"]
    assert len(theirs) > 0
    torch.testing.assert_close(ours["labels"], theirs.pred_classes)
    torch.testing.assert_close(ours["scores"], theirs.scores, rtol=0, atol=1e-4)
    torch.testing.assert_close(ours["boxes"], theirs.pred_boxes.tensor, rtol=0, atol=0.01)
    torch.testing.assert_close(ours["embeddings"], theirs.pred_embeddings, rtol=0, atol=1e-4)


def test_d2_predictor_loads_a_detic_checkpoint_as_it_is(tiny_clip, text_cache, tmp_path):
    """Detic's file (its key names: ``cls_score.linear``, ``bbox_pred.0/2``, the zero-shot
    matrix) loads into the plugin's C4 config through the predictor of ``tools/infer.py``."""
    import json

    from ovdet.d2 import OpenVocabularyD2Predictor
    from tests.d2.conftest import TINY_CLIP_CONFIG
    from tests.detic_state import detic_layout_state

    state = detic_layout_state()
    weights = tmp_path / "detic.pth"
    torch.save({"model": state}, weights)
    clip_dir = tmp_path / "clip512"
    clip_dir.mkdir()
    tiny = json.loads(json.dumps(TINY_CLIP_CONFIG))
    tiny["model_cfg"]["embed_dim"] = 512
    (clip_dir / "open_clip_config.json").write_text(json.dumps(tiny))
    predictor = OpenVocabularyD2Predictor(
        "d2/ovcoco_detic_boxsup_R50_C4.yaml",
        weights=str(weights),
        classes=["cup", "saucer"],
        overrides=["MODEL.OVDET.CLIP", f"local-dir:{clip_dir}", "MODEL.OVDET.TEXT_CACHE_DIR",
                   str(text_cache), "MODEL.OVDET.VOCABULARY", "cup,saucer", "MODEL.DEVICE",
                   "cpu", "INPUT.MIN_SIZE_TEST", str(SIZE), "MODEL.RPN.POST_NMS_TOPK_TEST",
                   str(PROPOSALS)],
    )  # fmt: skip
    head = predictor.head
    torch.testing.assert_close(
        head.classifier.projection.weight, state["roi_heads.box_predictor.cls_score.linear.weight"]
    )
    torch.testing.assert_close(
        head.bbox_pred[2].weight, state["roi_heads.box_predictor.bbox_pred.2.weight"]
    )
    (result,) = predictor.predict([_photo()])
    assert len(result["scores"]) > 0 and result["boxes"].shape == (len(result["scores"]), 4)
    assert set(result["class_names"]) <= {"cup", "saucer"}

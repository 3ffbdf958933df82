"""The frozen CLIP backbones (F-VLM) in the detectron2 plugin: the tower (ResNet or ViT) stays
frozen through detectron2's trainer while the FPN trains; the predictor rescores from it without a
crop teacher; C4, a CLIP of the other kind than the builder's, and rescoring from it with
GeneralizedRCNN or without it are refused in one line. Parity with the torchvision engine:
test_parity_clip_backbone.py."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip(
    "detectron2", reason="detectron2 is not installed; see README (install by its official guide)"
)

from detectron2.modeling import build_model as build_d2_model  # noqa: E402
from detectron2.utils.env import seed_all_rng  # noqa: E402

from ovdet.d2 import ClipFPN, OpenVocabularyTrainer, load_d2_config  # noqa: E402
from ovdet.utils.errors import ConfigError  # noqa: E402
from tests.d2.conftest import INSTANT_CONFIG  # noqa: E402
from tests.d2.test_parity_clip_backbone import (  # noqa: E402
    CLIP_BACKBONE,
    RESCORING,
    TOWERS,
    _photo,
)


@pytest.mark.parametrize("tower", list(TOWERS))
def test_d2_training_keeps_the_tower_frozen_and_trains_the_fpn(
    request, instant_cfg, tower, tmp_path
):
    builder, clip_fixture = TOWERS[tower]
    cfg = instant_cfg(
        "MODEL.OVDET.CLIP", request.getfixturevalue(clip_fixture), "MODEL.BACKBONE.NAME", builder,
        "MODEL.OVDET.DISTILL.MODE", "none", "SOLVER.MAX_ITER", "2", "DATASETS.TEST", "()",
        "OUTPUT_DIR", str(tmp_path),
    )  # fmt: skip
    cfg.freeze()
    seed_all_rng(0)
    trainer = OpenVocabularyTrainer(cfg)
    model = trainer.model
    assert isinstance(model.backbone, ClipFPN)
    tower = {k: v.clone() for k, v in model.backbone.clip.state_dict().items()}
    fpn = {k: v.clone() for k, v in model.backbone.fpn.state_dict().items()}
    optimized = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert not any(id(p) in optimized for p in model.backbone.clip.parameters())
    trainer.train()
    assert trainer.iter == cfg.SOLVER.MAX_ITER and model.training
    assert not model.backbone.clip.visual.training  # batch norms keep CLIP's statistics
    assert not any(p.requires_grad for p in model.backbone.clip.parameters())
    assert all(p.grad is None for p in model.backbone.clip.parameters())  # no gradient reached it
    for key, value in model.backbone.clip.state_dict().items():
        assert torch.equal(value, tower[key]), key  # weights and batch-norm statistics
    assert any(not torch.equal(v, fpn[k]) for k, v in model.backbone.fpn.state_dict().items())


def _overrides(tiny_resnet_clip, text_cache) -> list[str]:
    return [
        "MODEL.OVDET.CLIP", tiny_resnet_clip, "MODEL.OVDET.TEXT_CACHE_DIR", str(text_cache),
        "MODEL.OVDET.DISTILL.MODE", "none", "MODEL.OVDET.VOCABULARY", "cup, saucer, spoon",
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", *CLIP_BACKBONE, *RESCORING,
    ]  # fmt: skip


def test_d2_predictor_rescores_from_the_backbone_without_a_teacher(tiny_resnet_clip, text_cache):
    from ovdet.d2 import OpenVocabularyD2Predictor

    torch.manual_seed(0)
    predictor = OpenVocabularyD2Predictor(
        str(INSTANT_CONFIG), overrides=_overrides(tiny_resnet_clip, text_cache)
    )
    head = predictor.head
    assert head.clip_teacher is None and head.clip_rescoring.source == "backbone"
    assert not head.needs_images(training=False)  # no crops, so no CLIP view of the images
    (rescored,) = predictor.predict([_photo()])
    head.enable_clip_rescoring(None)
    (plain,) = predictor.predict([_photo()])
    assert 0 < len(rescored["scores"]) <= 20 * 3
    assert not torch.allclose(rescored["scores"][:5], plain["scores"][:5])


def test_unsupported_set_ups_are_refused_in_one_line(tiny_clip, tiny_resnet_clip, text_cache):
    base = _overrides(tiny_resnet_clip, text_cache)
    vit = ["MODEL.BACKBONE.NAME", "build_clip_vit_fpn_backbone"]
    cases = [
        ("d2/ovcoco_detic_boxsup_R50_C4.yaml", [*base, "MODEL.WEIGHTS", ""], "builds an FPN"),
        ("d2/ovcoco_detic_boxsup_R50_C4.yaml", [*base, *vit, "MODEL.WEIGHTS", ""], "builds an FPN"),
        (str(INSTANT_CONFIG), [*base, "MODEL.OVDET.CLIP", tiny_clip], "needs a ResNet CLIP"),
        (str(INSTANT_CONFIG), [*base, *vit], "build_clip_vit_fpn_backbone needs a ViT CLIP"),
        (
            str(INSTANT_CONFIG),
            [*base, "MODEL.META_ARCHITECTURE", "GeneralizedRCNN"],
            "SOURCE backbone needs MODEL.META_ARCHITECTURE OpenVocabularyRCNN",
        ),
        (  # rescoring from the backbone on a plain ResNet
            str(INSTANT_CONFIG),
            [*base, "MODEL.BACKBONE.NAME", "build_resnet_fpn_backbone"],
            "SOURCE backbone needs the CLIP backbone",
        ),
    ]
    for config, overrides, message in cases:
        cfg = load_d2_config(config, [*overrides, "MODEL.DEVICE", "cpu"])
        with pytest.raises(ConfigError, match=message) as e:
            build_d2_model(cfg)
        assert "\n" not in str(e.value)

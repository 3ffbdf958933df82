"""Config keys, and the model built from every YAML in configs/d2/."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip(
    "detectron2", reason="detectron2 is not installed; see README (install by its official guide)"
)

from detectron2.config import get_cfg  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402

from ovdet.config import get_default_config  # noqa: E402
from ovdet.config.catalog import CONFIG_DIR as _SHIPPED
from ovdet.d2 import OpenVocabularyRCNN, OpenVocabularyROIHeads, add_ovdet_config  # noqa: E402
from ovdet.d2.res5_roi_heads import OpenVocabularyRes5ROIHeads  # noqa: E402
from ovdet.utils.errors import ConfigError  # noqa: E402

CONFIG_DIR = _SHIPPED / "d2"


def _keys(node, prefix=""):
    out = set()
    for k, v in node.items():
        if hasattr(v, "items"):
            out |= _keys(v, f"{prefix}{k}.")
        else:
            out.add(f"{prefix}{k}")
    return out


def test_add_ovdet_config_adds_the_shared_keys():
    cfg = get_cfg()
    add_ovdet_config(cfg)
    assert _keys(cfg.MODEL.OVDET) == _keys(get_default_config().MODEL.OVDET)
    assert cfg.MODEL.OVDET == get_default_config().MODEL.OVDET  # same defaults too
    assert cfg.MODEL.OVDET.DISTILL.MODE == "none"
    assert cfg.MODEL.OVDET.VILD_ENSEMBLE.BASE_WEIGHT == 0.67  # ViLD's 2/3
    assert cfg.DATASETS.SPLIT == get_default_config().DATASETS.SPLIT == ""
    # and the keys of image-labelled data, with the same defaults
    for node in ("DATASETS", "DATALOADER", "INPUT"):
        weak = {k for k in get_default_config()[node] if "WEAK" in k or k == "DATASET_RATIO"}
        assert weak and all(cfg[node][k] == get_default_config()[node][k] for k in weak), node
    # Keys both engines have, with detectron2's meaning: the same defaults.
    tv = get_default_config()
    for key in ("ROI_HEADS.SCORE_THRESH_TEST", "ROI_HEADS.NMS_THRESH_TEST",
                "ROI_HEADS.IOU_THRESHOLDS", "BACKBONE.FREEZE_AT", "RESNETS.DEPTH",
                "RESNETS.NORM"):  # fmt: skip
        node, leaf = key.split(".")
        assert cfg.MODEL[node][leaf] == tv.MODEL[node][leaf], key
    assert cfg.TEST.DETECTIONS_PER_IMAGE == tv.TEST.DETECTIONS_PER_IMAGE
    assert dict(cfg.SOLVER.CLIP_GRADIENTS) == dict(tv.SOLVER.CLIP_GRADIENTS)
    cfg.merge_from_list(["MODEL.OVDET.TEMPERATURE", "30.0", "DATASETS.SPLIT", "ovcoco"])
    assert cfg.MODEL.OVDET.TEMPERATURE == 30.0


# Config -> (number of training classes, CLIP teacher expected, extra overrides).
EXPECTED = {
    "Base-OVDet-RCNN-FPN.yaml": (2, False, ["MODEL.OVDET.VOCABULARY", "cat, dog"]),
    "instant_test.yaml": (2, True, []),
    "ovcoco_vild_R50_FPN.yaml": (48, True, []),
    "ovlvis_vild_R50_FPN.yaml": (866, True, []),
    "ovcoco_detic_captions_R50_FPN.yaml": (48, False, []),  # weak supervision, no distillation
    "ovlvis_detic_in21k_R50_FPN.yaml": (866, False, []),
    "Base-OVDet-RCNN-C4.yaml": (2, False, ["MODEL.OVDET.VOCABULARY", "cat, dog"]),
    "ovcoco_detic_boxsup_R50_C4.yaml": (48, False, []),
    "ovcoco_detic_max-size_caption_R50_C4.yaml": (48, False, []),
}


def test_every_yaml_is_tested():
    assert sorted(p.name for p in CONFIG_DIR.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_model_builds_from_yaml(name, instant_cfg, instant_data):
    classes, has_teacher, extra = EXPECTED[name]
    # The real recipes download nothing here: CPU, the tiny local CLIP, no backbone weights.
    cfg = instant_cfg()  # tiny CLIP + text cache of the test session
    overrides = ["MODEL.OVDET.CLIP", cfg.MODEL.OVDET.CLIP]
    overrides += ["MODEL.OVDET.TEXT_CACHE_DIR", cfg.MODEL.OVDET.TEXT_CACHE_DIR]
    overrides += ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", *extra]
    from ovdet.d2 import load_d2_config

    cfg = load_d2_config(str(CONFIG_DIR / name), overrides)
    model = build_model(cfg)
    assert isinstance(model, OpenVocabularyRCNN)
    heads = model.roi_heads
    c4 = "C4" in name
    assert isinstance(heads, OpenVocabularyRes5ROIHeads if c4 else OpenVocabularyROIHeads)
    assert heads.num_classes == classes
    predictor = heads.box_predictor
    assert predictor.head.text_embeddings.shape == (classes, 32)  # tiny CLIP's D
    bbox_pred = predictor.head.bbox_pred
    last = [m for m in bbox_pred.modules() if isinstance(m, torch.nn.Linear)][-1]
    assert last.out_features == 4  # class-agnostic (Detic's C4 recipes: a 2048-2048-4 MLP)
    assert (getattr(heads, "clip_teacher", None) is not None) == has_teacher
    assert not any(k.startswith("roi_heads.clip_teacher") for k in model.state_dict())
    if name.startswith("ov"):
        assert cfg.MODEL.RESNETS.DEPTH == 50
        assert heads.head.distill_mode == ("none" if "detic" in name else "online")


def test_offline_distillation_needs_the_meta_architecture(instant_cfg, instant_data):
    cfg = instant_cfg(
        "MODEL.META_ARCHITECTURE", "GeneralizedRCNN", "MODEL.OVDET.DISTILL.MODE", "offline"
    )
    with pytest.raises(ConfigError, match="OpenVocabularyRCNN"):
        build_model(cfg)


def test_training_dataset_must_hold_base_classes_only(instant_cfg, instant_data):
    cfg = instant_cfg("DATASETS.TRAIN", "('ovdet_instant_val',)")  # holds a novel class
    with pytest.raises(ConfigError, match="not base classes"):
        build_model(cfg)


def test_zero_distillation_weight_loads_no_clip_teacher(instant_cfg, instant_data):
    model = build_model(instant_cfg("MODEL.OVDET.DISTILL.WEIGHT", "0.0"))
    assert model.roi_heads.clip_teacher is None


def test_config_with_python_tags_is_refused(tmp_path):
    """detectron2 alone would fall back to yaml.unsafe_load and run the named function."""
    from ovdet.d2 import load_d2_config

    marker = tmp_path / "pwned"
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"MODEL:\n  DEVICE: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ConfigError, match="cannot load detectron2 config"):
        load_d2_config(str(bad))
    assert not marker.exists()


def test_unsupported_box_head_option_is_a_config_error(instant_cfg, instant_data):
    cfg = instant_cfg("MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES", "True")
    with pytest.raises(ConfigError, match="TRAIN_ON_PRED_BOXES"):
        build_model(cfg)


def test_ensemble_keys_of_clip_rescoring_name_their_new_keys(tmp_path):
    """The same one-line error as the torchvision engine's, from a file or the command line;
    detectron2's own keys that ovdet renamed in its engine (MODEL.BACKBONE.NAME) stay valid."""
    from ovdet.d2 import load_d2_config

    old = tmp_path / "old.yaml"
    old.write_text(
        f"_BASE_: {CONFIG_DIR / 'Base-OVDet-RCNN-FPN.yaml'}\n"
        "MODEL:\n  BACKBONE:\n    NAME: build_resnet_fpn_backbone\n"
        "  OVDET:\n    ENSEMBLE:\n      NOVEL_WEIGHT: 0.2\n"
    )
    for source, overrides in ((str(old), []), ("", ["MODEL.OVDET.ENSEMBLE.NOVEL_WEIGHT", "0.2"])):
        with pytest.raises(ConfigError) as error:
            load_d2_config(source, overrides)
        message = str(error.value)
        assert "\n" not in message and "MODEL.OVDET.ENSEMBLE.NOVEL_WEIGHT" in message
        assert "renamed: use MODEL.OVDET.CLIP_RESCORING.NOVEL_WEIGHT (CLIP rescoring)" in message
        assert "MODEL.OVDET.VILD_ENSEMBLE.NOVEL_WEIGHT" in message
    with pytest.raises(ConfigError, match="Non-existent") as error:  # not renamed: as before
        load_d2_config("", ["MODEL.OVDET.NOT_A_KEY", "1"])
    assert "renamed" not in str(error.value)

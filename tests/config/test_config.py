import pytest

from ovdet.config import load_config
from ovdet.utils.errors import ConfigError


def test_overrides_are_typed_and_applied():
    cfg = load_config(None, ["SOLVER.BASE_LR", "0.5", "INPUT.MIN_SIZE_TRAIN", "[100, 200]"])
    assert cfg.SOLVER.BASE_LR == 0.5
    assert cfg.INPUT.MIN_SIZE_TRAIN == [100, 200]


def test_unknown_key_names_it_and_suggests_the_closest():
    with pytest.raises(ConfigError, match=r"SOLVER\.BASE_LRR.*did you mean SOLVER\.BASE_LR\?"):
        load_config(None, ["SOLVER.BASE_LRR", "0.1"])


def test_unknown_key_in_file_suggests(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("MODEL:\n  OVDET:\n    TEMPERATUR: 20\n")
    with pytest.raises(ConfigError, match=r"MODEL\.OVDET\.TEMPERATUR.*MODEL\.OVDET\.TEMPERATURE"):
        load_config(path)


def test_wrong_type_is_a_config_error():
    with pytest.raises(ConfigError, match="SOLVER.MAX_ITER.*int"):
        load_config(None, ["SOLVER.MAX_ITER", "many"])


def test_missing_file_and_base_chaining(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "base.yaml").write_text("SOLVER:\n  BASE_LR: 0.3\n  MAX_ITER: 7\n")
    (tmp_path / "child.yaml").write_text("_BASE_: base.yaml\nSOLVER:\n  MAX_ITER: 9\n")
    cfg = load_config(tmp_path / "child.yaml")
    assert (cfg.SOLVER.BASE_LR, cfg.SOLVER.MAX_ITER) == (0.3, 9)


def test_every_shipped_config_loads_by_name_from_any_folder_and_builds(
    tmp_path, monkeypatch, tiny_vit_clip
):
    from ovdet.config import list_configs
    from ovdet.core import get_head
    from ovdet.tv import build_model

    monkeypatch.chdir(tmp_path)  # found inside the package, not relative to the checkout
    names = [n for n in list_configs() if not n.startswith("d2/")]
    assert {"tiny.yaml", "Base-RCNN-FPN.yaml", "ovcoco_vild_R50_FPN.yaml"} <= set(names)
    # F-VLM loads its CLIP to build: a tiny CLIP of the backbone's kind instead (the shipped
    # tiny ResNet CLIP, the tests' tiny ViT CLIP)
    tiny_clips = {"build_clip_resnet_fpn_backbone": "local-dir:clip/tiny",
                  "build_clip_vit_fpn_backbone": tiny_vit_clip}  # fmt: skip
    for name in names:
        opts = ["MODEL.BACKBONE.WEIGHTS", ""]  # no ImageNet download here
        backbone = load_config(name).MODEL.BACKBONE.NAME
        clip_backbone = backbone in tiny_clips
        if clip_backbone:
            opts += ["MODEL.OVDET.CLIP", tiny_clips[backbone]]
        cfg = load_config(name, opts)
        model = build_model(cfg, num_classes=3)
        head = get_head(model)
        assert head.score_thresh == cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST, name
        assert head.distill_mode == cfg.MODEL.OVDET.DISTILL.MODE, name
        if clip_backbone:
            assert head.clip_backbone is model.backbone.clip, name
            continue
        depth = {18: 2, 34: 3, 50: 3, 101: 3}[cfg.MODEL.RESNETS.DEPTH]
        assert len(model.backbone.body.layer2) == {2: 2, 3: 4}[depth], name


def test_freeze_at_means_what_it_means_in_detectron2():
    from ovdet.tv import build_backbone

    def trainable(freeze_at):
        cfg = load_config("tiny", ["MODEL.BACKBONE.FREEZE_AT", str(freeze_at)])
        body = build_backbone(cfg).body
        return {n.split(".")[0] for n, p in body.named_parameters() if p.requires_grad}

    assert trainable(0) == {"conv1", "layer1", "layer2", "layer3", "layer4"}
    assert trainable(1) == {"layer1", "layer2", "layer3", "layer4"}
    assert trainable(2) == {"layer2", "layer3", "layer4"}  # detectron2's default
    assert trainable(5) == set()
    with pytest.raises(ConfigError, match="FREEZE_AT"):
        trainable(6)


def test_keys_with_another_meaning_in_detectron2_are_renamed(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text("MODEL:\n  BACKBONE:\n    NAME: resnet18\n")
    # MODEL.BACKBONE.NAME names the backbone builder now, as in detectron2
    from ovdet.tv.modeling.backbone import build_backbone

    with pytest.raises(ConfigError, match=r"BACKBONE\.NAME resnet18.*renamed.*RESNETS\.DEPTH 18"):
        build_backbone(load_config(path))
    for key in ("MODEL.BACKBONE.TRAINABLE_LAYERS", "MODEL.ROI_HEADS.IOU_THRESHOLD"):
        with pytest.raises(ConfigError, match="renamed"):
            load_config(None, [key, "1"])


def test_ensemble_keys_of_clip_rescoring_name_their_new_keys(tmp_path):
    """``MODEL.OVDET.ENSEMBLE.*`` was CLIP rescoring (ViLD-text+CLIP in the ViLD paper); its
    ViLD-ensemble is the text + image heads, with keys of its own (``VILD_ENSEMBLE``)."""
    for key in ("ENABLED", "BASE_WEIGHT", "NOVEL_WEIGHT", "CLIP_TEMPERATURE", "NUM_PROPOSALS"):
        path = tmp_path / f"{key}.yaml"
        path.write_text(f"MODEL:\n  OVDET:\n    ENSEMBLE:\n      {key}: 1\n")
        for source, overrides in ((path, []), (None, [f"MODEL.OVDET.ENSEMBLE.{key}", "1"])):
            with pytest.raises(ConfigError) as error:
                load_config(source, overrides)
            message = str(error.value)
            assert f"MODEL.OVDET.ENSEMBLE.{key}" in message and "\n" not in message
            assert f"renamed: use MODEL.OVDET.CLIP_RESCORING.{key}" in message
            # the weights and temperature also weighted the image head then
            assert ("VILD_ENSEMBLE" in message) == (key not in ("ENABLED", "NUM_PROPOSALS"))


def test_config_of_an_old_checkpoint_is_upgraded():
    from ovdet.config import config_from_dict

    old = {
        "MODEL": {
            "BACKBONE": {"NAME": "resnet34", "TRAINABLE_LAYERS": 3, "FROZEN_BN": False},
            "ROI_HEADS": {"IOU_THRESHOLD": 0.6},
        },
        "SOLVER": {"CLIP_GRADIENTS": 5.0},
    }
    cfg = config_from_dict(old)
    assert (cfg.MODEL.RESNETS.DEPTH, cfg.MODEL.RESNETS.NORM) == (34, "BN")
    assert cfg.MODEL.BACKBONE.FREEZE_AT == 2
    assert cfg.MODEL.ROI_HEADS.IOU_THRESHOLDS == [0.6]
    clip = cfg.SOLVER.CLIP_GRADIENTS
    assert (clip.ENABLED, clip.CLIP_TYPE, clip.CLIP_VALUE) == (True, "norm", 5.0)
    assert not config_from_dict({"SOLVER": {"CLIP_GRADIENTS": 0.0}}).SOLVER.CLIP_GRADIENTS.ENABLED


def test_checkpoint_configs_of_the_ensemble_keys_are_upgraded():
    from ovdet.config import config_from_dict

    ensemble = {"ENABLED": True, "BASE_WEIGHT": 0.6, "NOVEL_WEIGHT": 0.2, "CLIP_TEMPERATURE": 50.0}
    cfg = config_from_dict({"MODEL": {"OVDET": {"ENSEMBLE": ensemble}}})
    r = cfg.MODEL.OVDET.CLIP_RESCORING
    assert (r.ENABLED, r.BASE_WEIGHT, r.NOVEL_WEIGHT, r.CLIP_TEMPERATURE) == (True, 0.6, 0.2, 50.0)
    assert cfg.MODEL.OVDET.VILD_ENSEMBLE == load_config().MODEL.OVDET.VILD_ENSEMBLE  # no image head
    # An image head joined its scores with the rescoring weights then: they are its own now.
    for node in ("ENSEMBLE", "CLIP_RESCORING"):
        old = {"DISTILL": {"IMAGE_HEAD": True}, node: {**ensemble, "ENABLED": False}}
        v = config_from_dict({"MODEL": {"OVDET": old}}).MODEL.OVDET.VILD_ENSEMBLE
        assert (v.BASE_WEIGHT, v.NOVEL_WEIGHT, v.TEMPERATURE) == (0.6, 0.2, 50.0), node
    current = {"DISTILL": {"IMAGE_HEAD": True}, "VILD_ENSEMBLE": {"BASE_WEIGHT": 0.9},
               "CLIP_RESCORING": {"BASE_WEIGHT": 0.1}}  # fmt: skip
    v = config_from_dict({"MODEL": {"OVDET": current}}).MODEL.OVDET.VILD_ENSEMBLE
    assert (v.BASE_WEIGHT, v.NOVEL_WEIGHT) == (0.9, 0.33)  # a current config is kept as it is


def test_gradient_clipping_by_value_and_by_norm():
    import torch

    from ovdet.tv.engine.build import clip_gradients

    def clipped(kind):
        cfg = load_config(None, ["SOLVER.CLIP_GRADIENTS.CLIP_TYPE", kind,
                                 "SOLVER.CLIP_GRADIENTS.CLIP_VALUE", "1.0"])  # fmt: skip
        p = torch.nn.Parameter(torch.zeros(4))
        p.grad = torch.tensor([3.0, -4.0, 0.5, 0.0])
        clip_gradients(cfg, [p])
        return p.grad

    assert torch.equal(clipped("value"), torch.tensor([1.0, -1.0, 0.5, 0.0]))
    assert abs(float(clipped("norm").norm()) - 1.0) < 1e-5
    with pytest.raises(ConfigError, match="CLIP_TYPE"):
        clipped("sideways")


def test_torchvision_backbone_weights_load_weights_only(monkeypatch):
    """A torchvision weights name is downloaded and read without unpickling objects."""
    import torch
    import torchvision.models

    from ovdet.tv import build_backbone

    seen = {}

    class Weights:
        def get_state_dict(self, **kwargs):
            seen.update(kwargs)
            return torchvision.models.resnet18().state_dict()

    monkeypatch.setattr(torchvision.models, "get_weight", lambda name: Weights())
    cfg = load_config("tiny", ["MODEL.BACKBONE.WEIGHTS", "ResNet18_Weights.IMAGENET1K_V1"])
    assert isinstance(build_backbone(cfg), torch.nn.Module)
    assert seen.get("weights_only") is True


def test_cli_logging_shows_info_lines(caplog):
    """The tools used to silence the root logger, hiding every INFO line even with --verbose."""
    import logging

    from ovdet.cli.common import setup_logging

    try:
        setup_logging(verbose=False)
        assert logging.getLogger().getEffectiveLevel() == logging.INFO
        logging.getLogger("ovdet.tv.engine.trainer").info("iteration 20: loss 1.0")
        assert "iteration 20: loss 1.0" in caplog.messages
        setup_logging(verbose=True)
        assert logging.getLogger("ovdet.clip").isEnabledFor(logging.DEBUG)
    finally:
        logging.getLogger().setLevel(logging.WARNING)
        logging.getLogger("ovdet").setLevel(logging.NOTSET)

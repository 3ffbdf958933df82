"""``ovdet-convert-checkpoint --from detic``: Detic R50-C4 weights land in the C4 model; other
layouts get one line saying what they are (hand-made state dicts with their key names)."""

from __future__ import annotations

import pytest
import torch

from ovdet.cli.convert_checkpoint import main as convert_main
from ovdet.core import get_head
from ovdet.tv.engine.detic import convert_detic_checkpoint, detic_to_torchvision
from ovdet.tv.predictor import OVDetector
from ovdet.utils.errors import CheckpointError
from tests.detic_state import c4_model, detic_layout_state


def test_detic_weights_fill_the_c4_model_exactly():
    state = detic_layout_state()
    converted = detic_to_torchvision(state)
    model = c4_model()
    assert set(converted) == set(model.state_dict())  # nothing missing, nothing left over
    key = "backbone.body.layer3.0.bn2.running_var"
    torch.testing.assert_close(converted[key], state["backbone.res4.0.conv2.norm.running_var"])


def test_converted_checkpoint_runs_in_ovdetector(tmp_path):
    source = tmp_path / "detic.pth"
    torch.save({"model": detic_layout_state(), "iteration": 5}, source)
    output = tmp_path / "boxsup.pt"
    assert convert_main(["--from", "detic", str(source), str(output), "-q"]) == 0
    detector = OVDetector.from_checkpoint(
        output, overrides=["INPUT.MIN_SIZE_TEST", "96", "MODEL.RPN.POST_NMS_TOPK_TEST", "8"]
    )
    head = get_head(detector.model)
    assert head.classifier.scoring == "sigmoid" and detector.cfg.INPUT.FORMAT == "BGR"
    assert detector.cfg.MODEL.OVDET.TEMPLATES == "detic"
    expected = detic_layout_state()["roi_heads.box_predictor.cls_score.linear.weight"]
    torch.testing.assert_close(head.classifier.projection.weight, expected)
    head.set_vocabulary(torch.randn(3, 512))
    detector.class_names = ["kite", "umbrella", "cat"]
    (result,) = detector.predict(torch.randint(0, 255, (96, 128, 3), dtype=torch.uint8).numpy())
    assert len(result.scores) > 0 and result.boxes.shape == (len(result.scores), 4)


@pytest.mark.parametrize(
    "keys, message",
    [
        (["proposal_generator.centernet_head.cls_logits.weight",
          "roi_heads.box_predictor.0.cls_score.linear.weight"], "CenterNet2"),
        (["detr.transformer.encoder.layers.0.linear1.weight",
          "detr.class_embed.0.weight"], "Deformable-DETR"),
        (["backbone.bottom_up.res2.0.conv1.weight", "roi_heads.box_head.fc1.weight"],
         "not a Detic R50-C4 checkpoint"),
    ],
)  # fmt: skip
def test_other_layouts_get_one_line(tmp_path, keys, message, capsys):
    source = tmp_path / "other.pth"
    torch.save({"model": {k: torch.zeros(2) for k in keys}}, source)
    with pytest.raises(CheckpointError, match=message):
        convert_detic_checkpoint(torch.load(source), tmp_path / "out.pt", str(source))
    assert convert_main(["--from", "detic", str(source), str(tmp_path / "out.pt")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "out.pt").exists()  # nothing half-written

"""Joining the detector's scores: the ViLD-ensemble (text + image heads) and CLIP rescoring
(ViLD-text+CLIP), each with its own keys, and never both on one model."""

from __future__ import annotations

import pytest
import torch

from ovdet.config import load_config
from ovdet.core import (
    ClipRescoringSettings,
    OpenVocabularyHead,
    VildEnsembleSettings,
    check_score_fusion,
    geometric_mean_scores,
)
from ovdet.core.score_fusion import join_scores
from ovdet.utils.errors import ConfigError

FEATURES, DIM = 12, 8


def _cfg(*overrides: str):
    return load_config("tiny", ["MODEL.OVDET.EMBED_DIM", str(DIM), *overrides])


def test_geometric_mean_weights_the_detector_per_class_kind():
    det = torch.tensor([[0.8, 0.1]])
    clip = torch.tensor([[0.2, 0.9]])
    out = geometric_mean_scores(det, clip, torch.tensor([False, True]), base_weight=0.75,
                                novel_weight=0.25)  # fmt: skip
    assert torch.allclose(out, torch.tensor([[0.8**0.75 * 0.2**0.25, 0.1**0.25 * 0.9**0.75]]))


def test_join_scores_softmaxes_the_other_embeddings_at_the_temperature():
    text = torch.nn.functional.normalize(torch.randn(3, DIM), dim=1)
    other = torch.nn.functional.normalize(torch.randn(4, DIM), dim=1)
    det = torch.softmax(torch.randn(4, 3), dim=1)
    novel = torch.tensor([False, True, False])
    other_probs = torch.softmax(20.0 * other @ text.t(), dim=1)
    expected = geometric_mean_scores(det, other_probs, novel, 0.6, 0.3)
    torch.testing.assert_close(join_scores(det, other, text, novel, 0.6, 0.3, 20.0), expected)
    assert not torch.allclose(join_scores(det, other, text, novel, 0.6, 0.3, 1.0), expected)


def test_each_joining_reads_its_own_keys():
    keys = [
        "MODEL.OVDET.VILD_ENSEMBLE.BASE_WEIGHT", "0.5", "MODEL.OVDET.VILD_ENSEMBLE.NOVEL_WEIGHT",
        "0.1", "MODEL.OVDET.VILD_ENSEMBLE.TEMPERATURE", "20.0",
        "MODEL.OVDET.CLIP_RESCORING.BASE_WEIGHT", "0.9", "MODEL.OVDET.CLIP_RESCORING.NOVEL_WEIGHT",
        "0.8", "MODEL.OVDET.CLIP_RESCORING.CLIP_TEMPERATURE", "70.0",
    ]  # fmt: skip
    cfg = _cfg(*keys)
    assert VildEnsembleSettings.from_config(cfg) == VildEnsembleSettings(0.5, 0.1, 20.0)
    assert ClipRescoringSettings.from_config(cfg) == ClipRescoringSettings(0.9, 0.8, 70.0, 100)
    cheaper = _cfg("MODEL.OVDET.CLIP_RESCORING.NUM_PROPOSALS", "32",
                   "MODEL.OVDET.CLIP_RESCORING.CROP_SCALES", "[1.0]")  # fmt: skip
    assert ClipRescoringSettings.from_config(cheaper) == ClipRescoringSettings(
        0.67, 0.33, 100.0, 32, (1.0,)
    )
    assert ClipRescoringSettings.from_config(_cfg()).crop_scales == ()  # the teacher's
    head = OpenVocabularyHead.from_config(_cfg(*keys, "MODEL.OVDET.DISTILL.IMAGE_HEAD", "True"), 12)
    assert head.has_image_head and head.vild_ensemble == VildEnsembleSettings(0.5, 0.1, 20.0)
    # ViLD's defaults: the classifier weighs 2/3 on base classes, 1/3 on novel ones.
    assert VildEnsembleSettings.from_config(_cfg()) == VildEnsembleSettings(0.67, 0.33, 100.0)


def test_image_head_with_clip_rescoring_is_refused_in_one_line():
    check_score_fusion(True, False)
    check_score_fusion(False, True)
    with pytest.raises(ConfigError) as error:
        check_score_fusion(True, True)
    message = str(error.value)
    assert "\n" not in message
    assert "CLIP_RESCORING.ENABLED" in message and "DISTILL.IMAGE_HEAD" in message
    # where the config is built (both engines build the head from it) ...
    both = _cfg("MODEL.OVDET.DISTILL.IMAGE_HEAD", "True", "MODEL.OVDET.CLIP_RESCORING.ENABLED",
                "True")  # fmt: skip
    with pytest.raises(ConfigError, match="IMAGE_HEAD"):
        OpenVocabularyHead.from_config(both, FEATURES)
    # ... and where CLIP rescoring is turned on, before asking for a teacher.
    head = OpenVocabularyHead(FEATURES, DIM, image_head=True)
    with pytest.raises(ConfigError, match="IMAGE_HEAD"):
        head.enable_clip_rescoring(ClipRescoringSettings())
    assert head.clip_rescoring is None
    head.enable_clip_rescoring(None)  # turning it off is always fine


class _CountingTower(torch.nn.Module):
    """A stand-in CLIP image tower: a fixed projection of each crop's pixels (Tensor[B, DIM]),
    counting the crops it encodes."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(3 * 8 * 8, DIM)
        self.crops = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.crops += x.shape[0]
        return self.proj(x.flatten(1))


def test_clip_rescoring_crops_at_its_own_scales_one_clip_pass_each():
    from ovdet.core.teacher import ClipRegionTeacher

    torch.manual_seed(0)
    tower = _CountingTower()
    teacher = ClipRegionTeacher(tower, 8, (0.5,) * 3, (0.25,) * 3, crop_scales=(1.0, 1.5))
    head = OpenVocabularyHead(FEATURES, DIM)
    text = torch.nn.functional.normalize(torch.randn(3, DIM), dim=1)
    head.set_vocabulary(text, torch.tensor([False, True, False]))
    head.set_clip_teacher(teacher)
    image = torch.rand(1, 3, 48, 64)
    boxes = torch.tensor([[2.0, 3.0, 30.0, 40.0], [10.0, 5.0, 60.0, 44.0], [0.0, 0.0, 20.0, 20.0]])
    probs = torch.softmax(torch.randn(3, 3), dim=1)
    embeddings = torch.randn(3, DIM)

    def rescored(settings: ClipRescoringSettings) -> torch.Tensor:
        head.enable_clip_rescoring(settings)
        with head.score_threshold(0.0):
            out = head.detect(boxes, probs, embeddings, image)
        order = out["region_index"] * 3 + out["labels"]  # (region, class) -> score
        return torch.zeros(9).index_put_((order,), out["scores"])

    tower.crops = 0
    default = rescored(ClipRescoringSettings(num_proposals=3, base_weight=0.5, novel_weight=0.5))
    assert tower.crops == 6  # 3 boxes x the teacher's 2 scales
    tower.crops = 0
    one = rescored(ClipRescoringSettings(num_proposals=3, base_weight=0.5, novel_weight=0.5,
                                         crop_scales=(1.0,)))  # fmt: skip
    assert tower.crops == 3  # one crop per box: half the CLIP work
    one_scale = ClipRegionTeacher(tower, 8, (0.5,) * 3, (0.25,) * 3, crop_scales=(1.0,))
    expected = join_scores(probs, one_scale(image, [boxes]), text, head.is_novel_class, 0.5, 0.5,
                           100.0)  # fmt: skip
    torch.testing.assert_close(one.view(3, 3), expected)
    assert not torch.allclose(one, default)

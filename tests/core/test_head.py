"""The framework-free open-vocabulary head and the one novelty rule."""

from __future__ import annotations

import pytest
import torch

from ovdet.clip.text_classifier import Vocabulary
from ovdet.core import (
    ClipRescoringSettings,
    OpenVocabularyHead,
    VildEnsembleSettings,
    get_head,
    novel_class_mask,
)
from ovdet.utils.errors import ConfigError

FEATURES, DIM = 12, 8


def _head(**kwargs) -> OpenVocabularyHead:
    torch.manual_seed(0)
    head = OpenVocabularyHead(FEATURES, DIM, **kwargs)
    head.set_vocabulary(torch.randn(4, DIM))
    return head


def test_novelty_ignores_case_underscores_and_spacing_and_counts_synonyms():
    base = ["Red Square", "traffic_light"]
    vocabulary = Vocabulary(
        ("red square", "Traffic  Light", "crimson square", "kite"),
        ((), (), ("red_square",), ()),
    )
    assert novel_class_mask(vocabulary, base).tolist() == [False, False, False, True]
    assert novel_class_mask(["KITE"], Vocabulary(("bird",), (("kite",),))).tolist() == [False]
    assert novel_class_mask(["kite"], []).tolist() == [True]


def test_api_marks_novel_classes_by_the_shared_rule(trained_checkpoint):
    """The API used ``.lower()``, the trainer exact matches, the plugin ``normalize_name``;
    now every engine and tool calls :func:`novel_class_mask`."""
    from ovdet import OVDetector

    detector = OVDetector.from_checkpoint(trained_checkpoint)
    assert "red square" in detector.train_class_names
    detector.set_classes(["Red_Square", "red  square thing", "kite"])
    assert get_head(detector.model).is_novel_class.tolist() == [False, True, True]
    detector.set_classes(Vocabulary(("crimson square",), (("red square",),)))
    assert get_head(detector.model).is_novel_class.tolist() == [False]  # base by a synonym


def test_forward_shapes_and_losses():
    head = _head(text_loss_weight=2.0)
    logits, deltas, embeddings = head(torch.randn(6, FEATURES))
    assert logits.shape == (6, 5) and deltas.shape == (6, 4) and embeddings.shape == (6, DIM)
    assert torch.allclose(embeddings.norm(dim=1), torch.ones(6))
    gt = torch.tensor([0, 1, 4, 4, 2, 3])
    expected = 2.0 * torch.nn.functional.cross_entropy(logits, gt)
    torch.testing.assert_close(head.text_loss(logits, gt)["loss_text"], expected)


def test_distillation_picks_the_top_proposals_and_weights_the_loss():
    head = _head(distill_mode="online", distill_weight=0.25, distill_num_proposals=3)
    proposals = [torch.rand(10, 4) * 50 + torch.tensor([0, 0, 50, 50]), torch.rand(2, 4) + 60]
    picked = head.distillation_boxes(proposals)
    assert [len(b) for b in picked] == [3, 2]
    assert torch.equal(picked[0], proposals[0][:3])

    class Teacher(torch.nn.Module):
        mean = torch.zeros(1)

        def forward(self, images, boxes):
            return torch.nn.functional.normalize(torch.ones(sum(len(b) for b in boxes), DIM), dim=1)

    head.set_clip_teacher(Teacher())
    # Box features the classifier's projection maps onto -(1, ..., 1): no weights, bias -1.
    with torch.no_grad():
        head.classifier.projection.weight.zero_()
        head.classifier.projection.bias.fill_(-1.0)
    seen = []

    def box_features(boxes):
        seen.append([len(b) for b in boxes])
        return torch.randn(sum(len(b) for b in boxes), FEATURES)

    loss = head.distillation_loss(box_features, proposals=proposals, images=torch.zeros(2, 3, 8, 8))
    assert seen == [[3, 2]]
    # |(-1/sqrt(D)) - (1/sqrt(D))| summed over D dimensions = 2 sqrt(D), times the weight.
    assert float(loss["loss_image"].detach()) == pytest.approx(0.25 * 2 * DIM**0.5, rel=1e-5)
    assert _head(distill_mode="none").distillation_loss(box_features) == {}


def test_offline_distillation_uses_the_given_regions():
    head = _head(distill_mode="offline", distill_weight=1.0)
    features = torch.randn(3, FEATURES)
    emb = head.embed(features).detach()
    loss = head.distillation_loss(lambda boxes: features, offline=[(torch.rand(3, 4), emb)])
    assert float(loss["loss_image"].detach()) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(RuntimeError, match="EMBEDDINGS_FILE"):
        head.distillation_loss(lambda boxes: features)


def test_image_head_takes_the_distillation_and_joins_the_scores_as_the_vild_ensemble():
    """ViLD's separate heads: ViLD-image trains only the image projection, and inference takes
    the weighted geometric mean of both heads' probabilities (ViLD-ensemble: 2/3 and 1/3)."""
    from ovdet.core.losses import vild_image_loss
    from ovdet.core.score_fusion import geometric_mean_scores

    head = _head(distill_mode="offline", distill_weight=1.0, image_head=True,
                 vild_ensemble=VildEnsembleSettings(0.6, 0.2, temperature=30.0))  # fmt: skip
    head.set_vocabulary(head.text_embeddings, torch.tensor([False, False, True, True]))
    features = torch.randn(5, FEATURES)
    targets = torch.nn.functional.normalize(torch.randn(5, DIM), dim=1)
    loss = head.distillation_loss(lambda boxes: features, offline=[(torch.rand(5, 4), targets)])
    loss["loss_image"].backward()
    assert head.classifier.projection.weight.grad is None  # the classifier is not distilled
    assert head.image_projection.weight.grad.abs().sum() > 0
    image_embeddings = torch.nn.functional.normalize(head.image_projection(features), dim=1)
    torch.testing.assert_close(loss["loss_image"], vild_image_loss(image_embeddings, targets))

    probs, _, embeddings = head.predict(features)
    text_probs = head.classifier.probabilities(head.embed(features))
    image_probs = torch.softmax(30.0 * image_embeddings @ head.text_embeddings.t(), dim=1)
    expected = geometric_mean_scores(text_probs, image_probs, head.is_novel_class, 0.6, 0.2)
    torch.testing.assert_close(probs, expected.detach())
    torch.testing.assert_close(embeddings, head.embed(features))  # the classifier's embeddings
    # A novel class's score is text^0.2 * image^0.8; without the image head, text alone.
    torch.testing.assert_close(
        probs[:, 2], (text_probs[:, 2] ** 0.2 * image_probs[:, 2] ** 0.8).detach()
    )
    plain = _head()
    assert plain.image_projection is None
    torch.testing.assert_close(plain.predict(features)[0], plain.classifier.probabilities(
        plain.embed(features)))  # fmt: skip


def test_score_threshold_is_strict_and_applies_before_nms():
    head = _head(score_thresh=0.5, nms_thresh=0.5)
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10.5], [20, 20, 30, 30]])
    probs = torch.tensor([[0.5, 0.1, 0, 0], [0.6, 0, 0, 0], [0.0, 0.51, 0, 0]])
    det = head.detect(boxes, probs, torch.zeros(3, DIM))
    assert sorted(det["scores"].tolist()) == pytest.approx([0.51, 0.6])  # 0.5 is not above
    with head.score_threshold(0.4):
        det = head.detect(boxes, probs, torch.zeros(3, DIM))
    # 0.5 passes the lower threshold, but NMS removes it under the overlapping 0.6.
    assert sorted(det["scores"].tolist()) == pytest.approx([0.51, 0.6])
    assert head.score_thresh == 0.5  # restored


def test_clip_rescoring_needs_a_teacher_and_unknown_modes_are_config_errors():
    head = _head()
    with pytest.raises(RuntimeError, match="teacher"):
        head.enable_clip_rescoring(ClipRescoringSettings())
    assert head.clip_rescoring is None
    with pytest.raises(ConfigError, match="DISTILL.MODE"):
        OpenVocabularyHead(FEATURES, DIM, distill_mode="sometimes")


def test_get_head_finds_it_in_either_engine_and_refuses_closed_set_models():
    from ovdet.config import load_config
    from ovdet.tv import build_model

    cfg = load_config("tiny", ["MODEL.OVDET.EMBED_DIM", "8"])
    model = build_model(cfg)
    assert get_head(model) is model.roi_heads.box_predictor
    model.roi_heads.score_thresh = 0.42  # torchvision's attribute is the head's, not a copy
    assert get_head(model).score_thresh == 0.42
    wrapped = torch.nn.Sequential(model)
    assert get_head(wrapped) is get_head(model)
    closed = build_model(load_config("tiny", ["MODEL.META_ARCHITECTURE", "FasterRCNN"]), 3)
    with pytest.raises(ConfigError, match="no open-vocabulary head"):
        get_head(closed)


def test_clip_teacher_is_never_saved_and_follows_the_head():
    head = _head()

    class Teacher(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("mean", torch.zeros(3))
            self.weight = torch.nn.Parameter(torch.ones(2))

    head.set_clip_teacher(Teacher())
    assert not any("mean" in k or k.endswith("weight") and "clip" in k for k in head.state_dict())
    assert all(not k.startswith("clip_teacher") for k in head.state_dict())
    head.double()
    assert head.clip_teacher.weight.dtype == torch.float64

"""OpenVocabularyFastRCNNOutputLayers built from plain arguments (no YAML)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip(
    "detectron2", reason="detectron2 is not installed; see README (install by its official guide)"
)

from detectron2.layers import ShapeSpec  # noqa: E402
from detectron2.modeling.box_regression import Box2BoxTransform  # noqa: E402
from detectron2.structures import Boxes, Instances  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402

from ovdet.core import OpenVocabularyHead  # noqa: E402
from ovdet.d2 import OpenVocabularyFastRCNNOutputLayers  # noqa: E402
from ovdet.utils.errors import ConfigError  # noqa: E402

FEATURES, DIM = 16, 8


def _layers(num_classes: int = 5, loss_weight=1.0, **kwargs) -> OpenVocabularyFastRCNNOutputLayers:
    torch.manual_seed(0)
    head_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in ("score_thresh", "nms_thresh",
                   "detections_per_img", "text_loss_weight")}  # fmt: skip
    head = OpenVocabularyHead(FEATURES, DIM, **head_kwargs)
    head.set_vocabulary(torch.randn(num_classes, DIM))
    return OpenVocabularyFastRCNNOutputLayers(
        ShapeSpec(channels=FEATURES),
        box2box_transform=Box2BoxTransform(weights=(10.0, 10.0, 5.0, 5.0)),
        head=head,
        loss_weight=loss_weight,
        **kwargs,
    )


def _proposals(n: int, size=(100, 120)) -> Instances:
    g = torch.Generator().manual_seed(1)
    xy = torch.rand(n, 2, generator=g) * 60
    wh = torch.rand(n, 2, generator=g) * 30 + 5
    inst = Instances(size)
    inst.proposal_boxes = Boxes(torch.cat([xy, xy + wh], dim=1))
    return inst


def test_shapes_follow_the_vocabulary():
    layers = _layers(5)
    x = torch.randn(7, FEATURES)
    scores, deltas = layers(x)
    assert scores.shape == (7, 6) and deltas.shape == (7, 4)  # class-agnostic boxes
    assert not hasattr(layers, "cls_score") and not hasattr(layers, "bbox_pred")
    layers.set_vocabulary(torch.randn(11, DIM))
    scores, deltas = layers(x)
    assert scores.shape == (7, 12) and deltas.shape == (7, 4)
    assert layers.num_classes == 11
    assert layers.head.is_novel_class.shape == (11,)
    with pytest.raises(ValueError):
        layers.set_vocabulary(torch.randn(3, DIM), torch.zeros(4, dtype=torch.bool))


@pytest.mark.parametrize("num_classes", [1, 3, 9])
def test_inference_labels_index_the_current_vocabulary(num_classes):
    layers = _layers(4, score_thresh=0.0, detections_per_img=1000, nms_thresh=1.01)
    layers.set_vocabulary(torch.randn(num_classes, DIM))
    x = torch.randn(20, FEATURES) * 3
    proposals = [_proposals(20)]
    predictions = layers(x)
    (instances,), (kept,) = layers.inference(predictions, proposals)
    probs = F.softmax(predictions[0], dim=-1)
    assert len(instances) > 0
    labels = instances.pred_classes
    assert int(labels.max()) < num_classes
    # Each detection's score is the probability of its label for its proposal.
    assert torch.allclose(instances.scores, probs[kept, labels])
    # With NMS off and no threshold, every (proposal, class) pair is a detection.
    assert len(instances) == 20 * num_classes
    # detect() (the ROI heads' path) gives the same detections, with region embeddings.
    (same,) = layers.detect(x, proposals)
    assert torch.equal(same.pred_classes, labels)
    torch.testing.assert_close(same.scores, instances.scores)
    assert same.pred_embeddings.shape == (len(same), DIM)


def test_permuting_the_vocabulary_permutes_the_labels():
    layers = _layers(4, score_thresh=0.01)
    text = torch.randn(4, DIM)
    x = torch.randn(15, FEATURES) * 3
    proposals = [_proposals(15)]
    layers.set_vocabulary(text)
    (a,) = layers.detect(x, proposals)
    perm = torch.tensor([3, 1, 0, 2])
    layers.set_vocabulary(text[perm])
    (b,) = layers.detect(x, proposals)
    inverse = torch.argsort(perm)
    key_a = sorted(zip(a.scores.tolist(), inverse[a.pred_classes].tolist()))
    key_b = sorted(zip(b.scores.tolist(), b.pred_classes.tolist()))
    assert [lab for _, lab in key_a] == [lab for _, lab in key_b]
    assert [s for s, _ in key_a] == pytest.approx([s for s, _ in key_b], abs=1e-6)


def test_losses_are_vild_text_and_detectron2_box_loss():
    layers = _layers(5, loss_weight=0.5, text_loss_weight=2.0)
    layers.set_vocabulary(torch.randn(3, DIM))  # background is now class 3
    x = torch.randn(6, FEATURES)
    props = _proposals(6)
    props.gt_classes = torch.tensor([0, 1, 2, 3, 3, 1])  # 3 is background
    props.gt_boxes = Boxes(props.proposal_boxes.tensor + 2.0)
    predictions = layers(x)
    with EventStorage(0):
        losses = layers.losses(predictions, [props])
    assert set(losses) == {"loss_text", "loss_box_reg"}
    expected = 2.0 * F.cross_entropy(predictions[0], props.gt_classes)
    assert torch.allclose(losses["loss_text"], expected)
    assert losses["loss_box_reg"] > 0
    losses["loss_text"].backward()
    assert layers.head.classifier.projection.weight.grad is not None

    props.gt_classes = torch.full((6,), 3)  # all background: no box loss
    with EventStorage(0):
        losses = layers.losses(layers(x), [props])
    assert float(losses["loss_box_reg"].detach()) == 0.0


def test_checkpoints_of_the_previous_layout_load():
    layers = _layers(3)
    old = {
        k.replace("head.", "", 1): v for k, v in layers.state_dict().items()
    }  # classifier.*, bbox_pred.* as ovdet 0.1 saved them
    fresh = _layers(3)
    torch.nn.init.zeros_(fresh.head.bbox_pred.weight)
    fresh.load_state_dict(old)
    assert torch.equal(fresh.head.bbox_pred.weight, layers.head.bbox_pred.weight)


def test_unsupported_options_raise():
    with pytest.raises(ConfigError):
        _layers(3, use_sigmoid_ce=True)
    with pytest.raises(ConfigError):
        _layers(3, cls_agnostic_bbox_reg=False)


def test_post_processing_is_the_heads_with_its_candidate_cap():
    """The plugin selects detections with the shared rule: its candidate cap bounds the work
    for huge vocabularies (detectron2's stock inference has none)."""
    layers = _layers(4, score_thresh=0.0, detections_per_img=1000, nms_thresh=1.01)
    layers.set_vocabulary(torch.randn(2000, DIM))
    x = torch.randn(20, FEATURES)
    (full,) = layers.detect(x, [_proposals(20)])
    assert len(full) == 1000
    layers.head.max_candidates = 7
    (capped,) = layers.detect(x, [_proposals(20)])
    assert len(capped) == 7
    torch.testing.assert_close(capped.scores, full.scores[:7])

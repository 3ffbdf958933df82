"""Detic's classifier options of the core head: sigmoid scoring and the box MLP."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ovdet.core.classifier import ZeroShotClassifier
from ovdet.core.head import OpenVocabularyHead
from ovdet.core.losses import sigmoid_text_loss


def test_sigmoid_probabilities_are_each_class_on_its_own():
    torch.manual_seed(0)
    clf = ZeroShotClassifier(16, 8, temperature=50.0, background="fixed", scoring="sigmoid")
    clf.set_text_embeddings(torch.randn(5, 8))
    features = torch.randn(7, 16)
    embeddings = clf.embed(features)
    probs = clf.probabilities(embeddings)
    # Detic's ZeroShotClassifier: 50 * normalize(linear(x)) @ normalize(text), then sigmoid.
    expected = (50.0 * F.normalize(clf.projection(features), dim=1)) @ F.normalize(
        clf.text_embeddings, dim=1
    ).t()
    torch.testing.assert_close(probs, expected.sigmoid())
    assert not torch.allclose(probs.sum(dim=1), torch.ones(7))  # not a softmax


def test_sigmoid_text_loss_is_detics_binary_cross_entropy():
    logits = torch.tensor([[2.0, -1.0, 0.5, 0.0], [0.3, 0.2, -2.0, 0.0]])
    gt = torch.tensor([1, 3])  # class 1, then background (3 classes)
    target = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    expected = F.binary_cross_entropy_with_logits(logits[:, :3], target, reduction="sum") / 2
    torch.testing.assert_close(sigmoid_text_loss(logits, gt), expected)
    # the background logit is not used
    changed = logits.clone()
    changed[:, 3] = 9.0
    torch.testing.assert_close(sigmoid_text_loss(changed, gt), expected)


def test_head_scoring_and_box_mlp():
    torch.manual_seed(0)
    head = OpenVocabularyHead(
        12, 8, background="fixed", scoring="sigmoid", box_reg_hidden_dim=12, score_thresh=0.0
    )
    head.set_vocabulary(torch.randn(4, 8))
    assert isinstance(head.bbox_pred, torch.nn.Sequential) and len(head.bbox_pred) == 3
    features = torch.randn(6, 12)
    logits, deltas, _ = head(features)
    probs, predicted, _ = head.predict(features)
    torch.testing.assert_close(probs, logits[:, :-1].sigmoid())
    torch.testing.assert_close(head.probabilities_from_logits(logits), probs)
    torch.testing.assert_close(predicted, deltas)
    gt = torch.tensor([0, 1, 4, 4, 2, 3])
    loss = head.text_loss(logits, gt)["loss_text"]
    torch.testing.assert_close(loss, sigmoid_text_loss(logits, gt))


def test_unknown_scoring_is_refused():
    with pytest.raises(ValueError, match="scoring"):
        ZeroShotClassifier(4, 4, scoring="softermax")

import math

import pytest
import torch

from ovdet.core import ZeroShotClassifier


def _identity_classifier(dim: int, **kw) -> ZeroShotClassifier:
    clf = ZeroShotClassifier(dim, dim, **kw)
    with torch.no_grad():
        clf.projection.weight.copy_(torch.eye(dim))
        clf.projection.bias.zero_()
    return clf


def test_logits_are_temperature_times_cosine_with_fixed_background():
    clf = _identity_classifier(2, temperature=10.0, background="fixed", background_logit=-1.5)
    clf.set_text_embeddings(torch.tensor([[1.0, 0.0], [0.0, 3.0]]))  # normalised inside
    x = torch.tensor([[2.0, 2.0], [0.0, -1.0]])
    logits = clf(x)
    c = 1 / math.sqrt(2)
    expected = torch.tensor([[10 * c, 10 * c, -1.5], [0.0, -10.0, -1.5]])
    assert torch.allclose(logits, expected, atol=1e-5)


def test_learned_background_is_scored_like_a_class():
    clf = _identity_classifier(3, temperature=5.0, background="learned")
    with torch.no_grad():
        clf.background_embedding.copy_(torch.tensor([0.0, 0.0, 2.0]))
    clf.set_text_embeddings(torch.eye(3)[:2])
    logits = clf(torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]))
    assert torch.allclose(logits, torch.tensor([[0.0, 0.0, 5.0], [5.0, 0.0, 0.0]]), atol=1e-5)


def test_vocabulary_swap_changes_class_count_not_weights():
    clf = ZeroShotClassifier(8, 4)
    before = {k: v.clone() for k, v in clf.state_dict().items()}
    for c in (1, 20, 20_000):
        clf.set_text_embeddings(torch.randn(c, 4))
        assert clf(torch.randn(5, 8)).shape == (5, c + 1)
    assert all(torch.equal(before[k], v) for k, v in clf.state_dict().items())
    assert "text_embeddings" not in clf.state_dict()


def test_bad_text_embeddings_and_missing_vocabulary():
    clf = ZeroShotClassifier(8, 4)
    with pytest.raises(RuntimeError, match="no vocabulary"):
        clf(torch.randn(2, 8))
    with pytest.raises(ValueError, match=r"\[C, 4\]"):
        clf.set_text_embeddings(torch.randn(3, 5))


def test_candidate_cap_bounds_nms_without_changing_the_detections():
    """Capping (region, class) pairs before NMS keeps the same top detections, and a
    20,000-class vocabulary at threshold 0 stays bounded."""
    from ovdet.core import OpenVocabularyHead

    torch.manual_seed(0)
    heads = OpenVocabularyHead(8, 8, score_thresh=0.0, detections_per_img=50).eval()
    xy = torch.rand(300, 2) * 100
    boxes = torch.cat([xy, xy + 5 + torch.rand(300, 2) * 30], dim=1)
    probs = torch.rand(300, 40).softmax(dim=1)
    embeddings = torch.randn(300, 8)
    heads.max_candidates = 10**9
    full = heads.detect(boxes, probs, embeddings, None)
    heads.max_candidates = 500
    capped = heads.detect(boxes, probs, embeddings, None)
    assert len(full["scores"]) == 50
    torch.testing.assert_close(capped["scores"], full["scores"])
    torch.testing.assert_close(capped["boxes"], full["boxes"])
    assert torch.equal(capped["labels"], full["labels"])

    huge = torch.rand(1000, 20000).softmax(dim=1)
    xy = torch.rand(1000, 2) * 100
    many = heads.detect(torch.cat([xy, xy + 10], dim=1), huge, torch.randn(1000, 8), None)
    assert len(many["scores"]) == 50
    assert many["scores"][0] == huge.max()

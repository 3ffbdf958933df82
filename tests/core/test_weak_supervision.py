"""Weak-supervision losses (image labels, captions, federated) on hand-made inputs."""

import math

import pytest
import torch
import torch.nn.functional as F

from ovdet.core.head import OpenVocabularyHead
from ovdet.core.weak_supervision import (
    PRIOR_LOGIT_BIAS,
    TrainingVocabulary,
    WeakSupervisionSettings,
    caption_loss,
    choose_label_regions,
    federated_classes,
    image_label_loss,
)
from ovdet.utils.errors import ConfigError


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


# Three proposals and the whole-image box last; proposal 1 is the largest proposal.
BOXES = torch.tensor(
    [[0.0, 0, 10, 10], [0, 0, 30, 20], [5, 5, 8, 8], [0, 0, 64, 64]]
)  # fmt: skip
# Logits of 3 classes and the background (last column).
LOGITS = torch.tensor(
    [[0.0, 3.0, 0.0, 0.0], [1.0, 0.0, 0.0, -1.0], [5.0, 0.0, 2.0, 0.0], [9.0, 9.0, 9.0, 0.0]]
)  # fmt: skip


def test_max_size_takes_the_largest_proposal_not_the_image_box():
    labels = torch.tensor([0, 2])
    assert choose_label_regions(BOXES, LOGITS, labels, "max_size").tolist() == [1, 1]


def test_max_score_takes_per_label_the_best_proposal():
    labels = torch.tensor([1, 0, 2])
    # The image box scores 9 for every class but is not a proposal.
    assert choose_label_regions(BOXES, LOGITS, labels, "max_score").tolist() == [0, 2, 2]


def test_image_choice_and_images_without_proposals_use_the_image_box():
    labels = torch.tensor([0, 1])
    assert choose_label_regions(BOXES, LOGITS, labels, "image").tolist() == [3, 3]
    only_image = BOXES[-1:]
    assert choose_label_regions(only_image, LOGITS[-1:], labels, "max_size").tolist() == [0, 0]
    with pytest.raises(ValueError, match="region choice"):
        choose_label_regions(BOXES, LOGITS, labels, "largest")


def test_image_label_loss_known_value():
    # Region 1 (largest proposal) has logits [1, 0, 0] and background -1; the label is class 0:
    # class 0 is the positive, classes 1, 2 and the background the negatives.
    loss = image_label_loss([LOGITS], [BOXES], [torch.tensor([0])], "max_size", logit_bias=0.0)
    expected = _softplus(-1.0) + _softplus(0.0) + _softplus(0.0) + _softplus(-1.0)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # The prior bias shifts every logit.
    b = PRIOR_LOGIT_BIAS
    loss = image_label_loss([LOGITS], [BOXES], [torch.tensor([0])], "max_size")
    expected = _softplus(-(1.0 + b)) + 2 * _softplus(b) + _softplus(-1.0 + b)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_image_label_loss_each_label_positive_never_another_labels_negative():
    # Labels 0 and 2 on the same region (logits [1, 0, 0], background -1). Label 0's terms:
    # class 0 positive, class 1 and the background negative, class 2 (the other label) left out;
    # label 2's terms likewise; averaged over the two labels.
    two = image_label_loss([LOGITS], [BOXES], [torch.tensor([0, 2])], "max_size", logit_bias=0.0)
    label0 = _softplus(-1.0) + _softplus(0.0) + _softplus(-1.0)
    label2 = _softplus(-0.0) + _softplus(0.0) + _softplus(-1.0)
    assert two.item() == pytest.approx((label0 + label2) / 2)
    # max_score, labels 1 and 0: label 1 takes region 0 (logits [0, 3, 0], background 0), label
    # 0 region 2 (logits [5, 0, 2], background 0); neither region learns the other's label.
    logits = LOGITS.clone().requires_grad_(True)
    loss = image_label_loss([logits], [BOXES], [torch.tensor([1, 0])], "max_score", logit_bias=0.0)
    assert loss.item() == pytest.approx(
        (_softplus(-3.0) + 2 * _softplus(0.0) + _softplus(2.0) + _softplus(0.0) + _softplus(-5.0))
        / 2
    )
    loss.backward()
    assert logits.grad[0, 0] == 0 and logits.grad[2, 1] == 0  # the other label: left out
    assert logits.grad[0, 1] < 0 and logits.grad[2, 0] < 0  # its own label: up
    # A second image without labels does not dilute the mean; one with labels does.
    no_labels = torch.tensor([], dtype=torch.long)
    empty = image_label_loss(
        [LOGITS, LOGITS], [BOXES, BOXES], [torch.tensor([0, 2]), no_labels], "max_size",
        logit_bias=0.0,
    )  # fmt: skip
    assert empty.item() == pytest.approx(two.item())
    # max_score: label 1 -> region 0 (logits [0, 3, 0], background 0).
    loss = image_label_loss([LOGITS], [BOXES], [torch.tensor([1])], "max_score", logit_bias=0.0)
    assert loss.item() == pytest.approx(3 * _softplus(0.0) + _softplus(-3.0))


def test_image_label_loss_gradient_only_reaches_the_chosen_region():
    logits = LOGITS.clone().requires_grad_(True)
    image_label_loss([logits], [BOXES], [torch.tensor([0])], "max_size").backward()
    rows_with_grad = (logits.grad.abs().sum(dim=1) > 0).nonzero().flatten().tolist()
    assert rows_with_grad == [1]
    # The label up; the other classes and the background down.
    assert logits.grad[1, 0] < 0 < logits.grad[1, 1] and logits.grad[1, 3] > 0


def test_image_label_loss_on_a_federated_subset():
    full = image_label_loss([LOGITS], [BOXES], [torch.tensor([0])], "max_size", logit_bias=0.0)
    sub = image_label_loss(
        [LOGITS], [BOXES], [torch.tensor([0])], "max_size", logit_bias=0.0,
        class_subsets=[torch.tensor([0, 2])],
    )  # fmt: skip
    assert sub.item() == pytest.approx(full.item() - _softplus(0.0))


def test_federated_classes_keep_positives_and_sample_by_weight():
    weights = torch.tensor([1.0, 0.0, 4.0, 0.0, 9.0, 1.0])
    picked = federated_classes(torch.tensor([3, 3]), weights, num_classes=3)
    assert picked[0] == 3 and len(picked) == 3 and len(set(picked.tolist())) == 3
    assert not {1}.intersection(picked.tolist())  # weight 0 is never sampled
    # Fewer classes with weight than asked: all of them, no error.
    assert sorted(federated_classes(torch.tensor([1]), weights, 50).tolist()) == [0, 1, 2, 4, 5]
    # Frequent classes are sampled more often.
    gen = torch.Generator().manual_seed(0)
    counts = torch.zeros(6)
    for _ in range(300):
        counts[federated_classes(torch.tensor([1]), weights, 2, gen)[1:]] += 1
    assert counts[4] > counts[2] > counts[0] and counts[3] == 0


def test_caption_loss_known_value_and_contrast():
    images = torch.eye(2)
    t, b, w = 10.0, PRIOR_LOGIT_BIAS, 0.125
    loss = caption_loss(images, torch.eye(2), t, negative_weight=w)
    expected = (2 * _softplus(-(t + b)) + 2 * w * _softplus(b)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # Each image matched with the other's caption is penalised far more.
    swapped = caption_loss(images, torch.eye(2).flip(0), t, negative_weight=w)
    assert swapped.item() == pytest.approx((2 * _softplus(-b) + 2 * w * _softplus(t + b)) / 2)
    assert swapped > 5 * loss
    # Caption embeddings are normalised and receive no gradient.
    caps = (3 * torch.eye(2)).requires_grad_(True)
    trained = torch.eye(2).requires_grad_(True)
    caption_loss(trained, caps, t, negative_weight=w).backward()
    assert caps.grad is None and trained.grad is not None
    assert caption_loss(images, 3 * torch.eye(2), t, w).item() == pytest.approx(expected)
    with pytest.raises(ValueError, match="differ in shape"):
        caption_loss(images, torch.eye(3), t)


def _head(**weak) -> OpenVocabularyHead:
    torch.manual_seed(0)
    head = OpenVocabularyHead(8, 4, temperature=10.0, weak=WeakSupervisionSettings(**weak))
    head.set_vocabulary(F.normalize(torch.randn(5, 4), dim=-1))
    return head


def test_head_weak_losses_choose_regions_and_add_the_caption_loss():
    head = _head(num_proposals=2, caption_loss=True, image_loss_weight=0.5)
    features = {}

    def box_features(boxes):  # box features from box coordinates, like an engine's box head
        features["boxes"] = [b.clone() for b in boxes]
        flat = torch.cat(list(boxes))
        return torch.cat([flat, flat], dim=1) / 64

    proposals = [torch.tensor([[0.0, 0, 10, 10], [0, 0, 40, 40], [1, 1, 60, 60]])]
    caps = F.normalize(torch.randn(1, 4), dim=-1)
    losses = head.weak_losses(box_features, proposals, [(48, 64)], [torch.tensor([3])], caps)
    assert set(losses) == {"loss_image_label", "loss_caption"}
    # Top 2 proposals, then the (H=48, W=64) image box.
    assert features["boxes"][0].tolist() == [[0, 0, 10, 10], [0, 0, 40, 40], [0, 0, 64, 48]]
    regions = features["boxes"][0]
    logits = head.classifier.logits_from_embeddings(head.embed(box_features([regions])))
    expected = 0.5 * image_label_loss([logits], [regions], [torch.tensor([3])], "max_size")
    assert losses["loss_image_label"].item() == pytest.approx(expected.item(), rel=1e-5)
    # Without captions (or with the caption loss off) only the image-label loss.
    assert set(head.weak_losses(box_features, proposals, [(48, 64)], [torch.tensor([3])])) == {
        "loss_image_label"
    }


def test_head_federated_loss_needs_class_frequencies():
    head = _head(fed_loss=True, fed_loss_num_classes=2)
    box_features = lambda boxes: torch.ones(sum(len(b) for b in boxes), 8)  # noqa: E731
    args = (box_features, [torch.tensor([[0.0, 0, 5, 5]])], [(8, 8)], [torch.tensor([0])])
    with pytest.raises(RuntimeError, match="set_class_frequencies"):
        head.weak_losses(*args)
    head.set_class_frequencies(torch.tensor([4.0, 9.0, 0.0, 0.0, 0.0]))
    assert head.class_sampling_weights.tolist() == [2.0, 3.0, 0.0, 0.0, 0.0]
    full = _head(fed_loss=False).weak_losses(*args)["loss_image_label"]
    fed = head.weak_losses(*args)["loss_image_label"]
    assert 0 < fed < full  # 2 of the 5 classes
    with pytest.raises(ValueError, match="class counts"):
        head.set_class_frequencies(torch.ones(3))


def test_settings_validate_and_read_the_config():
    from ovdet.config import get_default_config

    settings = WeakSupervisionSettings.from_config(get_default_config())
    assert settings == WeakSupervisionSettings()  # Detic's defaults in one place
    assert (settings.image_label_loss, settings.image_loss_weight) == ("max_size", 0.1)
    assert (settings.num_proposals, settings.negative_caption_weight) == (128, 0.125)
    assert (settings.fed_loss_num_classes, settings.fed_loss_freq_weight) == (50, 0.5)
    with pytest.raises(ConfigError, match="IMAGE_LABEL_LOSS"):
        WeakSupervisionSettings(image_label_loss="biggest")
    assert settings.box_batch_classes == "all"
    with pytest.raises(ConfigError, match="BOX_BATCH_CLASSES must be one of"):
        WeakSupervisionSettings(box_batch_classes="base")


@pytest.mark.parametrize("box_batch_classes", ["all", "box"])
def test_training_vocabulary_of_each_batch_kind(box_batch_classes):
    head = _head(box_batch_classes=box_batch_classes)
    box = TrainingVocabulary(F.normalize(torch.randn(2, 4), dim=-1))
    weak = TrainingVocabulary(
        F.normalize(torch.randn(3, 4), dim=-1),
        torch.tensor([False, False, True]),
        torch.tensor([5.0, 2.0, 7.0]),
    )
    # Image-labelled batches: the weak vocabulary with its class counts (federated loss).
    assert head.training_vocabulary(1, box, weak) is weak
    # Box batches: the weak vocabulary's classes too ("all"), or the box classes alone; never
    # class counts, which only the image-label loss samples by.
    chosen = head.training_vocabulary(0, box, weak)
    expected = weak if box_batch_classes == "all" else box
    assert chosen.text is expected.text and chosen.is_novel is expected.is_novel
    assert chosen.class_counts is None


@pytest.mark.parametrize(
    "name, props, captions, fed",
    [("ovcoco_detic_captions_R50_FPN", 32, True, False),
     ("ovlvis_detic_in21k_R50_FPN", 128, False, True)],
)  # fmt: skip
def test_weak_supervision_recipes(name, props, captions, fed):
    from ovdet.config import load_config

    cfg = load_config(name, [])
    w = cfg.MODEL.OVDET.WEAK
    settings = (w.NUM_PROPOSALS, w.CAPTION_LOSS, w.FED_LOSS)
    assert settings == (props, captions, fed)
    assert cfg.DATASETS.WEAK_TRAIN.startswith("datasets/") and cfg.DATASETS.WEAK_TRAIN_IMAGES
    assert list(cfg.DATALOADER.DATASET_RATIO) == [1, 4]
    assert max(cfg.INPUT.WEAK_MIN_SIZE_TRAIN) < min(cfg.INPUT.MIN_SIZE_TRAIN)

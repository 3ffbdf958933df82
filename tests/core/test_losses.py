import math

import torch

from ovdet.core import box_regression_loss, vild_image_loss, vild_text_loss


def test_vild_text_loss_matches_hand_computed_cross_entropy():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # 2 classes + background
    gt = torch.tensor([0, 2])  # class 0, background
    a = -math.log(math.exp(2) / (math.exp(2) + 2))
    b = -math.log(math.e / (math.e + 2))
    assert math.isclose(vild_text_loss(logits, gt).item(), (a + b) / 2, rel_tol=1e-6)
    assert vild_text_loss(logits[:0], gt[:0]).item() == 0.0


def test_vild_image_loss_is_mean_l1_per_region():
    region = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    teacher = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    assert math.isclose(vild_image_loss(region, teacher).item(), (0.4 + 0.8) / 2, rel_tol=1e-6)


def test_box_loss_ignores_background_and_normalises_by_all_regions():
    deltas = torch.tensor([[1.0, 0, 0, 0], [5.0, 5, 5, 5]])
    targets = torch.zeros(2, 4)
    gt = torch.tensor([0, 1])  # second region is background (C = 1)
    loss = box_regression_loss(deltas, targets, gt, background_class=1, beta=0.0)
    assert math.isclose(loss.item(), 1.0 / 2, rel_tol=1e-6)

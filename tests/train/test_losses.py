"""QuickNAT loss parts: class weights, boundaries, Dice values."""

from __future__ import annotations

import numpy as np
import torch

from bids_infantseg.train.losses import (
    boundary_mask,
    median_frequency_weights,
    quicknat_loss,
    soft_dice_loss,
)


def onehot_logits(target: torch.Tensor, classes: int, margin: float) -> torch.Tensor:
    return margin * torch.nn.functional.one_hot(target, classes).permute(0, 3, 1, 2).float()


def two_regions() -> torch.Tensor:
    target = torch.zeros(2, 8, 8, dtype=torch.long)
    target[:, :, 4:] = 1
    return target


def test_median_frequency_weights():
    np.testing.assert_allclose(median_frequency_weights(np.array([5, 5, 5])), [1, 1, 1])
    weights = median_frequency_weights(np.array([900, 90, 10, 0]))
    assert weights[2] > weights[1] > weights[0]
    assert weights[1] == 1.0 and weights[3] == weights.max()


def test_boundary_mask_marks_both_sides_of_an_edge():
    edge = boundary_mask(two_regions())
    assert edge[:, :, 3:5].all() and not edge[:, :, :3].any() and not edge[:, :, 5:].any()


def test_dice_loss_sanity_values():
    target = two_regions()
    assert soft_dice_loss(onehot_logits(target, 2, 50.0), target) < 1e-3
    assert soft_dice_loss(onehot_logits(1 - target, 2, 50.0), target) > 0.95
    uniform = soft_dice_loss(torch.zeros(2, 2, 8, 8), target)
    assert abs(float(uniform) - 0.5) < 0.02  # p = 1/2 everywhere: Dice 1/2 per class


def test_quicknat_loss_prefers_the_truth():
    target = two_regions()
    weights = torch.ones(2)
    right = quicknat_loss(onehot_logits(target, 2, 10.0), target, weights, 2.0)
    wrong = quicknat_loss(onehot_logits(1 - target, 2, 10.0), target, weights, 2.0)
    assert float(right) < 0.01 < 10 < float(wrong)

"""QuickNAT loss parts: class weights, boundaries, Dice values, partial labels."""

from __future__ import annotations

import numpy as np
import torch

from bids_infantseg.train.losses import (
    boundary_mask,
    median_frequency_weights,
    partial_cross_entropy,
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
    assert weights[1] == 1.0 and weights[3] == 1.0  # unseen: unknown, not rare
    np.testing.assert_allclose(median_frequency_weights(np.array([900, 90, 10, 0]), cap=5),
                               np.minimum(weights, 5))


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


GROUPS = ((1, 2), (2, 3))
"""Four classes; target 4 means "class 1 or 2", target 5 "class 2 or 3"."""


def test_partial_label_costs_nothing_for_any_member_and_flows_gradients():
    target = torch.full((1, 4, 4), 4)
    for member in (1, 2):
        ce = partial_cross_entropy(onehot_logits(torch.full((1, 4, 4), member), 4, 30.0),
                                   target, GROUPS)
        assert float(ce.max()) < 1e-9
    split = torch.zeros(1, 4, 4, 4)
    split[:, 1:3] = 30.0  # half the mass on each member: still right
    assert float(partial_cross_entropy(split, target, GROUPS).max()) < 1e-9
    outside = partial_cross_entropy(onehot_logits(torch.full((1, 4, 4), 3), 4, 30.0), target,
                                    GROUPS)
    assert float(outside.min()) > 20
    logits = torch.zeros(1, 4, 4, 4, requires_grad=True)
    partial_cross_entropy(logits, target, GROUPS).sum().backward()
    grad = logits.grad[0, :, 0, 0]
    assert torch.isfinite(logits.grad).all()
    assert grad[1] == grad[2] < 0 < grad[0] == grad[3]  # up the members, down the others


def test_partial_cross_entropy_is_cross_entropy_on_class_targets():
    torch.manual_seed(0)
    logits, target = torch.randn(2, 4, 5, 5), torch.randint(0, 4, (2, 5, 5))
    torch.testing.assert_close(partial_cross_entropy(logits, target, GROUPS),
                               torch.nn.functional.cross_entropy(logits, target,
                                                                 reduction="none"))
    weights = torch.ones(6)
    torch.testing.assert_close(quicknat_loss(logits, target, weights, 2.0, GROUPS),
                               quicknat_loss(logits, target, weights[:4], 2.0))


def test_dice_leaves_partial_targets_out():
    """Whatever the prediction on a partially labelled pixel, Dice does not change."""
    torch.manual_seed(1)
    target = torch.randint(0, 4, (2, 6, 6))
    target[:, :3] = 5
    logits = torch.randn(2, 4, 6, 6)
    other = logits.clone()
    other[:, :, :3] = torch.randn(2, 4, 3, 6) * 10
    assert float(soft_dice_loss(logits, target, partial=True)) == \
        float(soft_dice_loss(other, target, partial=True))
    known = target[:, 3:]
    torch.testing.assert_close(soft_dice_loss(logits, target, partial=True),
                               soft_dice_loss(logits[:, :, 3:], known))

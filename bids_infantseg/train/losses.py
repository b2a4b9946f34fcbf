"""QuickNAT's training loss: weighted cross-entropy plus soft Dice.

Cross-entropy alone lets the big classes (air, scalp, white matter) dominate; median-frequency
balancing lifts small structures, boundary weights stress the voxels where labels change, and
the Dice term optimises overlap per class directly.

Partial labels: a target may be a group of classes (``K + g`` for group ``g`` of ``groups``,
``K`` the classes) where the source knows only that the truth is one of them (a fetal
atlas's deep grey matter for the aseg set's thalamus, caudate, putamen, ...). Its
cross-entropy is ``-log`` of the probability summed over the group's classes, so any split of
the mass among them costs nothing and mass outside costs as usual. Dice is taken over the
classes on the voxels with a class target only: on a group voxel no class's overlap is
known, and counting the group's summed probability as one more Dice class would push those
classes down wherever a fully labelled source draws them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def median_frequency_weights(counts: np.ndarray, cap: float | None = None) -> np.ndarray:
    """Class weights ``median(freq) / freq``, at most ``cap`` if given.

    A class the counted volumes never show gets the median class's weight, 1: counts are a
    sample (a few synthetic volumes; the young asegs have no cerebellar white matter), and
    an absent class is unknown, not rare; the largest weight made the aseg run paint
    cerebellar white matter over the whole cerebellum. ``cap`` keeps a handful of classes
    of a few voxels (33 aseg labels: accumbens ~70x the median) from ruling the loss.
    """
    counts = np.asarray(counts, dtype=np.float64)
    freq = counts / max(counts.sum(), 1.0)
    seen = freq > 0
    weights = np.ones_like(freq)
    weights[seen] = np.median(freq[seen]) / freq[seen]
    if cap is not None:
        weights = np.minimum(weights, cap)
    return weights.astype(np.float32)


def boundary_mask(target: torch.Tensor) -> torch.Tensor:
    """``(B, H, W)`` class map -> bool mask of pixels with a differently labelled 4-neighbour."""
    edge = torch.zeros_like(target, dtype=torch.bool)
    dy = target[:, 1:, :] != target[:, :-1, :]
    dx = target[:, :, 1:] != target[:, :, :-1]
    edge[:, 1:, :] |= dy
    edge[:, :-1, :] |= dy
    edge[:, :, 1:] |= dx
    edge[:, :, :-1] |= dx
    return edge


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0,
                   partial: bool = False) -> torch.Tensor:
    """``1 - mean over classes of 2|P.G| / (|P| + |G|)``, softmax probabilities, batch-pooled.

    Classes absent from both prediction and target score 1 thanks to ``eps``. With
    ``partial``, pixels whose target lies beyond the classes (partial labels) are left out,
    prediction and target alike.
    """
    probs = torch.softmax(logits, dim=1)
    classes = probs.shape[1]
    if partial:
        known = target < classes
        probs = probs * known.unsqueeze(1)
        target = torch.where(known, target, 0)
        onehot = F.one_hot(target, classes).permute(0, 3, 1, 2).to(probs.dtype)
        onehot = onehot * known.unsqueeze(1)
    else:
        onehot = F.one_hot(target, classes).permute(0, 3, 1, 2).to(probs.dtype)
    dims = (0, 2, 3)
    intersection = (probs * onehot).sum(dims)
    total = probs.sum(dims) + onehot.sum(dims)
    return 1.0 - ((2.0 * intersection + eps) / (total + eps)).mean()


def partial_cross_entropy(logits: torch.Tensor, target: torch.Tensor,
                          groups: Sequence[Sequence[int]]) -> torch.Tensor:
    """Per-pixel cross-entropy where target ``K + g`` means "one of ``groups[g]``":
    ``-log`` of the softmax summed over the group's classes (log-sum-exp, stable)."""
    log_probs = F.log_softmax(logits, dim=1)
    grouped = [torch.logsumexp(log_probs[:, list(members)], dim=1) for members in groups]
    return F.nll_loss(torch.cat([log_probs, torch.stack(grouped, dim=1)], dim=1), target,
                      reduction="none")


def quicknat_loss(logits: torch.Tensor, target: torch.Tensor, class_weights: torch.Tensor,
                  boundary_weight: float,
                  groups: Sequence[Sequence[int]] = ()) -> torch.Tensor:
    """Pixel-weighted cross-entropy (class weight + boundary weight) plus soft Dice.
    ``groups``: the classes of each partial target; ``class_weights`` then has one weight
    per target, classes first."""
    pixel_weights = class_weights[target] + boundary_weight * boundary_mask(target)
    if groups:
        ce = partial_cross_entropy(logits, target, groups)
    else:
        ce = F.cross_entropy(logits, target, reduction="none")
    weighted = (ce * pixel_weights).sum() / pixel_weights.sum()
    return weighted + soft_dice_loss(logits, target, partial=bool(groups))

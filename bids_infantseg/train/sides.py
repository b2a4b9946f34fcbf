"""Sagittal slices and sides: a 2D sagittal slice of the left hemisphere looks like one of the
right, so a sagittal view cannot tell ``Left-Hippocampus`` from ``Right-Hippocampus``.

Trained on sided targets anyway, the shared network gets contradictory gradients (the same
picture labelled left in one batch and right in the next) and the other views pay for it.
QuickNAT's answer is a sagittal net with each left/right pair merged; here the sagittal
slices' sided targets become partial targets "left or right" (the loss's label groups), so
the sagittal view learns the structure and leaves the side to the views that see the
midline; inference splits its pair mass by their ratio (``inference._aggregate``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bids_infantseg.core.refine import mirror_classes


@dataclass(frozen=True)
class SideMerge:
    """Targets of sagittal slices: ``lut`` maps every target number (classes, then partial
    targets) to its side-merged target; ``groups`` are the merged targets' classes, numbered
    after the existing partial targets."""

    lut: np.ndarray
    groups: tuple[tuple[int, ...], ...]


def side_merge(names: Sequence[str], groups: Sequence[Sequence[int]],
               group_names: Sequence[str]) -> SideMerge | None:
    """The sagittal targets of a set whose classes are ``names`` with partial targets
    ``groups`` (class numbers) named ``group_names``; ``None`` when nothing is lateralised."""
    perm = mirror_classes([*names, *group_names])
    if (perm == np.arange(len(perm))).all():
        return None
    k = len(names)
    members = [(t,) for t in range(k)] + [tuple(g) for g in groups]
    lut = np.arange(len(perm), dtype=np.int64)
    merged: dict[tuple[int, ...], int] = {}
    for target, partner in enumerate(perm):
        if partner == target:
            continue
        union = tuple(sorted({*members[target], *members[int(partner)]}))
        lut[target] = merged.setdefault(union, len(perm) + len(merged))
    return SideMerge(lut, tuple(merged))


def merged_counts(counts: np.ndarray, merge: SideMerge) -> np.ndarray:
    """``counts`` per target with each merged target's count appended: the mean of its two
    sides', so its class weight is a side's (a merged target never appears in a counted
    volume, and an unseen target would get the median weight, not a side's)."""
    extra = np.zeros(len(merge.groups), dtype=np.float64)
    for target, number in enumerate(merge.lut):
        if number != target:
            extra[number - len(counts)] += counts[target] / 2.0
    return np.concatenate([np.asarray(counts, dtype=np.int64), extra.round().astype(np.int64)])

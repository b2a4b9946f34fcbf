"""Views: how a conformed RAS volume is cut into 2D slices, and put back together.

Training and inference both slice through these two functions, so a slice's in-plane
orientation is the same in both.
"""

from __future__ import annotations

import torch

VIEW_AXIS = {"sagittal": 0, "coronal": 1, "axial": 2}
"""Axis of a canonical RAS (x, y, z) volume that each view slices along."""


def to_slices(volume: torch.Tensor, view: str) -> torch.Tensor:
    """``(..., X, Y, Z)`` -> ``(N, ..., H, W)``: the view's axis becomes the batch axis."""
    return torch.movedim(volume, volume.ndim - 3 + VIEW_AXIS[view], 0)


def from_slices(slices: torch.Tensor, view: str) -> torch.Tensor:
    """Inverse of :func:`to_slices`."""
    return torch.movedim(slices, 0, slices.ndim - 3 + VIEW_AXIS[view])

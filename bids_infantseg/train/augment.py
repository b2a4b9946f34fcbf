"""Slice augmentation: small in-plane rigid-and-scale moves and intensity changes.

Small on purpose: scans reach the network already conformed (canonical axes, fixed voxel
size, percentile-normalised intensities), so what remains to cover is residual head pose,
head size and contrast differences between scanners and ages. Pure numpy/scipy, so it runs
in DataLoader workers without touching torch's thread pools. Zero (outside the head) stays
zero, as at inference, where empty slices are never run through the network.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class AugmentSettings:
    spatial_p: float = 0.5
    max_rotation_deg: float = 10.0
    max_scale: float = 0.1  # zoom in [1 - s, 1 + s]
    max_shift_px: float = 4.0
    intensity_p: float = 0.8
    gamma: tuple[float, float] = (0.7, 1.5)
    contrast: float = 0.1  # multiply by [1 - c, 1 + c]
    noise_sd: float = 0.03  # at most, on the [0, 1] scale


DEFAULT = AugmentSettings()


def augment_slice(image: np.ndarray, target: np.ndarray, rng: np.random.Generator,
                  settings: AugmentSettings = DEFAULT) -> tuple[np.ndarray, np.ndarray]:
    """One random augmentation of a normalised slice ``(H, W)`` and its class map."""
    if rng.uniform() < settings.spatial_p:
        image, target = _spatial(image, target, rng, settings)
    if rng.uniform() < settings.intensity_p:
        image = _intensity(image, rng, settings)
    return image, target


def _spatial(image: np.ndarray, target: np.ndarray, rng: np.random.Generator,
             s: AugmentSettings) -> tuple[np.ndarray, np.ndarray]:
    angle = np.deg2rad(rng.uniform(-s.max_rotation_deg, s.max_rotation_deg))
    zoom = rng.uniform(1.0 - s.max_scale, 1.0 + s.max_scale)
    shift = rng.uniform(-s.max_shift_px, s.max_shift_px, size=2)
    cos, sin = np.cos(angle), np.sin(angle)
    # output coordinate o -> input coordinate matrix @ o + offset, about the slice centre
    matrix = np.array([[cos, -sin], [sin, cos]]) / zoom
    centre = (np.asarray(image.shape, float) - 1) / 2
    offset = centre - matrix @ (centre + shift)
    image = ndimage.affine_transform(image, matrix, offset, order=1, mode="constant", cval=0.0)
    target = ndimage.affine_transform(target, matrix, offset, order=0, mode="constant", cval=0)
    return image.astype(np.float32), target


def _intensity(image: np.ndarray, rng: np.random.Generator, s: AugmentSettings) -> np.ndarray:
    inside = image > 0
    out = np.clip(image, 0.0, 1.0) ** rng.uniform(*s.gamma)
    out *= rng.uniform(1.0 - s.contrast, 1.0 + s.contrast)
    out += rng.normal(0.0, rng.uniform(0.0, s.noise_sd), size=out.shape)
    out = np.clip(out, 0.0, 1.0).astype(np.float32)
    out[~inside] = 0.0
    return out

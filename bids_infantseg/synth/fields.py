"""Smooth random fields: texture, bias, deformation and fold patterns for synthesis."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], voxel_size: np.ndarray,
                  scale_mm: float) -> np.ndarray:
    """Unit-variance isotropic noise smooth over ~``scale_mm``: coarse noise, upsampled."""
    coarse = [max(2, int(np.ceil(n * v / scale_mm)) + 1) for n, v in zip(shape, voxel_size,
                                                                         strict=True)]
    noise = rng.standard_normal(coarse).astype(np.float32)
    field = ndimage.zoom(noise, [n / c for n, c in zip(shape, coarse, strict=True)], order=1,
                         grid_mode=True, mode="grid-mirror")
    field = ndimage.gaussian_filter(field, 0.35 * scale_mm / voxel_size, truncate=2.0)
    return field / (field.std() + 1e-6)


def separable_noise(rng: np.random.Generator, shape: tuple[int, ...], voxel_size: np.ndarray,
                     scale_mm: float, terms: int = 3) -> np.ndarray:
    """Cheap very smooth field (bias, deformation): a sum of products of 1D random curves."""
    field = np.zeros(shape, dtype=np.float32)
    for _ in range(terms):
        term = np.ones((1,) * len(shape), dtype=np.float32)
        for axis, (n, v) in enumerate(zip(shape, voxel_size, strict=True)):
            knots = max(2, int(np.ceil(n * v / scale_mm)) + 1)
            curve = np.interp(np.linspace(0, knots - 1, n), np.arange(knots),
                              rng.standard_normal(knots)).astype(np.float32)
            term = term * curve.reshape([-1 if a == axis else 1 for a in range(len(shape))])
        field += term
    return field / (field.std() + 1e-6)

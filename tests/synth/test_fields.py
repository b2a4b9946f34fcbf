"""The torch engine's kernels give what the scipy calls they replace gave (the capped
distance exactly below its cap), and the box-limited ellipsoid masks miss no voxel."""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from bids_infantseg.synth.fields import Resampler, distance_inside, gaussian_blur, local_max
from bids_infantseg.synth.geometry import deform, ellipsoid, grid_points, inside_ellipsoid, rotation


def blobs(shape=(40, 36, 30), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.standard_normal(shape), 2.5) > 0


def test_capped_distance_is_scipys_below_the_cap():
    mask = blobs()
    spacing = (1.5, 1.2, 0.9)
    exact = ndimage.distance_transform_edt(mask, sampling=spacing)
    capped = distance_inside(mask, spacing, 4.0).numpy()
    np.testing.assert_allclose(capped, np.minimum(exact, 4.0), atol=1e-5)
    corner = np.zeros_like(mask)  # a box of the mask's own: touching two edges, cropped
    corner[:12, 5:20, -9:] = mask[:12, 5:20, -9:] | True
    corner[3, 8, -4] = False
    np.testing.assert_allclose(distance_inside(corner, spacing, 4.0).numpy(), np.minimum(
        ndimage.distance_transform_edt(corner, sampling=spacing), 4.0), atol=1e-5)


def test_resampling_matches_map_coordinates():
    rng = np.random.default_rng(1)
    labels = np.pad(rng.integers(1, 200, (20, 24, 28)).astype(np.uint8), 2)
    fields = rng.standard_normal((2, 12, 14, 16)).astype(np.float32)
    p = rng.uniform(-10, 40, (3, 10, 11, 12)).astype(np.float32)
    affine = np.array([[0.8, 0.1, 0.0, 1.0], [0.0, 0.9, -0.1, -2.0], [0.05, 0.0, 0.7, 3.0],
                       [0, 0, 0, 1]])
    vox = np.einsum("ij,j...->i...", affine[:3, :3], p) + affine[:3, 3, None, None, None]
    at = Resampler(p, affine, labels.shape)
    nearest = at.nearest(labels)
    reference = ndimage.map_coordinates(labels, vox, order=0, mode="constant", cval=0)
    assert nearest.dtype == np.uint8 and (nearest == reference).mean() > 0.999
    assert (at.nearest(labels[::-1].copy()) == ndimage.map_coordinates(
        labels[::-1], vox, order=0, mode="constant", cval=0)).mean() > 0.999
    linear = at.linear(fields, 2.0)
    for field, sampled in zip(fields, linear, strict=True):
        np.testing.assert_allclose(sampled, ndimage.map_coordinates(field, vox / 2, order=1,
                                                                    mode="nearest"), atol=1e-4)
    np.testing.assert_allclose(at.linear(fields[0], 2.0), linear[0])


def test_local_max_matches_maximum_filter():
    x = np.random.default_rng(4).standard_normal((9, 10, 11)).astype(np.float32)
    np.testing.assert_array_equal(local_max(torch.from_numpy(x)).numpy(),
                                  ndimage.maximum_filter(x, size=3, mode="nearest"))


def test_blur_matches_gaussian_filter():
    for shape in ((20, 22, 24), (3, 4, 20)):  # radii beyond an axis's length too
        x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
        sigma = (1.5, 1.6, 0.0)
        np.testing.assert_allclose(
            gaussian_blur(torch.from_numpy(x), sigma, 2.5).numpy(),
            ndimage.gaussian_filter(x, sigma, truncate=2.5, mode="nearest"), atol=1e-5)


def test_box_limited_ellipsoid_masks_equal_the_full_ones():
    rng = np.random.default_rng(3)
    affine = np.diag([1.5, 1.5, 1.5, 1.0])
    affine[:3, 3] = -48
    pose = np.eye(4)
    pose[:3, :3] = rotation(np.array([10.0, -12.0, 7.0]))
    p = deform(grid_points((64, 64, 64), affine, pose), rng, np.full(3, 1.5), 4.0)
    for center, radii, tilt in [((5, -3, 2), (2.0, 9.0, 3.0), -35.0),
                                ((0, 0, 0), (30, 35, 25), 0.0), ((40, 10, 0), (6, 6, 6), 20.0),
                                ((200, 0, 0), (5, 5, 5), 0.0)]:
        full = ellipsoid(p, center, radii, tilt_deg=tilt) < 0
        assert np.array_equal(inside_ellipsoid(p, center, radii, tilt_deg=tilt), full)

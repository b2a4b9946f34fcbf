"""To and from the model grid: pure functions on arrays and affines.

The network sees every scan on one grid: canonical RAS axes (x right, y anterior, z superior)
at the model's isotropic voxel size, centred on the head, optionally turned by the rigid pose
found against a template. Its probabilities go back to the scan's own (native) grid before
the argmax, so labels are measured where the scan was acquired and nothing is lost twice.

Trilinear resampling runs through ``torch.nn.functional.grid_sample`` (about ten times
faster than ``scipy.ndimage`` on a CPU). Data are first reordered to the nearest RAS axis
order by exact flips and transposes, so two headers describing the same world image (e.g.
LAS and RAS) give bit-identical results. The target is processed in slabs so that memory
stays bounded however large the native image is.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation, ornt_transform
from scipy import ndimage

SLAB_VOXELS = 1 << 22
"""Target voxels resampled at once: 16 MiB per channel, plus 48 MiB of sample coordinates."""

GROUP_BYTES = 512 << 20
"""Model-grid probabilities held as float32 at once by :func:`restore_labels`; a model with
many classes on a large grid is restored a group of classes at a time."""

_RAS = np.array([[0, 1], [1, 1], [2, 1]], dtype=float)


@dataclass(frozen=True)
class Grid:
    """A voxel grid: its shape and voxel-to-world (RAS mm) affine."""

    shape: tuple[int, int, int]
    affine: np.ndarray


def model_grid(native_shape: Sequence[int], native_affine: np.ndarray, voxel_size: float,
               grid_shape: Sequence[int], center_world: Sequence[float] | None = None,
               rotation: np.ndarray | None = None) -> Grid:
    """The model grid for a scan: isotropic ``voxel_size``, RAS axes, centred on the head.

    ``center_world`` defaults to the centre of the native field of view. ``rotation`` (4x4,
    native world -> template-aligned world) makes the grid axis-aligned in the aligned space,
    centred on the image of ``center_world``; the returned affine is in native world.
    """
    if center_world is None:
        center_world = fov_center(native_shape, native_affine)
    transform = np.eye(4) if rotation is None else _rigid(rotation)
    shape = tuple(int(s) for s in grid_shape)
    center = (transform @ np.append(np.asarray(center_world, float)[:3], 1.0))[:3]
    aligned = np.diag([float(voxel_size)] * 3 + [1.0])
    aligned[:3, 3] = center - voxel_size * (np.asarray(shape) - 1) / 2
    return Grid(shape, np.linalg.inv(transform) @ aligned)


def fov_center(shape: Sequence[int], affine: np.ndarray) -> np.ndarray:
    """World coordinates of the centre of a grid's field of view."""
    return (affine @ np.append((np.asarray(shape[:3], float) - 1) / 2, 1.0))[:3]


def intensity_center(data: np.ndarray, affine: np.ndarray, fraction: float = 0.1) -> np.ndarray:
    """World centre of mass of voxels brighter than ``fraction`` of the robust maximum.

    Why: scans are often framed off-centre (neck, shoulders, a coil-shifted head); centring the
    model grid on the signal keeps the head inside it.
    """
    sample = data[::2, ::2, ::2]
    positive = sample[sample > 0]
    if positive.size == 0:
        raise ValueError("no positive voxels: cannot find the head")
    mask = data > fraction * np.percentile(positive, 99)
    total = np.count_nonzero(mask)
    voxel = [
        np.dot(np.count_nonzero(mask, axis=tuple(a for a in range(3) if a != axis)),
               np.arange(data.shape[axis])) / total
        for axis in range(3)
    ]
    return (affine @ np.append(voxel, 1.0))[:3]


def resample(data: np.ndarray, affine: np.ndarray, grid: Grid) -> np.ndarray:
    """Trilinear resampling of a 3D image onto ``grid``; outside the field of view is 0."""
    ornt = io_orientation(affine)
    canon_affine = affine @ inv_ornt_aff(ornt, data.shape)
    canon = np.array(apply_orientation(data, ornt), dtype=np.float32, order="C")
    source = torch.from_numpy(canon)[None, None]
    matrix = np.linalg.inv(canon_affine) @ grid.affine
    out = np.empty(grid.shape, np.float32)
    for part, values in _slabs(source, matrix, _whole(grid.shape)):
        out[..., part] = values[0].numpy()
    return out


def conform(data: np.ndarray, affine: np.ndarray, voxel_size: float,
            grid_shape: Sequence[int], *, intensity: dict,
            center_world: Sequence[float] | None = None,
            rotation: np.ndarray | None = None) -> tuple[np.ndarray, Grid]:
    """A native image on the model grid, intensity-normalised as the model card says.

    Returns the float32 ``(X, Y, Z)`` volume in [0, 1] and its grid.
    """
    if min(data.shape) < 2 or data.ndim != 3:
        raise ValueError(f"conform needs a 3D image, got shape {data.shape}")
    grid = model_grid(data.shape, affine, voxel_size, grid_shape, center_world, rotation)
    return normalise_intensity(resample(data, affine, grid), intensity), grid


def normalise_intensity(volume: np.ndarray, intensity: dict) -> np.ndarray:
    """Map the card's percentiles of the nonzero voxels to 0 and 1, clip; zeros stay 0."""
    if intensity.get("method") != "percentile":
        raise ValueError(f"unknown intensity normalisation {intensity!r}")
    values = volume[volume != 0]
    if values.size == 0:
        raise ValueError("no signal on the model grid: is the head inside it?")
    low, high = np.percentile(values, [intensity["lower"], intensity["upper"]])
    span = high - low if high > low else 1.0
    out = np.clip((volume - low) / span, 0.0, 1.0).astype(np.float32)
    out[volume == 0] = 0.0
    return out


def restore_labels(probs: np.ndarray, grid: Grid, native_shape: Sequence[int],
                   native_affine: np.ndarray, class_indices: Sequence[int]) -> np.ndarray:
    """Class probabilities ``(C, X, Y, Z)`` on ``grid`` -> int16 label map on the native grid.

    Probabilities are resampled (trilinear) and then reduced by argmax, slab by slab; class
    ``k`` becomes ``class_indices[k]``. Outside the model grid is class 0 with certainty.
    """
    _check_probs(probs, grid)
    indices = np.asarray(class_indices, dtype=np.int16)
    if len(indices) != probs.shape[0]:
        raise ValueError(f"{probs.shape[0]} classes but {len(indices)} class indices")
    target, matrix, back = _native_target(grid, native_shape, native_affine)
    per_group = max(1, GROUP_BYTES // (4 * int(np.prod(grid.shape))))
    grouped = per_group < probs.shape[0]
    label = np.zeros(target, np.int16)
    box = _foreground_box(probs[0], matrix, target)
    if box is not None:
        label_box = label[box]
        best = np.zeros(label_box.shape, np.float32) if grouped else None
        for first in range(0, probs.shape[0], per_group):
            for part, values in _probability_slabs(probs, first, first + per_group, matrix,
                                                   box):
                top, arg = (t.numpy() for t in values.max(dim=0))
                if first == 0:
                    label_box[..., part] = arg
                    if grouped:
                        best[..., part] = top
                    continue
                better = top > best[..., part]
                best[..., part][better] = top[better]
                label_box[..., part][better] = arg[better] + first
    return np.ascontiguousarray(apply_orientation(indices[label], back))


def _foreground_box(background: np.ndarray, matrix: np.ndarray, target: Sequence[int],
                    ) -> tuple[slice, slice, slice] | None:
    """The target voxels whose label may be other than class 0 (None: none may).

    Why: a scan's field of view is mostly air, and resampling every class there is most of
    the restore step's time. A target voxel's trilinear sample mixes the 8 grid voxels around
    it; where all have class-0 probability above 0.5 (or lie outside the grid), so does the
    sample, and its argmax is class 0. The box is the target bounding box of the grid voxels
    where class 0 is at most 0.5, grown by one grid voxel, so labels are exactly those of
    resampling everywhere.
    """
    found = ndimage.find_objects((np.asarray(background) <= 0.5).astype(np.uint8))
    if not found:
        return None
    lo = np.array([b.start for b in found[0]], float) - 1.0
    hi = np.array([b.stop - 1 for b in found[0]], float) + 1.0
    corners = np.array([[x, y, z, 1.0] for x in (lo[0], hi[0]) for y in (lo[1], hi[1])
                        for z in (lo[2], hi[2])])
    inside = (np.linalg.inv(matrix) @ corners.T)[:3]  # grid voxel -> target voxel
    start = np.clip(np.floor(inside.min(axis=1)) - 1, 0, target).astype(int)
    stop = np.clip(np.ceil(inside.max(axis=1)) + 2, 0, target).astype(int)
    if np.any(stop <= start):
        return None
    return tuple(slice(int(a), int(b)) for a, b in zip(start, stop, strict=True))


def restore_probabilities(probs: np.ndarray, grid: Grid, native_shape: Sequence[int],
                          native_affine: np.ndarray) -> Iterator[np.ndarray]:
    """Each class's probability map on the native grid (float32), one class at a time.

    Outside the model grid, class 0 has probability 1 and every other class 0.
    """
    _check_probs(probs, grid)
    target, matrix, back = _native_target(grid, native_shape, native_affine)
    for k in range(probs.shape[0]):
        out = np.empty(target, np.float32)
        for part, values in _probability_slabs(probs, k, k + 1, matrix, _whole(target)):
            out[..., part] = values[0].numpy()
        yield np.ascontiguousarray(apply_orientation(out, back))


def _rigid(rotation: np.ndarray) -> np.ndarray:
    """``rotation`` as a checked 4x4 rigid transform (a pose result, not any matrix)."""
    transform = np.asarray(rotation, dtype=float)
    if transform.shape != (4, 4) or not np.all(np.isfinite(transform)):
        raise ValueError(f"rotation must be a finite 4x4 matrix, got shape {transform.shape}")
    turn = transform[:3, :3]
    if (not np.allclose(transform[3], [0, 0, 0, 1])
            or not np.allclose(turn.T @ turn, np.eye(3), atol=1e-4)
            or np.linalg.det(turn) < 0):
        raise ValueError(f"rotation is not a rigid transform: {transform.tolist()}")
    return transform


def _check_probs(probs: np.ndarray, grid: Grid) -> None:
    if probs.ndim != 4 or tuple(probs.shape[1:]) != tuple(grid.shape):
        raise ValueError(f"probabilities of shape {probs.shape} do not fit grid {grid.shape}")


def _probability_slabs(probs: np.ndarray, start: int, stop: int, matrix: np.ndarray,
                       box: tuple[slice, slice, slice]) -> Iterator[tuple[slice, torch.Tensor]]:
    """:func:`_slabs` of classes ``start:stop``, where outside the model grid is certain
    background: class 0 is resampled as its complement (zero padding) and turned back."""
    block = np.array(probs[start:stop], dtype=np.float32)
    if start == 0:
        block[0] = 1.0 - block[0]
    for part, values in _slabs(torch.from_numpy(block)[None], matrix, box):
        if start == 0:
            values[0] = 1.0 - values[0]
        yield part, values


def _native_target(grid: Grid, native_shape: Sequence[int], native_affine: np.ndarray,
                   ) -> tuple[tuple[int, int, int], np.ndarray, np.ndarray]:
    """The native grid in RAS axis order (its shape), the canonical-voxel -> grid-voxel
    matrix, and the orientation that takes a canonical array back to the native layout."""
    native_shape = tuple(int(s) for s in native_shape[:3])
    ornt = io_orientation(native_affine)
    canon_affine = native_affine @ inv_ornt_aff(ornt, native_shape)
    target = [0, 0, 0]
    for axis, (to_axis, _) in enumerate(ornt):
        target[int(to_axis)] = native_shape[axis]
    matrix = np.linalg.inv(grid.affine) @ canon_affine
    return tuple(target), matrix, ornt_transform(_RAS, ornt)


def _whole(shape: Sequence[int]) -> tuple[slice, slice, slice]:
    return tuple(slice(0, int(n)) for n in shape[:3])


def _slabs(source: torch.Tensor, matrix: np.ndarray, box: tuple[slice, slice, slice],
           ) -> Iterator[tuple[slice, torch.Tensor]]:
    """Trilinear samples of ``source`` ``(1, C, n0, n1, n2)`` at ``matrix @ target voxel`` for
    the target voxels in ``box``, yielded as ``(slice of the box's last axis, (C, X, Y, k)
    tensor)``; zero outside the source. A voxel's sample does not depend on the box.
    """
    sizes = np.asarray(source.shape[2:], float)
    # grid_sample wants (x, y, z) = (n2, n1, n0) in [-1, 1] (align_corners: voxel centres).
    normalise = np.diag(np.append(2 / np.maximum(sizes - 1, 1), 1.0))
    normalise[:3, 3] = -1.0
    rows = torch.from_numpy(np.ascontiguousarray((normalise @ matrix)[2::-1].T))
    bx, by, bz = box
    i = torch.arange(bx.start, bx.stop, dtype=torch.float64)[:, None, None, None]
    j = torch.arange(by.start, by.stop, dtype=torch.float64)[None, :, None, None]
    ij = (i * rows[0] + j * rows[1] + rows[3]).float()
    step = max(1, SLAB_VOXELS // ((bx.stop - bx.start) * (by.stop - by.start)))
    for start in range(bz.start, bz.stop, step):
        stop = min(bz.stop, start + step)
        k = torch.arange(start, stop, dtype=torch.float64)[None, None, :, None]
        coords = ij + (k * rows[2]).float()
        values = F.grid_sample(source, coords[None], mode="bilinear", padding_mode="zeros",
                               align_corners=True)[0]
        yield slice(start - bz.start, stop - bz.start), values

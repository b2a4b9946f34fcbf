"""Geometry of synthetic heads: rotations, ellipsoids, head frames, grids and deformation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from bids_infantseg.synth.fields import separable_noise


def rotation(angles_deg: np.ndarray) -> np.ndarray:
    """3x3 rotation from angles about x, y, z (degrees)."""
    ax, ay, az = np.deg2rad(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def ellipsoid(p: np.ndarray, center, radii, tilt_deg: float = 0.0) -> np.ndarray:
    """Approximate signed distance (mm) to an ellipsoid, negative inside: (r-1)/|grad r|.

    ``p`` is (3, ...) in head coordinates; ``tilt_deg`` rotates it about x (pitch). In torch,
    in place on a few buffers (the procedural head's largest per-voxel cost).
    """
    q = torch.from_numpy(p)
    dx, dy, dz = (q[i] - float(center[i]) for i in range(3))
    if tilt_deg:
        c, s = float(np.cos(np.deg2rad(tilt_deg))), float(np.sin(np.deg2rad(tilt_deg)))
        dy, dz = dy * c + dz * s, dz * c - dy * s
    a, b, cc = (float(r) for r in radii)
    u, v, w = dx.div_(a), dy.div_(b), dz.div_(cc)
    r = torch.sqrt(u * u + v * v + w * w)
    grad = (u.div_(a).square_().add_(v.div_(b).square_()).add_(w.div_(cc).square_())
            .sqrt_().div_(torch.clamp(r, min=1e-3)))
    return r.sub_(1.0).div_(grad.clamp_(min=1e-6)).numpy()


def inside_ellipsoid(p: np.ndarray, center, radii, tilt_deg: float = 0.0,
                     stride: int = 4) -> np.ndarray:
    """Where ``ellipsoid(p, center, radii, tilt_deg) < 0`` (bool), computed only in the box of
    voxels that can be inside.

    Why: most structures are small and only their inside is wanted; the box comes from every
    ``stride``-th voxel, kept where it lies within the ellipsoid's bounding sphere plus the
    most that ``p`` moves over ``stride`` voxels along all three axes (with half again to
    spare for a deformation that is not uniform), so no inside voxel is missed.
    """
    out = np.zeros(p.shape[1:], dtype=bool)
    coarse = p[:, ::stride, ::stride, ::stride]
    sparse = p[:, ::2 * stride, ::2 * stride, ::2 * stride]  # p is smooth: mm per voxel
    step = max((float(np.sqrt((np.diff(sparse, axis=k + 1) ** 2).sum(axis=0)).max())
                for k in range(3) if sparse.shape[k + 1] > 1), default=0.0) / (2 * stride)
    reach = float(max(radii)) + 1.5 * stride * np.sqrt(3.0) * step
    c = np.asarray(center, dtype=np.float32)[:, None, None, None]
    near = np.argwhere(((coarse - c) ** 2).sum(axis=0) <= reach ** 2)
    if not near.size:
        return out
    lo = np.maximum(near.min(axis=0) * stride - stride, 0)
    hi = near.max(axis=0) * stride + stride + 1
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    dx, dy, dz = (p[(i, *box)] - np.float32(center[i]) for i in range(3))
    if tilt_deg:
        cs, sn = np.float32(np.cos(np.deg2rad(tilt_deg))), np.float32(np.sin(np.deg2rad(tilt_deg)))
        dy, dz = cs * dy + sn * dz, -sn * dy + cs * dz
    a, b, cc = (np.float32(r) for r in radii)
    out[box] = (dx / a) ** 2 + (dy / b) ** 2 + (dz / cc) ** 2 < 1.0
    return out


@dataclass(frozen=True)
class Frame:
    """Cerebrum centre at the origin of head coordinates; its semi-axes (x LR, y AP, z SI)."""

    radii: np.ndarray

    def at(self, fx: float, fy: float, fz: float) -> tuple[float, float, float]:
        a, b, c = self.radii
        return fx * a, fy * b, fz * c


def grid_points(shape: tuple[int, int, int], affine: np.ndarray,
                 head_to_world: np.ndarray) -> np.ndarray:
    """Head coordinates (3, X, Y, Z) of every voxel of a grid."""
    vox_to_head = np.linalg.inv(head_to_world) @ affine
    idx = [np.arange(n, dtype=np.float32) for n in shape]
    m = vox_to_head.astype(np.float32)
    out = np.empty((3, *shape), dtype=np.float32)
    for row in range(3):
        out[row] = (m[row, 0] * idx[0][:, None, None] + m[row, 1] * idx[1][None, :, None]
                    + m[row, 2] * idx[2][None, None, :] + m[row, 3])
    return out


def deform(p: np.ndarray, rng: np.random.Generator, voxel_size: np.ndarray,
           amplitude_mm: float, scale_mm: float = 40.0) -> np.ndarray:
    """Smooth random displacement of head coordinates (a few mm over ~``scale_mm``), in
    place."""
    shape = p.shape[1:]
    for i in range(3):
        p[i] += amplitude_mm * separable_noise(rng, shape, voxel_size, scale_mm).numpy()
    return p



def grid_affine(shape: tuple[int, int, int], voxel_size, *, axcodes: str = "RAS",
                oblique_deg=(0.0, 0.0, 0.0)) -> np.ndarray:
    """An affine for a grid centred on world (0, 0, 0) with the given axis codes and tilt."""
    voxel_size = np.broadcast_to(np.asarray(voxel_size, dtype=np.float64), (3,))
    directions = {"R": (0, 1), "L": (0, -1), "A": (1, 1), "P": (1, -1), "S": (2, 1),
                  "I": (2, -1)}
    axes = np.zeros((3, 3))
    for column, code in enumerate(axcodes.upper()):
        row, sign = directions[code]
        axes[row, column] = sign * voxel_size[column]
    affine = np.eye(4)
    affine[:3, :3] = rotation(np.asarray(oblique_deg, dtype=float)) @ axes
    affine[:3, 3] = -affine[:3, :3] @ ((np.asarray(shape) - 1) / 2.0)
    return affine



def padded(labels: np.ndarray, affine: np.ndarray,
           pad: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A source's labels padded with ``pad`` voxels of 0 (room for deformation and the painted
    head), with the padded grid's affine and voxel sizes."""
    shift = np.eye(4)
    shift[:3, 3] = -pad
    affine = affine @ shift
    return np.pad(labels, pad), affine, np.sqrt((affine[:3, :3] ** 2).sum(axis=0))


def bounding_box(mask: np.ndarray, affine: np.ndarray,
                 zooms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre (world mm) and half-extent (mm) of the bounding box of ``mask``'s voxels."""
    found = np.argwhere(mask)
    lo, hi = found.min(axis=0), found.max(axis=0)
    return (affine @ np.append((lo + hi) / 2.0, 1.0))[:3], (hi - lo) / 2.0 * zooms

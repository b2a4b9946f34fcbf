"""The generator's array engine, in torch: random fields (texture, bias, deformation, folds),
Gaussian blur, distance to a mask's edge and resampling of label maps.

Why torch: one engine that runs on CPU threads now and on a GPU when one is there
(``device``). Random numbers come from the caller's ``numpy.random.Generator`` (small
arrays: coarse noise, 1D curves) or from a torch generator seeded by it (whole volumes), so
the same seed gives the same volume on a device.

Costs are set by memory passes over the volume: every kernel here is a few elementwise passes
(a blur or distance is a loop of shifted adds or minima, not a convolution, which on one CPU
thread is several times slower for these one-channel volumes).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F

from bids_infantseg.synth.config import DEFAULT, Fields

Device = str | torch.device | None


def as_device(device: Device) -> torch.device:
    return torch.device("cpu" if device is None else device)


@contextmanager
def one_thread(device: Device = None) -> Iterator[None]:
    """Torch on one CPU thread for the duration (restored after; nothing on a GPU).

    Why: split over threads, reductions (a field's standard deviation) and vectorised
    functions (``exp``, whose tail elements take a scalar path) can differ in the last bit,
    so a volume would depend on the process's thread count (a training process and its
    worker processes differ); on one thread the same seed gives the same volume in any
    process. CPU parallelism comes from worker processes (``SliceSampler(workers=)``).
    """
    before = torch.get_num_threads()
    if as_device(device).type != "cpu" or before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def torch_generator(rng: np.random.Generator, device: Device) -> torch.Generator:
    """A torch generator on ``device`` seeded from ``rng`` (deterministic per seed)."""
    return torch.Generator(as_device(device)).manual_seed(int(rng.integers(2 ** 62)))


def _padded(x: torch.Tensor, axis: int, pad: int, value: float | None) -> torch.Tensor:
    """``x`` extended by ``pad`` along ``axis``: edge values repeated, or ``value``."""
    size = list(x.shape)
    size[axis] = pad
    n = x.shape[axis]
    if value is None:
        lo, hi = x.narrow(axis, 0, 1).expand(size), x.narrow(axis, n - 1, 1).expand(size)
    else:
        lo = hi = torch.full(size, value, dtype=x.dtype, device=x.device)
    return torch.cat([lo, x, hi], axis)


def gaussian_blur(x: torch.Tensor, sigma_voxels, truncate: float) -> torch.Tensor:
    """Separable Gaussian blur (``sigma_voxels`` per axis; radius ``truncate`` sigmas, as
    ``scipy.ndimage.gaussian_filter``), edges extended by their values."""
    out = x
    for axis, sigma in enumerate(np.broadcast_to(np.asarray(sigma_voxels, float), (x.ndim,))):
        radius = int(truncate * sigma + 0.5)
        if sigma <= 0 or radius < 1:
            continue
        k = np.arange(-radius, radius + 1)
        w = np.exp(-0.5 * (k / sigma) ** 2)
        w /= w.sum()
        n = out.shape[axis]
        blurred = out * float(w[radius])
        for j in range(1, radius + 1):  # neighbours j away; beyond an edge, the edge's value
            weight, inner = float(w[radius + j]), max(n - j, 0)
            for at, source, edge in ((j, 0, 0), (0, j, n - 1)):
                if inner:
                    blurred.narrow(axis, at, inner).add_(out.narrow(axis, source, inner),
                                                         alpha=weight)
                blurred.narrow(axis, n - min(j, n) if at == 0 else 0, min(j, n)).add_(
                    out.narrow(axis, edge, 1), alpha=weight)
        out = blurred
    return out


def smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], voxel_size: np.ndarray,
                 scale_mm: float, *, device: Device = None,
                 fields: Fields = DEFAULT.fields) -> torch.Tensor:
    """Unit-variance isotropic noise smooth over ~``scale_mm``: coarse noise, upsampled
    (trilinear) and blurred."""
    voxel_size = np.broadcast_to(np.asarray(voxel_size, dtype=float), (len(shape),))
    coarse = [max(2, int(np.ceil(n * v / scale_mm)) + 1) for n, v in zip(shape, voxel_size,
                                                                         strict=True)]
    noise = torch.from_numpy(rng.standard_normal(coarse).astype(np.float32))
    field = F.interpolate(noise.to(as_device(device))[None, None], size=tuple(shape),
                          mode="trilinear", align_corners=False)[0, 0]
    field = gaussian_blur(field, fields.smooth_sigma_per_scale * scale_mm / voxel_size,
                          fields.smooth_truncate)
    return _unit(field)


def _unit(field: torch.Tensor) -> torch.Tensor:
    """``field`` divided by its standard deviation (population), in place: from its sum and
    its dot product with itself, two fast passes."""
    flat = field.reshape(-1)
    mean = float(flat.sum()) / flat.numel()
    variance = max(float(torch.dot(flat, flat)) / flat.numel() - mean * mean, 0.0)
    return field.div_(math.sqrt(variance) + 1e-6)


def separable_noise(rng: np.random.Generator, shape: tuple[int, ...], voxel_size: np.ndarray,
                    scale_mm: float, terms: int = DEFAULT.fields.separable_terms, *,
                    device: Device = None) -> torch.Tensor:
    """Cheap very smooth field (bias, deformation): a sum of products of 1D random curves."""
    device = as_device(device)
    voxel_size = np.broadcast_to(np.asarray(voxel_size, dtype=float), (len(shape),))
    field = torch.zeros(shape, dtype=torch.float32, device=device)
    for _ in range(terms):
        term = torch.ones((1,) * len(shape), dtype=torch.float32, device=device)
        for axis, (n, v) in enumerate(zip(shape, voxel_size, strict=True)):
            knots = max(2, int(np.ceil(n * v / scale_mm)) + 1)
            curve = np.interp(np.linspace(0, knots - 1, n), np.arange(knots),
                              rng.standard_normal(knots)).astype(np.float32)
            term = term * torch.from_numpy(curve).to(device).reshape(
                [-1 if a == axis else 1 for a in range(len(shape))])
        field += term
    return _unit(field)


def distance_inside(mask: np.ndarray | torch.Tensor, spacing, cap_mm: float) -> torch.Tensor:
    """Distance (mm) from each voxel of ``mask`` to the centre of the nearest voxel outside
    it (0 outside), capped at ``cap_mm``: ``scipy.ndimage.distance_transform_edt(mask)``
    where it is below the cap, exactly.

    Why capped: painting only compares depths of a few mm (a cortical ribbon, a skull-strip
    margin), and the squared distance is separable (a minimum over each axis in turn, of the
    last axis's result plus the squared offset), so offsets up to the cap along each axis
    give every distance below it exactly, in a few passes over the volume.
    """
    mask = torch.as_tensor(mask).bool()
    spacing = np.broadcast_to(np.asarray(spacing, dtype=float), (mask.ndim,))
    # Only the mask's bounding box, one voxel wider, can hold a distance: the nearest voxel
    # outside the mask is never beyond that layer of voxels outside it.
    out = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
    box = []
    for axis in range(mask.ndim):
        hit = torch.nonzero(mask.any(dim=tuple(a for a in range(mask.ndim) if a != axis)))
        if not hit.numel():
            return out
        box.append(slice(max(int(hit[0]) - 1, 0), min(int(hit[-1]) + 2, mask.shape[axis])))
    out[tuple(box)] = _distance(mask[tuple(box)], spacing, cap_mm)
    return out


def _distance(mask: torch.Tensor, spacing: np.ndarray, cap_mm: float) -> torch.Tensor:
    """``distance_inside`` of a whole (cropped) mask."""
    big = float(cap_mm) ** 2 + 1.0
    d2 = torch.where(mask, big, 0.0).to(torch.float32)
    for axis, step in enumerate(spacing):
        reach = min(int(math.ceil(cap_mm / step)), mask.shape[axis] - 1)
        if reach < 1:
            continue
        n = mask.shape[axis]
        p = _padded(d2, axis, reach, big)
        out = d2.clone()
        scratch = torch.empty_like(d2)
        for k in range(1, reach + 1):
            offset = float((k * step) ** 2)
            for shifted in (p.narrow(axis, reach + k, n), p.narrow(axis, reach - k, n)):
                torch.add(shifted, offset, out=scratch)
                torch.minimum(out, scratch, out=out)
        d2 = out
    return torch.sqrt(d2.clamp_(max=float(cap_mm) ** 2))


def local_max(x: torch.Tensor) -> torch.Tensor:
    """Maximum over each voxel's 3x3x3 neighbourhood (``ndimage.maximum_filter(size=3)``,
    edges repeated): three separable passes."""
    for axis in range(x.ndim):
        n = x.shape[axis]
        p = _padded(x, axis, 1, None)
        x = torch.maximum(torch.maximum(p.narrow(axis, 0, n), p.narrow(axis, 1, n)),
                          p.narrow(axis, 2, n))
    return x


class Resampler:
    """Where the points ``p`` (3, X, Y, Z) fall in a source's voxel grid (``affine``: point ->
    source voxel, 4x4), for sampling any volume on that grid at them.

    Why a class: a label map's codes and depths are sampled at the same points, so the voxel
    coordinates (one matrix product) and the nearest voxels are computed once.
    """

    def __init__(self, p: np.ndarray | torch.Tensor, affine: np.ndarray,
                 shape: tuple[int, ...]) -> None:
        self.points = torch.as_tensor(p).reshape(3, -1)
        self.affine = np.asarray(affine, dtype=np.float64)
        self.shape = tuple(int(n) for n in shape)
        self.out_shape = tuple(torch.as_tensor(p).shape[1:])
        self._nearest: tuple[torch.Tensor, torch.Tensor] | None = None

    def _mapped(self, matrix: np.ndarray) -> torch.Tensor:
        """(N, 3) points mapped by a 4x4 ``matrix`` (rows 0-2 used), in one product."""
        m = torch.from_numpy(matrix[:3].astype(np.float32)).to(self.points.device)
        return torch.addmm(m[:, 3], self.points.T, m[:, :3].T)

    def nearest(self, volume: np.ndarray | torch.Tensor) -> np.ndarray:
        """``volume`` at the nearest voxel of each point, 0 beyond its first and last voxel
        centres (``scipy.ndimage.map_coordinates(order=0, mode="constant")``)."""
        if self._nearest is None:  # row by row, in place: fewer passes than a matrix product
            m = self.affine
            n_points = self.points.shape[1]
            exact = torch.float32 if math.prod(self.shape) <= 2 ** 24 else torch.float64
            flat = torch.zeros(n_points, dtype=exact, device=self.points.device)
            inside = torch.ones(n_points, dtype=torch.bool, device=self.points.device)
            v = torch.empty(n_points, device=self.points.device)
            for axis, n in enumerate(self.shape):
                torch.mul(self.points[0], float(m[axis, 0]), out=v)
                v.add_(self.points[1], alpha=float(m[axis, 1]))
                v.add_(self.points[2], alpha=float(m[axis, 2])).add_(float(m[axis, 3]) + 0.5)
                inside &= v >= 0.5
                inside &= v <= n - 0.5
                flat.mul_(n).add_(v.floor_().clamp_(0, n - 1))
            self._nearest = flat.long(), inside
        flat, inside = self._nearest
        volume = torch.as_tensor(volume, device=flat.device)
        values = volume.reshape(-1)[flat]
        return values.masked_fill_(~inside, 0).reshape(self.out_shape).cpu().numpy()

    def linear(self, volume: np.ndarray | torch.Tensor, factor: float = 1.0) -> np.ndarray:
        """``volume`` (float; several stacked along a first axis: ``(C, ...)``), whose grid
        is the source's subsampled by ``factor``, trilinear at each point, edge values beyond
        it (``map_coordinates(order=1, mode="nearest")``); ``(C, X, Y, Z)`` for a stack."""
        volume = torch.as_tensor(volume, dtype=torch.float32, device=self.points.device)
        stacked = volume.ndim == 4
        volume = volume if stacked else volume[None]
        sizes = np.array(volume.shape[1:], dtype=float)
        # source voxel -> subsampled voxel -> grid_sample's [-1, 1], axes reversed (x last)
        to_grid = np.eye(4)
        to_grid[:3, :3] = np.diag(2.0 / np.maximum(sizes - 1, 1) / factor)[::-1]
        to_grid[:3, 3] = -1.0
        grid = self._mapped(to_grid @ self.affine)
        out = F.grid_sample(volume[None], grid.reshape(1, 1, 1, -1, 3), mode="bilinear",
                            padding_mode="border", align_corners=True)
        out = out.reshape(volume.shape[0], *self.out_shape).cpu().numpy()
        return out if stacked else out[0]

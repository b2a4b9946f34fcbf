"""Synthetic infant heads: DrawEM9 label maps and T2w-like images, reproducible from a seed.

Why: tests, the demo dataset and the starter model need infant anatomy without shipping
anyone's scans. Images are drawn from label maps SynthSeg-style (random contrast, texture,
blur, bias and noise around age-dependent T2 contrast), so a network trained on them learns
shapes rather than one scanner's look.

Label maps come from two sources, both painted in *generation labels*: the DrawEM9 indices
0-9 plus non-brain tissues that only shape the image and all become DrawEM9 4 ("Background"):

- ``SKULL`` (10, dark), ``EYE`` (11, fluid-bright), ``FAT`` (12, subcutaneous).

(a) Procedural heads: a deformed ellipsoidal cerebrum with a folded cortical ribbon (sulci are
the zero sheets of a smooth random field) and an interhemispheric fissure, white matter
inside, two arched lateral ventricles with temporal horns and a third ventricle, bilateral
deep grey matter and hippocampi, cerebellum (posterior-inferior, with folia) and brainstem,
an extra-axial CSF shell, skull, fat and scalp, face, eyes and neck. Left and right structures
are jittered independently and the whole head is randomly deformed, so no head is symmetric.
Brain volume grows with age (about 400 mL at birth, 900 mL at 12 months).

(b) The CC0 fetal spina bifida atlases (Fidon et al. 2021; folder ``ATLAS_ROOT``: environment
variable ``BIDS_INFANTSEG_ATLASES``, default ``/work/shared/data/fetal-sb-atlas-cc0``), scaled
up to the age's brain volume and randomly deformed. Their labels map onto DrawEM9 as: 1 WM ->
3 WM, 2 intra-axial CSF -> 5 ventricles, 3 cerebellum -> 6, 4 extra-axial CSF -> 1 CSF,
5 cortical GM -> 2, 6 deep GM -> 7, 7 brainstem -> 8, 8 corpus callosum -> 3 WM.
They have no hippocampus and no head: hippocampi are painted as in (a), along the floor of each
temporal horn of the atlas's ventricles (from the cerebrum's extent where no horn is found; over
GM/WM only), and the same skull/scalp/face/eyes/neck are added around the brain. The atlases,
scaled to infant size, are smoother than infant brains: most are refolded (sulci carved from
their cerebral surface, an even cortical ribbon repainted) and their enlarged (spina bifida)
ventricles usually shrunk. Callers pass the atlas folders explicitly, so some can be held out.

Training volumes are skull-stripped with some probability (everything outside the brain and
its CSF, plus a random margin of a few mm, set to zero and labelled 0), because real atlases,
templates and many users' scans are brain-only while synthetic heads have scalp and skull.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import nibabel as nib
import numpy as np
from scipy import ndimage

SKULL, EYE, FAT = 10, 11, 12
GEN_TO_DRAWEM9 = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 4, 4, 4], dtype=np.int16)
"""Generation label -> DrawEM9 index."""
GEN_INTRACRANIAL = np.isin(np.arange(len(GEN_TO_DRAWEM9)), (1, 2, 3, 5, 6, 7, 8, 9))
"""Generation labels a skull-strip keeps: brain and CSF."""

ATLAS_TO_GEN = np.array([0, 3, 5, 6, 1, 2, 7, 8, 3], dtype=np.uint8)
"""Fetal atlas parcellation label -> generation (DrawEM9) label; see the module docstring."""

ATLAS_ROOT = Path(os.environ.get("BIDS_INFANTSEG_ATLASES",
                                  "/work/shared/data/fetal-sb-atlas-cc0"))
"""Folder of the fetal atlas folders (environment variable ``BIDS_INFANTSEG_ATLASES``)."""
ATLAS_HELD_OUT = ("fetal_SB_atlas_GA23_notoperated", "fetal_SB_atlas_GA27_operated",
                  "fetal_SB_atlas_GA31_operated")
"""Atlases the starter model never trains on, kept for honest evaluation."""


class Phantom(NamedTuple):
    """A synthetic scan: T2w-like image, DrawEM9 labels on the same grid, and its affine."""

    image: np.ndarray  # float32
    labels: np.ndarray  # int16, DrawEM9 indices
    affine: np.ndarray  # 4x4 voxel -> world (mm, RAS+)


def brain_volume_ml(age_months: float) -> float:
    """Typical brain volume: ~400 mL at term birth, fast growth, ~900 mL at 12 months."""
    t = float(np.clip(age_months, 0.0, 24.0))
    return 400.0 + 500.0 * (1.0 - np.exp(-t / 6.0)) / (1.0 - np.exp(-2.0))


# --------------------------------------------------------------------------- random fields

def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], voxel_size: np.ndarray,
                  scale_mm: float) -> np.ndarray:
    """Unit-variance isotropic noise smooth over ~``scale_mm``: coarse noise, upsampled."""
    coarse = [max(2, int(np.ceil(n * v / scale_mm)) + 1) for n, v in zip(shape, voxel_size,
                                                                         strict=True)]
    noise = rng.standard_normal(coarse).astype(np.float32)
    field = ndimage.zoom(noise, [n / c for n, c in zip(shape, coarse, strict=True)], order=1,
                         grid_mode=True, mode="grid-mirror")
    field = ndimage.gaussian_filter(field, 0.35 * scale_mm / voxel_size, truncate=2.0)
    return field / (field.std() + 1e-6)


def _separable_noise(rng: np.random.Generator, shape: tuple[int, ...], voxel_size: np.ndarray,
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


# --------------------------------------------------------------------------- geometry

def _rotation(angles_deg: np.ndarray) -> np.ndarray:
    """3x3 rotation from angles about x, y, z (degrees)."""
    ax, ay, az = np.deg2rad(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _ellipsoid(p: np.ndarray, center, radii, tilt_deg: float = 0.0) -> np.ndarray:
    """Approximate signed distance (mm) to an ellipsoid, negative inside: (r-1)/|grad r|.

    ``p`` is (3, ...) in head coordinates; ``tilt_deg`` rotates it about x (pitch).
    """
    dx, dy, dz = (p[i] - np.float32(center[i]) for i in range(3))
    if tilt_deg:
        c, s = np.float32(np.cos(np.deg2rad(tilt_deg))), np.float32(np.sin(np.deg2rad(tilt_deg)))
        dy, dz = c * dy + s * dz, -s * dy + c * dz
    a, b, cc = (np.float32(r) for r in radii)
    u, v, w = dx / a, dy / b, dz / cc
    r = np.sqrt(u * u + v * v + w * w)
    grad = np.sqrt((u / a) ** 2 + (v / b) ** 2 + (w / cc) ** 2) / np.maximum(r, 1e-3)
    return (r - 1.0) / np.maximum(grad, 1e-6)


@dataclass(frozen=True)
class _Frame:
    """Cerebrum centre at the origin of head coordinates; its semi-axes (x LR, y AP, z SI)."""

    radii: np.ndarray

    def at(self, fx: float, fy: float, fz: float) -> tuple[float, float, float]:
        a, b, c = self.radii
        return fx * a, fy * b, fz * c


def _grid_points(shape: tuple[int, int, int], affine: np.ndarray,
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


def _deform(p: np.ndarray, rng: np.random.Generator, voxel_size: np.ndarray,
            amplitude_mm: float) -> np.ndarray:
    """Smooth random displacement of head coordinates (a few mm over ~4 cm)."""
    shape = p.shape[1:]
    return np.stack([p[i] + amplitude_mm * _separable_noise(rng, shape, voxel_size, 40.0)
                     for i in range(3)])


# --------------------------------------------------------------------------- painting

def _paint_head(gen: np.ndarray, p: np.ndarray, d_brain: np.ndarray, frame: _Frame,
                rng: np.random.Generator, voxel_size: np.ndarray, age_months: float) -> None:
    """Neck, face, eyes and the CSF/skull/fat/scalp shells around a brain (in place)."""
    a, b, c = frame.radii
    shell_noise = _separable_noise(rng, gen.shape, voxel_size, 30.0)
    csf = rng.uniform(1.0, 6.5) + 0.6 * shell_noise
    skull = csf + rng.uniform(1.0, 2.5) + 0.3 * age_months / 12.0
    fat = skull + rng.uniform(1.0, 3.0)
    scalp = fat + rng.uniform(2.0, 5.0) + 0.8 * shell_noise
    neck = _ellipsoid(p, (0, -0.25 * b, -1.6 * c), (0.75 * a, 0.55 * b, 1.0 * c))
    face = _ellipsoid(p, frame.at(0, 0.55, -0.8), (0.8 * a, 0.6 * b, 0.55 * c))
    gen[(neck < 0) | (face < 0) | (d_brain < scalp)] = 4
    gen[(d_brain < fat) & (d_brain >= skull)] = FAT
    gen[(d_brain < skull) & (d_brain >= csf)] = SKULL
    gen[d_brain < csf] = 1
    eye_r = (8.5 + 2.5 * min(age_months, 12.0) / 12.0) * rng.uniform(0.9, 1.1)
    for side in (-1, 1):
        center = frame.at(side * rng.uniform(0.3, 0.36), rng.uniform(0.92, 1.0),
                          rng.uniform(-0.6, -0.5))
        eye = _ellipsoid(p, center, (eye_r, eye_r, eye_r))
        gen[(eye < 0) & (d_brain > csf)] = EYE


def _paint_hippocampi(gen: np.ndarray, p: np.ndarray, frame: _Frame, rng: np.random.Generator,
                      horns: dict[int, np.ndarray] | None = None,
                      allowed: tuple[int, ...] = (2, 3)) -> None:
    """Elongated, tilted hippocampus+amygdala in each medial temporal lobe (in place).

    Where the side's temporal horn is known (``horns``: side -> its centre in head
    coordinates), the hippocampus lies along its floor, just medial and inferior, as in real
    anatomy: so the network can find it next to the horn's CSF instead of guessing from its
    place in the brain's outline. Otherwise it is placed from the cerebrum's extent.
    """
    a, b, c = frame.radii
    for side in (-1, 1):
        j = rng.uniform(0.85, 1.15, size=3)
        if horns and side in horns:
            center = horns[side] + np.array([-side * 0.05 * a * j[0], -0.02 * b * j[1],
                                             -0.07 * c * j[2]])
        else:
            center = frame.at(side * 0.33 * j[0], -0.2 * j[1], -0.4 * j[2])
        radii = (0.08 * a * rng.uniform(0.85, 1.15), 0.3 * b * rng.uniform(0.85, 1.15),
                 0.1 * c * rng.uniform(0.85, 1.15))
        inside = _ellipsoid(p, center, radii, tilt_deg=rng.uniform(15, 30)) < 0
        gen[inside & np.isin(gen, allowed)] = 9


def _cortical_ribbon(gen: np.ndarray, mantle: np.ndarray, thickness_mm: float,
                     voxel_size: np.ndarray) -> None:
    """Label the ``mantle`` (cerebral tissue) cortex within ``thickness_mm`` of CSF or the
    cerebrum's surface, white matter deeper (in place): a ribbon of even thickness that
    lines every sulcus. Depth is to the voxel's centre, so the outermost voxel is always
    cortex."""
    inside = mantle | np.isin(gen, (5, 7))
    depth = ndimage.distance_transform_edt(inside, sampling=voxel_size)
    step = float(np.min(voxel_size))
    gen[mantle] = np.where(depth[mantle] <= max(thickness_mm + 0.5 * step, step), 2, 3)


def _procedural_labels(p: np.ndarray, rng: np.random.Generator, voxel_size: np.ndarray,
                       age_months: float) -> np.ndarray:
    """Generation labels of a procedural head at head coordinates ``p`` (3, X, Y, Z)."""
    t = float(np.clip(age_months, 0.0, 24.0)) / 12.0
    shape = p.shape[1:]
    ratio = np.array([rng.normal(0.80, 0.04), 1.0, rng.normal(0.74, 0.04)])
    cerebrum_ml = 0.88 * brain_volume_ml(age_months) * rng.uniform(0.88, 1.12)
    b = (cerebrum_ml * 1000.0 * 3.0 / (4.0 * np.pi * ratio.prod())) ** (1.0 / 3.0)
    frame = _Frame(ratio * b)
    a, b, c = frame.radii

    cbm_scale = (1.0 + 0.35 * min(t, 1.0)) * rng.uniform(0.9, 1.1)
    d_cbm = _ellipsoid(p, frame.at(rng.normal(0, 0.02), -0.7, -0.62),
                       (0.55 * a * cbm_scale, 0.33 * b * cbm_scale, 0.33 * c * cbm_scale))
    d_bs = _ellipsoid(p, frame.at(0, -0.3, -0.8), (0.14 * a, 0.14 * b, 0.5 * c),
                      tilt_deg=rng.uniform(10, 25))
    d_cer = _ellipsoid(p, (0, 0, 0), frame.radii)
    d_brain = np.minimum(np.minimum(d_cer, d_cbm), d_bs)

    gen = np.zeros(shape, dtype=np.uint8)
    _paint_head(gen, p, d_brain, frame, rng, voxel_size, age_months)

    # Cerebrum: depth from the nearest CSF (outer surface, sulci, fissure, tentorium).
    folds = _smooth_noise(rng, shape, voxel_size, rng.uniform(6.0, 9.0))
    sulcal_depth = (6.0 + 6.0 * t) * (0.7 + 0.3 * _separable_noise(rng, shape, voxel_size, 50.0))
    width = rng.uniform(0.25, 0.35)
    depth = -d_cer - sulcal_depth * np.exp(-(folds / width) ** 2)
    midline = p[0] - 1.5 * _separable_noise(rng, shape, voxel_size, 60.0)
    callosum_arc = (p[1] / (0.62 * b)) ** 2 + ((p[2] + 0.1 * c) / (0.25 * c)) ** 2
    fissure = np.where(callosum_arc > 1.0, np.abs(midline) - rng.uniform(0.6, 1.2), np.inf)
    depth = np.minimum(np.minimum(depth, fissure), d_cbm - 1.5)
    thickness = (2.2 + 0.6 * t) * rng.uniform(0.85, 1.15)
    in_cerebrum = d_cer < 0
    gen[in_cerebrum] = np.where(depth[in_cerebrum] < 0, 1, 3)
    _cortical_ribbon(gen, in_cerebrum & (gen == 3), thickness, voxel_size)

    folia = d_cbm + 1.5 * np.exp(-(folds / 0.3) ** 2)
    gen[(d_cbm < 0) & (d_cer < 0)] = 1
    gen[folia < 0] = 6

    for side in (-1, 1):
        j = rng.uniform(0.9, 1.1, size=3)
        thalamus = _ellipsoid(p, frame.at(side * 0.13 * j[0], -0.12, -0.06 * j[1]),
                              (0.15 * a * j[1], 0.26 * b * j[2], 0.2 * c * j[0]))
        lentiform = _ellipsoid(p, frame.at(side * 0.28 * j[2], 0.1, -0.05 * j[0]),
                               (0.12 * a * j[0], 0.3 * b * j[1], 0.22 * c * j[2]))
        gen[(thalamus < 0) | (lentiform < 0)] = 7
    size = rng.uniform(0.6, 1.8) * (1.0 - 0.2 * min(t, 1.0))
    horns, ventricles = {}, np.zeros(shape, bool)
    for side in (-1, 1):
        j = rng.uniform(0.85, 1.15, size=3)
        arch = 0.3 * c * ((p[1] - 0.0) / b) ** 2
        bent = np.stack([p[0], p[1], p[2] + arch])
        body = _ellipsoid(bent, frame.at(side * (0.1 + 0.02 * size) * j[0], 0.0, 0.18 * j[1]),
                          (0.06 * a * size * j[2], 0.45 * b, 0.09 * c * size))
        horns[side] = np.array(frame.at(side * 0.27 * j[0], -0.2, -0.22 * j[1]))
        horn = _ellipsoid(p, horns[side], (0.03 * a * size, 0.2 * b, 0.04 * c * size),
                          tilt_deg=-35)
        ventricles |= (body < 0) | (horn < 0)
    _paint_hippocampi(gen, p, frame, rng, horns)
    gen[ventricles] = 5
    third = _ellipsoid(p, frame.at(0, -0.05, -0.1), (1.0 * size + 0.5, 0.15 * b, 0.12 * c))
    gen[third < 0] = 5
    gen[d_bs < 0] = 8
    return gen


# --------------------------------------------------------------------------- fetal atlases

@dataclass(frozen=True)
class _Atlas:
    """One fetal atlas, padded, in generation labels, with distance maps (half resolution)."""

    labels: np.ndarray  # uint8 generation labels
    distance: np.ndarray  # float32 mm outside the brain (0 inside)
    cerebral_depth: np.ndarray  # float32 mm inside cortex+WM from their outer surface
    ventricle_depth: np.ndarray  # float32 mm inside the ventricles from their wall
    world_to_voxel: np.ndarray  # 4x4
    center: np.ndarray  # cerebrum bounding-box centre, atlas mm
    radii: np.ndarray  # cerebrum bounding-box half-extent, atlas mm
    brain_ml: float


@lru_cache(maxsize=16)
def _load_atlas(folder: str) -> _Atlas:
    image = nib.load(str(Path(folder) / "parcellation.nii.gz"))
    raw = np.asarray(image.dataobj).astype(np.int64)
    if raw.max() >= len(ATLAS_TO_GEN):
        raise ValueError(f"{folder}: unexpected atlas label {raw.max()}")
    pad = 24
    labels = np.pad(ATLAS_TO_GEN[raw], pad)
    shift = np.eye(4)
    shift[:3, 3] = -pad
    affine = image.affine @ shift
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    brain = labels > 0
    half = labels[::2, ::2, ::2]

    def depth(inside: np.ndarray) -> np.ndarray:
        return ndimage.distance_transform_edt(inside, sampling=2 * zooms).astype(np.float32)

    cerebrum = np.argwhere(np.isin(labels, (1, 2, 3, 5, 7)))
    lo, hi = cerebrum.min(axis=0), cerebrum.max(axis=0)
    center = (affine @ np.append((lo + hi) / 2.0, 1.0))[:3]
    return _Atlas(labels, depth(half == 0), depth(np.isin(half, (2, 3, 5, 7))), depth(half == 5),
                  np.linalg.inv(affine), center, (hi - lo) / 2.0 * zooms,
                  float(brain.sum() * zooms.prod() / 1000.0))


def _fold_cortex(gen: np.ndarray, depth_mm: np.ndarray, rng: np.random.Generator,
                 voxel_size: np.ndarray, age_months: float) -> None:
    """Repaint an atlas's cortex and white matter as a folded ribbon (in place).

    Why: the fetal atlases, scaled to infant size, are far smoother than any infant brain;
    sulci are carved from their cerebral surface as in the procedural heads (zero sheets of a
    smooth random field), and the cortex becomes a ribbon of infant thickness along the outer
    surface and the sulci. Ventricles, deep grey matter, cerebellum and brainstem stay.
    """
    t = float(np.clip(age_months, 0.0, 24.0)) / 12.0
    folds = _smooth_noise(rng, gen.shape, voxel_size, rng.uniform(6.0, 10.0))
    sulcal_depth = (rng.uniform(6.0, 12.0) + 4.0 * t) * (
        0.7 + 0.3 * _separable_noise(rng, gen.shape, voxel_size, 50.0))
    depth = depth_mm - sulcal_depth * np.exp(-(folds / rng.uniform(0.25, 0.4)) ** 2)
    mantle = np.isin(gen, (2, 3))
    gen[mantle & (depth < 0)] = 1
    _cortical_ribbon(gen, mantle & (depth >= 0), (2.2 + 0.6 * t) * rng.uniform(0.9, 1.3),
                     voxel_size)


def _atlas_labels(p: np.ndarray, rng: np.random.Generator, voxel_size: np.ndarray,
                  age_months: float, folder: Path) -> np.ndarray:
    """Generation labels of a scaled-up, deformed fetal atlas at head coordinates ``p``."""
    atlas = _load_atlas(str(folder))
    scale = (brain_volume_ml(age_months) * rng.uniform(0.88, 1.12) / atlas.brain_ml) ** (1 / 3)
    m = atlas.world_to_voxel.astype(np.float32)
    q = p / np.float32(scale) + atlas.center.astype(np.float32)[:, None, None, None]
    vox = np.stack([m[i, 0] * q[0] + m[i, 1] * q[1] + m[i, 2] * q[2] + m[i, 3]
                    for i in range(3)])
    gen = ndimage.map_coordinates(atlas.labels, vox, order=0, mode="constant", cval=0)

    def half_res(field: np.ndarray) -> np.ndarray:  # mm at the infant's size
        return ndimage.map_coordinates(field, vox / 2.0, order=1, mode="nearest") * np.float32(
            scale)

    d_brain = half_res(atlas.distance) - np.float32(0.5)
    frame = _Frame(atlas.radii * scale)
    horns = _temporal_horns(gen, p, frame)
    if rng.uniform() < 0.75:  # the spina bifida atlases' ventricles are enlarged
        shrink = rng.uniform(0.2, 0.8) * float(atlas.ventricle_depth.max()) * scale
        gen[(gen == 5) & (half_res(atlas.ventricle_depth) < shrink)] = 3
    if rng.uniform() < 0.8:
        _fold_cortex(gen, half_res(atlas.cerebral_depth), rng, voxel_size, age_months)
    head = np.zeros_like(gen)
    _paint_head(head, p, np.where(gen > 0, -1.0, np.maximum(d_brain, 0.0)), frame, rng,
                voxel_size, age_months)
    gen = np.where(gen > 0, gen, head).astype(np.uint8)
    _paint_hippocampi(gen, p, frame, rng, horns)
    return gen


def _temporal_horns(gen: np.ndarray, p: np.ndarray, frame: _Frame,
                    min_voxels: int = 10) -> dict[int, np.ndarray]:
    """Centre (head coordinates) of each side's temporal horn: the ventricle lateral to and
    below the cerebrum's middle, behind its front (sides where too little of it is found are
    left out)."""
    a, b, c = frame.radii
    low = (gen == 5) & (p[2] < -0.1 * c) & (p[1] < 0.1 * b)
    horns = {}
    for side in (-1, 1):
        part = low & (side * p[0] > 0.12 * a)
        if np.count_nonzero(part) >= min_voxels:
            horns[side] = p[:, part].mean(axis=1)
    return horns


# --------------------------------------------------------------------------- images

def _contrast_centres(age_months: float) -> np.ndarray:
    """Mean T2w intensity per generation label at an age (arbitrary units, CSF ~1).

    Newborn: WM (unmyelinated) brighter than GM; ~6 months: WM ~ GM (isointense);
    12 months: adult-like, WM darker than GM.
    """
    t = float(np.clip(age_months / 12.0, 0.0, 1.0))
    wm = 0.68 - 0.36 * t
    return np.array([
        0.02,              # 0 air
        0.95,              # 1 CSF
        0.47 - 0.02 * t,   # 2 cortical GM
        wm,                # 3 WM
        0.30,              # 4 scalp, muscle
        0.97,              # 5 ventricles
        0.50 - 0.10 * t,   # 6 cerebellum
        0.43 - 0.07 * t,   # 7 deep GM
        0.42 - 0.12 * t,   # 8 brainstem
        0.52 - 0.04 * t,   # 9 hippocampus
        0.06,              # 10 skull
        0.98,              # 11 eye
        0.62,              # 12 fat
    ], dtype=np.float32)


def synthesize_image(gen: np.ndarray, rng: np.random.Generator, age_months: float,
                     voxel_size, *, random_contrast: float = 0.15) -> np.ndarray:
    """A T2w-like image (float32, ~[0, 1]) from generation labels, domain-randomised.

    Per-label means jittered around the age's contrast (with probability ``random_contrast``
    drawn uniformly instead), within-label texture, blur for partial volume and random
    (anisotropic) resolution, a smooth bias field, a gamma change and Rician noise.
    """
    voxel_size = np.broadcast_to(np.asarray(voxel_size, dtype=np.float64), (3,))
    n = len(_contrast_centres(age_months))
    if rng.uniform() < random_contrast:
        means = rng.uniform(0.0, 1.0, n).astype(np.float32)
    else:
        means = _contrast_centres(rng.uniform(age_months - 1.5, age_months + 1.5))
        means = np.clip(means + rng.normal(0, 0.04, n), 0.0, 1.0).astype(np.float32)
    stds = rng.uniform(0.01, 0.06, n).astype(np.float32)
    texture = _smooth_noise(rng, gen.shape, voxel_size, rng.uniform(2.0, 5.0))
    image = means[gen] + stds[gen] * texture
    sigma_mm = rng.uniform(0.3, 0.9, 3) * voxel_size
    if rng.uniform() < 0.5:
        sigma_mm[rng.integers(3)] = rng.uniform(1.0, 2.5)
    image = ndimage.gaussian_filter(image, sigma_mm / voxel_size, truncate=2.5)
    bias = _separable_noise(rng, gen.shape, voxel_size, rng.uniform(50.0, 100.0))
    image *= np.exp(rng.uniform(0.05, 0.3) * bias)
    image = np.clip(image, 0.0, None) / max(float(image.max()), 1e-6)
    image **= np.float32(np.exp(rng.normal(0.0, 0.2)))
    noise = rng.uniform(0.005, 0.04)
    real = image + rng.normal(0.0, noise, image.shape).astype(np.float32)
    imag = rng.normal(0.0, noise, image.shape).astype(np.float32)
    return np.sqrt(real * real + imag * imag).astype(np.float32)


# --------------------------------------------------------------------------- public API

def label_map(age_months: float, rng: np.random.Generator, shape: tuple[int, int, int],
              affine: np.ndarray, *, atlas: Path | None = None, rotation_deg: float = 10.0,
              shift_mm: float = 6.0, deform_mm: float = 3.0) -> np.ndarray:
    """Generation labels of one random head on the grid (``shape``, ``affine``).

    The head is centred near world (0, 0, 0), randomly posed (rotation up to ``rotation_deg``
    about each axis, shift up to ``shift_mm``) and smoothly deformed. ``atlas`` selects a fetal
    atlas folder; ``None`` draws a procedural head.
    """
    voxel_size = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    head_to_world = np.eye(4)
    head_to_world[:3, :3] = _rotation(rng.uniform(-rotation_deg, rotation_deg, 3))
    head_to_world[:3, 3] = rng.uniform(-shift_mm, shift_mm, 3)
    p = _grid_points(shape, affine, head_to_world)
    scale = rng.normal(1.0, 0.04, 3).astype(np.float32)[:, None, None, None]
    p = _deform(p * scale, rng, voxel_size, deform_mm)
    if atlas is None:
        return _procedural_labels(p, rng, voxel_size, age_months)
    return _atlas_labels(p, rng, voxel_size, age_months, Path(atlas))


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
    affine[:3, :3] = _rotation(np.asarray(oblique_deg, dtype=float)) @ axes
    affine[:3, 3] = -affine[:3, :3] @ ((np.asarray(shape) - 1) / 2.0)
    return affine


def phantom(age_months: float, seed: int, shape: tuple[int, int, int] = (128, 144, 128),
            voxel_size=1.2, *, axcodes: str = "RAS", oblique_deg=(0.0, 0.0, 0.0),
            atlas: Path | None = None) -> Phantom:
    """A realistic native-looking synthetic T2w scan (intensities ~0-1000) with its labels."""
    rng = np.random.default_rng(seed)
    affine = grid_affine(shape, voxel_size, axcodes=axcodes, oblique_deg=oblique_deg)
    gen = label_map(age_months, rng, shape, affine, atlas=atlas)
    image = synthesize_image(gen, rng, age_months, np.sqrt((affine[:3, :3] ** 2).sum(axis=0)),
                             random_contrast=0.0)
    return Phantom((1000.0 * image).astype(np.float32), GEN_TO_DRAWEM9[gen], affine)


def skull_strip(image: np.ndarray, gen: np.ndarray, rng: np.random.Generator,
                voxel_size: float, max_margin_mm: float = 4.0,
                max_cut_mm: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Zero the image and label (0) what a brain extraction tool would remove.

    The mask's edge lies at a signed distance from the surface of the brain and its CSF that
    varies smoothly over the head, from ``max_cut_mm`` inside the CSF (tight masks cut into
    it; brain tissue itself is never removed) to ``max_margin_mm`` outside (some skull or
    scalp remains); in half the volumes it hugs the surface.
    """
    intracranial = GEN_INTRACRANIAL[gen]
    # signed distance (mm) from the voxel's centre to the surface half a voxel out
    signed = (ndimage.distance_transform_edt(~intracranial, sampling=voxel_size)
              - ndimage.distance_transform_edt(intracranial, sampling=voxel_size))
    signed -= np.where(intracranial, -0.5, 0.5) * voxel_size
    spacing = np.full(3, voxel_size)
    edge = (rng.uniform(-max_cut_mm, max_margin_mm) if rng.uniform() < 0.5
            else rng.uniform(-0.5, 0.5) * voxel_size)
    margin = edge + 0.5 * max(abs(edge), voxel_size) * _separable_noise(rng, gen.shape,
                                                                         spacing, 60.0)
    tissue = intracranial & (gen != 1)  # brain itself: everything intracranial but CSF
    removed = (signed > np.clip(margin, -max_cut_mm, max_margin_mm)) & ~tissue
    return np.where(removed, 0.0, image).astype(np.float32), np.where(removed, 0, gen)


def training_volume(rng: np.random.Generator, age_months: float, grid_shape: tuple[int, int, int],
                    voxel_size: float, *, atlas: Path | None = None, rotation_deg: float = 15.0,
                    strip_probability: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(image float32 ~[0, 1], DrawEM9 labels int16) drawn directly on a canonical RAS grid,
    skull-stripped with probability ``strip_probability`` (drawn last, so the head itself
    does not depend on it)."""
    affine = grid_affine(grid_shape, voxel_size)
    gen = label_map(age_months, rng, grid_shape, affine, atlas=atlas, rotation_deg=rotation_deg,
                    shift_mm=10.0, deform_mm=4.0)
    image = synthesize_image(gen, rng, age_months, voxel_size)
    if strip_probability and rng.uniform() < strip_probability:
        image, gen = skull_strip(image, gen, rng, voxel_size)
    return image, GEN_TO_DRAWEM9[gen]


def atlas_folders(root: Path = ATLAS_ROOT, exclude: tuple[str, ...] = ()) -> list[Path]:
    """The fetal atlas folders under ``root`` (sorted), minus those named in ``exclude``."""
    return sorted(p for p in Path(root).glob("*/") if (p / "parcellation.nii.gz").is_file()
                  and p.name not in exclude)

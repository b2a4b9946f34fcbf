"""The CC0 fetal spina bifida atlases (Fidon et al. 2021) as a source of anatomy.

Scaled up to the age's brain volume and randomly deformed. Their labels map onto generation
classes as: 1 WM -> WM, 2 intra-axial CSF -> ventricles, 3 cerebellum, 4 extra-axial CSF ->
CSF, 5 cortical GM, 6 deep GM, 7 brainstem, 8 corpus callosum -> WM. They have no hippocampus
and no head: hippocampi are painted along the floor of each temporal horn of the atlas's
ventricles (from the cerebrum's extent where no horn is found; over GM/WM only), and the
skull/scalp/face/eyes/neck are added around the brain. Scaled to infant size they are
smoother than infant brains: most are refolded (sulci carved from their cerebral surface, an
even cortical ribbon repainted) and their enlarged (spina bifida) ventricles usually shrunk.
Callers pass the atlas folders explicitly, so some can be held out.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from bids_infantseg.synth.config import GeneratorConfig, default_if_none
from bids_infantseg.synth.fields import Resampler, separable_noise, smooth_noise
from bids_infantseg.synth.geometry import Frame, bounding_box, padded
from bids_infantseg.synth.head import cortical_ribbon, paint_head, paint_hippocampi

ATLAS_TO_GEN = np.array([0, 3, 5, 6, 1, 2, 7, 8, 3], dtype=np.uint8)
"""Fetal atlas parcellation label -> generation class; see the module docstring."""
ATLAS_HELD_OUT = ("fetal_SB_atlas_GA23_notoperated", "fetal_SB_atlas_GA27_operated",
                  "fetal_SB_atlas_GA31_operated")
"""Atlases the starter model never trains on, kept for honest evaluation."""


@dataclass(frozen=True)
class FetalAtlas:
    """Anatomy from one fetal atlas folder (holding ``parcellation.nii.gz``)."""

    folder: Path

    def paint(self, p: np.ndarray, rng: np.random.Generator, voxel_size: np.ndarray,
              age_months: float, *, config: GeneratorConfig | None = None) -> np.ndarray:
        return _atlas_labels(p, rng, voxel_size, age_months, Path(self.folder), config)


@dataclass(frozen=True)
class _Atlas:
    """One fetal atlas, padded, in generation labels, with distance maps (half resolution)."""

    labels: np.ndarray  # uint8 generation labels
    depths: np.ndarray  # float32 (3, ...) mm: outside the brain (0 inside), inside cortex+WM
    # from their outer surface, inside the ventricles from their wall
    max_ventricle_depth: float
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
    labels, affine, zooms = padded(ATLAS_TO_GEN[raw], image.affine, 24)
    brain = labels > 0
    half = labels[::2, ::2, ::2]

    def depth(inside: np.ndarray) -> np.ndarray:
        return ndimage.distance_transform_edt(inside, sampling=2 * zooms).astype(np.float32)

    center, radii = bounding_box(np.isin(labels, (1, 2, 3, 5, 7)), affine, zooms)
    ventricles = depth(half == 5)
    return _Atlas(labels, np.stack([depth(half == 0), depth(np.isin(half, (2, 3, 5, 7))),
                                    ventricles]), float(ventricles.max()),
                  np.linalg.inv(affine), center, radii, float(brain.sum() * zooms.prod() / 1000.0))


def _fold_cortex(gen: np.ndarray, depth_mm: np.ndarray, rng: np.random.Generator,
                 voxel_size: np.ndarray, age_months: float) -> None:
    """Repaint an atlas's cortex and white matter as a folded ribbon (in place).

    Why: the fetal atlases, scaled to infant size, are far smoother than any infant brain;
    sulci are carved from their cerebral surface as in the procedural heads (zero sheets of a
    smooth random field), and the cortex becomes a ribbon of infant thickness along the outer
    surface and the sulci. Ventricles, deep grey matter, cerebellum and brainstem stay.
    """
    t = float(np.clip(age_months, 0.0, 24.0)) / 12.0
    folds = smooth_noise(rng, gen.shape, voxel_size, rng.uniform(6.0, 10.0)).numpy()
    sulcal_depth = (rng.uniform(6.0, 12.0) + 4.0 * t) * (
        0.7 + 0.3 * separable_noise(rng, gen.shape, voxel_size, 50.0).numpy())
    depth = depth_mm - sulcal_depth * np.exp(-(folds / rng.uniform(0.25, 0.4)) ** 2)
    mantle = np.isin(gen, (2, 3))
    gen[mantle & (depth < 0)] = 1
    cortical_ribbon(gen, mantle & (depth >= 0), (2.2 + 0.6 * t) * rng.uniform(0.9, 1.3),
                     voxel_size)


def _atlas_labels(p: np.ndarray, rng: np.random.Generator, voxel_size: np.ndarray,
                  age_months: float, folder: Path,
                  config: GeneratorConfig | None = None) -> np.ndarray:
    """Generation labels of a scaled-up, deformed fetal atlas at head coordinates ``p``."""
    config = default_if_none(config)
    atlas = _load_atlas(str(folder))
    scale = (config.brain_volume.ml(age_months) * rng.uniform(0.88, 1.12)
             / atlas.brain_ml) ** (1 / 3)
    head_to_atlas = np.eye(4)
    head_to_atlas[:3, :3] /= scale
    head_to_atlas[:3, 3] = atlas.center
    at = Resampler(p, atlas.world_to_voxel @ head_to_atlas, atlas.labels.shape)
    gen = at.nearest(atlas.labels)
    outside, cerebral, ventricular = at.linear(atlas.depths, 2.0) * np.float32(scale)  # mm
    d_brain = outside - np.float32(0.5)
    frame = Frame(atlas.radii * scale)
    horns = _temporal_horns(gen, p, frame)
    if rng.uniform() < 0.75:  # the spina bifida atlases' ventricles are enlarged
        shrink = rng.uniform(0.2, 0.8) * atlas.max_ventricle_depth * scale
        gen[(gen == 5) & (ventricular < shrink)] = 3
    if rng.uniform() < 0.8:
        _fold_cortex(gen, cerebral, rng, voxel_size, age_months)
    head = np.zeros_like(gen)
    paint_head(head, p, np.where(gen > 0, -1.0, np.maximum(d_brain, 0.0)), frame, rng,
               voxel_size, age_months, config)
    gen = np.where(gen > 0, gen, head).astype(np.uint8)
    paint_hippocampi(gen, p, frame, rng, horns)
    return gen


def _temporal_horns(gen: np.ndarray, p: np.ndarray, frame: Frame,
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



def atlas_folders(root: Path, exclude: tuple[str, ...] = ()) -> list[Path]:
    """The fetal atlas folders under ``root`` (sorted), minus those named in ``exclude``;
    an error where ``root`` holds none (a configured source is never silently dropped)."""
    folders = sorted(p for p in Path(root).glob("*/")
                     if (p / "parcellation.nii.gz").is_file() and p.name not in exclude)
    if not folders:
        raise FileNotFoundError(f"{root}: no fetal atlas folders (*/parcellation.nii.gz)")
    return folders

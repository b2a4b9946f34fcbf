"""Any label map as a source of anatomy, through a declarative scheme (SynthSeg-style).

A *scheme* (JSON, ``data/synth/<name>.json`` or any file) says which generation class each
source label is; a label map plus its scheme is an anatomy source. Why: real infant anatomy
(FreeSurfer asegs of real infants, a site's manual labels, the dHCP atlas) differs from
procedural shapes in exactly what the network gets wrong on real scans (cortical folding,
ventricle and hippocampus shape), and adding a source must not need code.

Label maps of brains alone (most asegs) get what they lack painted around them: label 0
inside the brain's hull (sulci, the interhemispheric fissure, around the cerebellum) and a
shell of random width around the brain become CSF, then skull, fat, scalp, face and eyes.
Automatic asegs (joint label fusion at 1 mm) label a thick, blocky cortex (about half of the
infant brain, where newborn DrawEM maps hold little more than a third) with cortex touching
cortex across sulci: most volumes cap the cortex at a random thickness, and what lies deeper
becomes CSF, which opens the sulci where two banks meet.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from bids_infantseg.synth.classes import CGM, CLASSES, CSF, INDEX, WM, brain_volume_ml
from bids_infantseg.synth.geometry import Frame, apply_affine, bounding_box, padded
from bids_infantseg.synth.head import cortical_ribbon, paint_head

SCHEMES = Path(__file__).resolve().parents[1] / "data" / "synth"
"""Folder of the shipped schemes."""
_PAD = 24
_CEREBRUM = tuple(INDEX[n] for n in ("cortical_gm", "wm", "ventricle", "deep_gm", "thalamus"))


class SchemeError(ValueError):
    """A scheme or label map that does not fit together."""


@dataclass(frozen=True)
class Scheme:
    """Source label -> generation class name, for one family of label maps."""

    name: str
    classes: tuple[tuple[int, str], ...]

    @classmethod
    def load(cls, name_or_path: str | Path) -> Scheme:
        """A shipped scheme by name, or a scheme file."""
        path = Path(name_or_path)
        if not path.is_file():
            path = SCHEMES / f"{name_or_path}.json"
        if not path.is_file():
            raise SchemeError(f"{name_or_path}: no such scheme file or shipped scheme "
                              f"({', '.join(sorted(p.stem for p in SCHEMES.glob('*.json')))})")
        spec = json.loads(path.read_text())
        classes = tuple(sorted((int(code), str(name)) for code, name in spec["classes"].items()))
        unknown = sorted({name for _, name in classes} - set(INDEX))
        if unknown:
            raise SchemeError(f"{path}: unknown generation classes {unknown} "
                              f"(known: {', '.join(c.name for c in CLASSES)})")
        return cls(str(spec.get("name", path.stem)), classes)

    def lookup(self, max_label: int) -> np.ndarray:
        """Source label -> generation label for labels 0..max_label (unmapped: 255)."""
        lut = np.full(max_label + 1, 255, dtype=np.uint8)
        lut[0] = 0
        for code, name in self.classes:
            if code <= max_label:
                lut[code] = INDEX[name]
        return lut


@dataclass(frozen=True)
class _Prepared:
    """A label map in generation labels, padded, with what painting needs."""

    labels: np.ndarray  # uint8 generation labels
    outside_mm: np.ndarray  # float32 mm outside the brain (half resolution)
    cortex_depth: np.ndarray  # uint8 quarter-mm from other brain tissue (cortex only)
    world_to_voxel: np.ndarray  # 4x4
    center: np.ndarray  # cerebrum bounding-box centre, source mm
    radii: np.ndarray  # cerebrum bounding-box half-extent, source mm
    brain_ml: float


@lru_cache(maxsize=32)
def _prepare(path: str, scheme: Scheme) -> _Prepared:
    image = nib.load(path)
    raw = np.asanyarray(image.dataobj)
    if not np.issubdtype(raw.dtype, np.integer) and not np.array_equal(raw, np.round(raw)):
        raise SchemeError(f"{path}: label map holds non-integer values")
    raw = raw.astype(np.int64)
    if raw.min() < 0:
        raise SchemeError(f"{path}: label map holds negative labels")
    labels = scheme.lookup(int(raw.max()))[raw]
    if (labels == 255).any():
        missing = sorted(set(np.unique(raw[labels == 255]).tolist()))
        raise SchemeError(f"{path}: labels {missing} are not in scheme {scheme.name!r}")
    labels, affine, zooms = padded(labels, image.affine, _PAD)
    brain = labels > 0
    half = brain[::2, ::2, ::2]
    outside = ndimage.distance_transform_edt(~half, sampling=2 * zooms).astype(np.float32)
    center, radii = bounding_box(np.isin(labels, _CEREBRUM), affine, zooms)
    return _Prepared(labels, outside, _cortex_depth(labels, zooms), np.linalg.inv(affine),
                     center, radii, float(brain.sum() * zooms.prod() / 1000.0))


def _cortex_depth(labels: np.ndarray, zooms: np.ndarray) -> np.ndarray:
    """Distance (quarter mm, uint8) of each cortex voxel from the nearest other brain tissue."""
    cortex = labels == CGM
    depth = ndimage.distance_transform_edt(~(labels > 0) | cortex, sampling=zooms)
    return np.where(cortex, np.clip(np.round(4.0 * depth), 0, 255), 0).astype(np.uint8)


@dataclass(frozen=True)
class LabelMap:
    """Anatomy from one label map file through a scheme; ``age_months`` is the source's own
    age (used to choose maps near a drawn age), ``thin_cortex`` the chance of opening fused
    sulci (cortex deeper than ``open_mm`` from white matter, source mm, becomes CSF) and
    repainting the cortex as a ribbon ``cortex_mm`` thick at birth (both bounds grow by
    ``cortex_growth_mm`` over the first year, as the cortex thickens)."""

    path: Path
    scheme: Scheme
    age_months: float
    thin_cortex: float = 0.8
    cortex_mm: tuple[float, float] = (1.3, 2.6)
    cortex_growth_mm: float = 0.8
    open_mm: tuple[float, float] = (2.5, 4.0)

    def paint(self, p: np.ndarray, rng: np.random.Generator, voxel_size: np.ndarray,
              age_months: float) -> np.ndarray:
        """Generation labels at head coordinates ``p``: scaled to a brain volume typical of
        ``age_months``, mirrored left-right half the time, with CSF and a head around it."""
        m = _prepare(str(self.path), self.scheme)
        scale = np.float32((brain_volume_ml(age_months) * rng.uniform(0.88, 1.12)
                            / m.brain_ml) ** (1 / 3))
        q = p / scale
        if rng.uniform() < 0.5:
            q[0] = -q[0]
        vox = apply_affine(m.world_to_voxel, q + m.center.astype(np.float32)[:, None, None, None])
        gen = ndimage.map_coordinates(m.labels, vox, order=0, mode="constant", cval=0)
        if rng.uniform() < self.thin_cortex:
            depth = ndimage.map_coordinates(m.cortex_depth, vox, order=0, mode="constant",
                                            cval=0)
            gen[(gen == CGM) & (depth > 4.0 * rng.uniform(*self.open_mm))] = CSF
            grow = self.cortex_growth_mm * min(age_months, 12.0) / 12.0
            mantle = np.isin(gen, (CGM, WM))
            cortical_ribbon(gen, mantle, rng.uniform(self.cortex_mm[0] + grow,
                                                     self.cortex_mm[1] + grow),
                            voxel_size, inside=(gen > 0) & (gen != CSF))
        outside = ndimage.map_coordinates(m.outside_mm, vox / 2.0, order=1,
                                          mode="nearest") * scale
        head = np.zeros_like(gen)
        paint_head(head, p, np.where(gen > 0, -1.0, np.maximum(outside - 0.5, 0.0)),
                   Frame(m.radii * scale), rng, voxel_size, age_months)
        return np.where(gen > 0, gen, head).astype(np.uint8)

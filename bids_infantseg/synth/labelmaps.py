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

A scheme may also say which source labels lie on which side (``sides``) and what each source
label is in an output label set (``outputs``, e.g. aseg: a FreeSurfer name without its side,
``Cerebral-Cortex``), so that a label map gives finer, lateralised training labels than its
generation classes: each voxel keeps its source label's output where painting left its class
as the source said, on the source label's side (swapped when the map is mirrored; the head's
midline for unsided labels); repainted voxels (sulci opened to CSF, the cortical ribbon,
the head) take their class's output on that side (``outputs.py``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from scipy import ndimage

from bids_infantseg.synth.classes import CGM, CLASSES, CSF, INDEX, WM
from bids_infantseg.synth.config import GeneratorConfig, default_if_none
from bids_infantseg.synth.fields import Resampler, distance_inside, local_max
from bids_infantseg.synth.geometry import Frame, bounding_box, padded
from bids_infantseg.synth.head import cortical_ribbon, paint_head
from bids_infantseg.synth.outputs import LABEL_SETS, class_labels, class_table, sided_index
from bids_infantseg.utils.errors import InfantsegError

SCHEMES = Path(__file__).resolve().parents[1] / "data" / "synth"
"""Folder of the shipped schemes."""
_PAD = 24
_CEREBRUM = tuple(INDEX[n] for n in ("cortical_gm", "wm", "ventricle", "deep_gm", "thalamus"))


class SchemeError(InfantsegError, ValueError):
    """A scheme or label map that does not fit together."""


@dataclass(frozen=True)
class Scheme:
    """Source label -> generation class name, for one family of label maps; optionally each
    source label's side (-1 left, 1 right) and its output per label set (a label or group
    name of that set, without Left-/Right-)."""

    name: str
    classes: tuple[tuple[int, str], ...]
    sides: tuple[tuple[int, int], ...] = ()
    outputs: tuple[tuple[str, tuple[tuple[int, str], ...]], ...] = ()

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
        side = {"left": -1, "right": 1}
        sides = tuple(sorted((int(code), side[key]) for key, codes in
                             spec.get("sides", {}).items() for code in codes))
        outputs = tuple(sorted((str(label_set), tuple(sorted((int(code), str(name))
                                                             for code, name in table.items())))
                               for label_set, table in spec.get("outputs", {}).items()))
        scheme = cls(str(spec.get("name", path.stem)), classes, sides, outputs)
        scheme.check(path)
        return scheme

    def check(self, path: Path) -> None:
        """Sides and outputs name the scheme's own labels, every one of them, and outputs
        that the label set has."""
        codes = {code for code, _ in self.classes}
        problems = []
        if not {code for code, _ in self.sides} <= codes or \
                len({code for code, _ in self.sides}) != len(self.sides):
            problems.append("'sides' lists labels the scheme lacks, or one on both sides")
        for label_set, table in self.outputs:
            if label_set not in LABEL_SETS or label_set == "drawem9":
                problems.append(f"outputs for {label_set!r} (synthesis draws "
                                f"{', '.join(s for s in LABEL_SETS if s != 'drawem9')}; "
                                "DrawEM9 follows the generation classes)")
                continue
            if {code for code, _ in table} - {0} != codes:
                problems.append(f"outputs {label_set!r} must give every label of the scheme")
            for _, name in table:
                try:
                    sided_index(label_set, name)
                except KeyError as exc:
                    problems.append(str(exc.args[0]))
        if problems:
            raise SchemeError(f"{path}: {'; '.join(problems)}")

    def lookup(self, max_label: int) -> np.ndarray:
        """Source label -> generation label for labels 0..max_label (unmapped: 255)."""
        lut = np.full(max_label + 1, 255, dtype=np.uint8)
        lut[0] = 0
        for code, name in self.classes:
            if code <= max_label:
                lut[code] = INDEX[name]
        return lut

    def codes(self) -> tuple[int, ...]:
        """The source labels, 0 first: a label map is kept as positions in this list."""
        return (0, *(code for code, _ in self.classes if code))

    def code_classes(self) -> np.ndarray:
        """Generation class of each position of ``codes()`` (uint8)."""
        return self.lookup(max(self.codes()))[list(self.codes())]

    def code_sides(self) -> np.ndarray:
        """Side of each position of ``codes()``: -1 left, 1 right, 0 none (int8)."""
        sides = dict(self.sides)
        return np.array([sides.get(code, 0) for code in self.codes()], dtype=np.int8)

    def code_outputs(self, label_set: str) -> np.ndarray | None:
        """``(codes, 2)`` int16: each position's label in ``label_set`` on the left and on
        the right (0: what the set gives outside the head); None where the scheme gives no
        outputs for that set."""
        table = dict(dict(self.outputs).get(label_set, ()))
        if not table:
            return None
        return np.array([class_table(label_set)[0] if code == 0 else
                         sided_index(label_set, table[code]) for code in self.codes()],
                        dtype=np.int16)


@dataclass(frozen=True)
class _Prepared:
    """A label map as positions in its scheme's ``codes()``, padded, with what painting
    needs."""

    codes: np.ndarray  # uint8 (uint16 for schemes of 255 labels or more)
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
    known = scheme.codes()
    dtype = np.uint8 if len(known) < 255 else np.uint16
    missing_code = np.iinfo(dtype).max
    position = np.full(max(int(raw.max()), *known) + 1, missing_code, dtype=dtype)
    position[list(known)] = np.arange(len(known))
    codes = position[raw]
    if (codes == missing_code).any():
        missing = sorted(set(np.unique(raw[codes == missing_code]).tolist()))
        raise SchemeError(f"{path}: labels {missing} are not in scheme {scheme.name!r}")
    codes, affine, zooms = padded(codes, image.affine, _PAD)
    labels = scheme.code_classes()[codes]
    brain = labels > 0
    half = brain[::2, ::2, ::2]
    outside = ndimage.distance_transform_edt(~half, sampling=2 * zooms).astype(np.float32)
    center, radii = bounding_box(np.isin(labels, _CEREBRUM), affine, zooms)
    return _Prepared(codes, outside, _cortex_depth(labels, zooms), np.linalg.inv(affine),
                     center, radii, float(brain.sum() * zooms.prod() / 1000.0))


def _cortex_depth(labels: np.ndarray, zooms: np.ndarray) -> np.ndarray:
    """Distance (quarter mm, uint8) of each cortex voxel from the nearest other brain tissue."""
    cortex = labels == CGM
    depth = ndimage.distance_transform_edt(~(labels > 0) | cortex, sampling=zooms)
    return np.where(cortex, np.clip(np.round(4.0 * depth), 0, 255), 0).astype(np.uint8)


def split_fused_banks(gen: np.ndarray, depth: np.ndarray, thickness_mm: float,
                      voxel_size: np.ndarray) -> None:
    """A line of CSF along the ridge of the cortex's depth from white matter, wherever it
    lies deeper than the ribbon from any CSF (in place).

    Why: automatic asegs fuse the two banks of a sulcus into one slab of cortex with no CSF
    between them; a ribbon repainted from the CSF alone turned such a slab into white matter,
    and a network trained on that called the cortex lining real sulci white matter. The
    ridge (where the depth from white matter peaks) is the fused sulcus's midline.
    """
    cortex = (gen == CGM) & (depth >= 4)  # at least 1 mm from white matter
    surface = (gen == 0) | (gen == CSF)
    limit = thickness_mm + 0.5 * float(np.min(voxel_size))
    from_csf = distance_inside(~surface, voxel_size, limit + float(np.max(voxel_size)))
    ridge = cortex & (depth >= local_max(torch.from_numpy(depth)).numpy())
    gen[ridge & (from_csf.numpy() > limit)] = CSF


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
              age_months: float, *, config: GeneratorConfig | None = None) -> np.ndarray:
        """Generation labels at head coordinates ``p``: scaled to a brain volume typical of
        ``age_months``, mirrored left-right half the time, with CSF and a head around it."""
        return self.paint_labels(p, rng, voxel_size, age_months, (), config=config)[0]

    def paint_labels(self, p: np.ndarray, rng: np.random.Generator, voxel_size: np.ndarray,
                     age_months: float, label_sets: tuple[str, ...], *,
                     config: GeneratorConfig | None = None
                     ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``paint``'s generation labels, and the labels of each of ``label_sets`` (see the
        module docstring); the random draws do not depend on ``label_sets``."""
        config = default_if_none(config)
        m = _prepare(str(self.path), self.scheme)
        scale = np.float32((config.brain_volume.ml(age_months) * rng.uniform(0.88, 1.12)
                            / m.brain_ml) ** (1 / 3))
        mirrored = bool(rng.uniform() < 0.5)
        head_to_source = np.eye(4)
        head_to_source[:3, 3] = m.center
        head_to_source[:3, :3] = np.diag([-1.0 if mirrored else 1.0, 1.0, 1.0]) / float(scale)
        at = Resampler(p, m.world_to_voxel @ head_to_source, m.codes.shape)
        codes = at.nearest(m.codes)
        source_classes = self.scheme.code_classes()
        gen = source_classes[codes]
        if rng.uniform() < self.thin_cortex:
            depth = at.nearest(m.cortex_depth)
            gen[(gen == CGM) & (depth > 4.0 * rng.uniform(*self.open_mm))] = CSF
            grow = self.cortex_growth_mm * min(age_months, 12.0) / 12.0
            thickness = rng.uniform(self.cortex_mm[0] + grow, self.cortex_mm[1] + grow)
            split_fused_banks(gen, depth, thickness, voxel_size)
            cortical_ribbon(gen, np.isin(gen, (CGM, WM)), thickness, voxel_size,
                            inside=(gen > 0) & (gen != CSF))
        outside = at.linear(m.outside_mm, 2.0) * scale
        head = np.zeros_like(gen)
        paint_head(head, p, np.where(gen > 0, -1.0, np.maximum(outside - 0.5, 0.0)),
                   Frame(m.radii * scale), rng, voxel_size, age_months, config)
        gen = np.where(gen > 0, gen, head).astype(np.uint8)
        if not label_sets:
            return gen, {}
        side = self.scheme.code_sides()[codes]
        right = np.where(side != 0, (side > 0) != mirrored, p[0] >= 0)
        labels = class_labels(gen, right, label_sets)
        kept = gen == source_classes[codes]  # the class the source gave: its label stands
        for label_set in label_sets:
            own = self.scheme.code_outputs(label_set)
            if own is not None:
                labels[label_set] = np.where(kept, own[codes, right.astype(np.intp)],
                                             labels[label_set])
        return gen, labels

"""Synthetic infant heads: label maps and T2w-like images, reproducible from a seed.

Why: tests, the demo dataset and the starter model need infant anatomy without shipping
anyone's scans. SynthSeg-style, images are drawn from label maps (random contrast, texture,
blur, bias and noise around age-dependent T2 contrast), so a network trained on them learns
shapes rather than one scanner's look.

Anatomy comes from an *anatomy source*, painted in generation classes (``classes.py``):

- ``Procedural()``: a head built from ellipsoids and random fields (``procedural.py``);
- ``FetalAtlas(folder)``: a CC0 fetal atlas scaled to infant size (``fetal_atlas.py``);
- ``LabelMap(file, scheme, age)``: any label map, e.g. a real infant FreeSurfer aseg, whose
  labels a declarative scheme turns into generation classes (``labelmaps.py``).

Which sources a training run draws from, with what weights and held-out files, is a
configuration (``sources.py``), so a new source of anatomy is a config entry, not code.
Every head is randomly posed, scaled to an age-plausible brain volume and deformed; sources
without extra-axial CSF, skull and scalp get them painted around the brain (``head.py``).
Training volumes are skull-stripped with some probability, because many users' scans are
brain-only. Every range, the classes and their T2 curves are a generator configuration
(``config.py``: ``config=`` of the functions below, default the shipped one); the image and
the per-voxel work of painting run in torch (``fields.py``), the image on ``device``.
Their labels come in the label sets asked for (``outputs.py``): DrawEM9 from the
generation classes, or lateralised FreeSurfer aseg labels (with partial labels where a
source lacks the aseg subdivisions); the head and image drawn do not depend on which.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol

import numpy as np

from bids_infantseg.synth.classes import GEN_INTRACRANIAL, GEN_TO_DRAWEM9, brain_volume_ml
from bids_infantseg.synth.config import (
    DEFAULT,
    GeneratorConfig,
    default_if_none,
    load_generator,
)
from bids_infantseg.synth.fetal_atlas import ATLAS_HELD_OUT, ATLAS_TO_GEN, FetalAtlas, atlas_folders
from bids_infantseg.synth.fields import Device, distance_inside, one_thread, separable_noise
from bids_infantseg.synth.geometry import deform, grid_affine, grid_points, rotation
from bids_infantseg.synth.image import synthesize_image
from bids_infantseg.synth.labelmaps import LabelMap, Scheme
from bids_infantseg.synth.outputs import check_label_sets, class_labels
from bids_infantseg.synth.procedural import Procedural

__all__ = ["ATLAS_HELD_OUT", "ATLAS_TO_GEN", "Anatomy", "FetalAtlas", "GEN_TO_DRAWEM9",
           "GeneratorConfig", "LabelMap", "Phantom", "Procedural", "Scheme", "atlas_folders",
           "brain_volume_ml", "check_label_sets", "grid_affine", "label_map", "load_generator",
           "phantom", "skull_strip", "synthesize_image", "training_volume",
           "training_volume_sets"]


class Anatomy(Protocol):
    """A source of anatomy: generation labels at head coordinates ``p`` (3, X, Y, Z), mm.

    A source that knows more than its generation classes (a label map's own codes, a
    procedural head's own midline) also has ``paint_labels(p, rng, voxel_size, age_months,
    label_sets) -> (generation labels, {label set: labels})``, with the same random draws as
    ``paint``; any other source's labels are its classes' on the side of ``p[0]``. Both are
    given ``config=`` (the generator configuration) where it is not the default, so a source
    written before configurations existed still works with the default."""

    def paint(self, p: np.ndarray, rng: np.random.Generator, voxel_size: np.ndarray,
              age_months: float, *, config: GeneratorConfig | None = None) -> np.ndarray: ...


class Phantom(NamedTuple):
    """A synthetic scan: T2w-like image, DrawEM9 labels on the same grid, and its affine."""

    image: np.ndarray  # float32
    labels: np.ndarray  # int16, DrawEM9 indices
    affine: np.ndarray  # 4x4 voxel -> world (mm, RAS+)


def label_map(age_months: float, rng: np.random.Generator, shape: tuple[int, int, int],
              affine: np.ndarray, *, anatomy: Anatomy | None = None,
              rotation_deg: float | None = None, shift_mm: float | None = None,
              deform_mm: float | None = None,
              config: GeneratorConfig | None = None) -> np.ndarray:
    """Generation labels of one random head on the grid (``shape``, ``affine``).

    The head is centred near world (0, 0, 0), randomly posed (rotation up to ``rotation_deg``
    about each axis, shift up to ``shift_mm``) and smoothly deformed (``deform_mm``); None:
    the configuration's ``pose.phantom``. ``anatomy`` defaults to a procedural head.
    """
    pose = default_if_none(config).pose.phantom
    return _painted(age_months, rng, shape, affine, anatomy,
                    pose.rotation_deg if rotation_deg is None else rotation_deg,
                    pose.shift_mm if shift_mm is None else shift_mm,
                    pose.deform_mm if deform_mm is None else deform_mm, (), config)[0]


def _painted(age_months: float, rng: np.random.Generator, shape: tuple[int, int, int],
             affine: np.ndarray, anatomy: Anatomy | None, rotation_deg: float, shift_mm: float,
             deform_mm: float, label_sets: tuple[str, ...],
             config: GeneratorConfig | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``label_map``'s generation labels, and the labels of each of ``label_sets`` (not
    DrawEM9: callers take it from the generation labels, after any skull-strip); painted on
    one CPU thread (``fields.one_thread``)."""
    with one_thread():
        return _painted_here(age_months, rng, shape, affine, anatomy, rotation_deg, shift_mm,
                             deform_mm, label_sets, default_if_none(config))


def _painted_here(age_months: float, rng: np.random.Generator, shape: tuple[int, int, int],
                  affine: np.ndarray, anatomy: Anatomy | None, rotation_deg: float,
                  shift_mm: float, deform_mm: float, label_sets: tuple[str, ...],
                  config: GeneratorConfig) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``_painted``'s work."""
    voxel_size = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    head_to_world = np.eye(4)
    head_to_world[:3, :3] = rotation(rng.uniform(-rotation_deg, rotation_deg, 3))
    head_to_world[:3, 3] = rng.uniform(-shift_mm, shift_mm, 3)
    p = grid_points(shape, affine, head_to_world)
    p *= rng.normal(1.0, config.pose.scale_sd, 3).astype(np.float32)[:, None, None, None]
    p = deform(p, rng, voxel_size, deform_mm, config.pose.deform_scale_mm)
    anatomy = anatomy or Procedural()
    given = {} if config is DEFAULT else {"config": config}  # sources of the Protocol's past
    if not label_sets:
        return anatomy.paint(p, rng, voxel_size, age_months, **given), {}
    if hasattr(anatomy, "paint_labels"):
        return anatomy.paint_labels(p, rng, voxel_size, age_months, label_sets, **given)
    right = p[0] >= 0
    gen = anatomy.paint(p, rng, voxel_size, age_months, **given)
    return gen, class_labels(gen, right, label_sets)


def phantom(age_months: float, seed: int, shape: tuple[int, int, int] = (128, 144, 128),
            voxel_size=1.2, *, axcodes: str = "RAS", oblique_deg=(0.0, 0.0, 0.0),
            anatomy: Anatomy | None = None, config: GeneratorConfig | None = None,
            device: Device = None) -> Phantom:
    """A realistic native-looking synthetic T2w scan (intensities ~0-1000) with its labels
    (the age's T2 contrast: never SynthSeg-style random contrast)."""
    rng = np.random.default_rng(seed)
    affine = grid_affine(shape, voxel_size, axcodes=axcodes, oblique_deg=oblique_deg)
    gen = label_map(age_months, rng, shape, affine, anatomy=anatomy, config=config)
    image = synthesize_image(gen, rng, age_months, np.sqrt((affine[:3, :3] ** 2).sum(axis=0)),
                             random_contrast=0.0, config=config, device=device)
    return Phantom((1000.0 * image).astype(np.float32), GEN_TO_DRAWEM9[gen], affine)


def skull_strip(image: np.ndarray, gen: np.ndarray, rng: np.random.Generator,
                voxel_size: float, max_margin_mm: float | None = None,
                max_cut_mm: float | None = None, *,
                config: GeneratorConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Zero the image and label (0) what a brain extraction tool would remove.

    The mask's edge lies at a signed distance from the surface of the brain and its CSF that
    varies smoothly over the head, from ``max_cut_mm`` inside the CSF (tight masks cut into
    it; brain tissue itself is never removed) to ``max_margin_mm`` outside (some skull or
    scalp remains); otherwise (``skull_strip.random_edge_probability``) it hugs the surface.
    None: the configuration's.
    """
    removed = _stripped(gen, rng, voxel_size, max_margin_mm, max_cut_mm, config)
    return np.where(removed, 0.0, image).astype(np.float32), np.where(removed, 0, gen)


def _stripped(gen: np.ndarray, rng: np.random.Generator, voxel_size: float,
              max_margin_mm: float | None = None, max_cut_mm: float | None = None,
              config: GeneratorConfig | None = None) -> np.ndarray:
    """Where ``skull_strip`` removes the head (bool)."""
    with one_thread():
        return _stripped_here(gen, rng, voxel_size, max_margin_mm, max_cut_mm,
                              default_if_none(config))


def _stripped_here(gen: np.ndarray, rng: np.random.Generator, voxel_size: float,
                   max_margin_mm: float | None, max_cut_mm: float | None,
                   config: GeneratorConfig) -> np.ndarray:
    """``_stripped``'s work."""
    s = config.skull_strip
    margin_mm = s.max_margin_mm if max_margin_mm is None else max_margin_mm
    cut_mm = s.max_cut_mm if max_cut_mm is None else max_cut_mm
    intracranial = GEN_INTRACRANIAL[gen]
    # signed distance (mm) from the voxel's centre to the surface half a voxel out, exact
    # within the margins (beyond them it only has to stay beyond them)
    signed = (distance_inside(~intracranial, voxel_size, margin_mm + voxel_size)
              - distance_inside(intracranial, voxel_size, cut_mm + voxel_size)).numpy()
    signed -= np.where(intracranial, -0.5, 0.5) * voxel_size
    spacing = np.full(3, voxel_size)
    edge = (rng.uniform(-cut_mm, margin_mm) if rng.uniform() < s.random_edge_probability
            else rng.uniform(-0.5, 0.5) * voxel_size)
    margin = edge + 0.5 * max(abs(edge), voxel_size) * separable_noise(
        rng, gen.shape, spacing, s.edge_noise_scale_mm).numpy()
    tissue = intracranial & (gen != 1)  # brain itself: everything intracranial but CSF
    return (signed > np.clip(margin, -cut_mm, margin_mm)) & ~tissue


def training_volume(rng: np.random.Generator, age_months: float, grid_shape: tuple[int, int, int],
                    voxel_size: float, *, anatomy: Anatomy | None = None,
                    rotation_deg: float | None = None, strip_probability: float = 0.0,
                    labels: str = "drawem9", config: GeneratorConfig | None = None,
                    device: Device = None) -> tuple[np.ndarray, np.ndarray]:
    """(image float32 ~[0, 1], labels int16 of the label set ``labels``) drawn directly on a
    canonical RAS grid, skull-stripped with probability ``strip_probability`` (drawn last, so
    the head itself does not depend on it)."""
    image, drawn = training_volume_sets(rng, age_months, grid_shape, voxel_size,
                                        anatomy=anatomy, rotation_deg=rotation_deg,
                                        strip_probability=strip_probability,
                                        label_sets=(labels,), config=config, device=device)
    return image, drawn[labels]


def training_volume_sets(rng: np.random.Generator, age_months: float,
                         grid_shape: tuple[int, int, int], voxel_size: float, *,
                         anatomy: Anatomy | None = None, rotation_deg: float | None = None,
                         strip_probability: float = 0.0,
                         label_sets: Sequence[str] = ("drawem9",),
                         config: GeneratorConfig | None = None, device: Device = None,
                         ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``training_volume`` with the labels of several label sets of the same head (e.g. an
    aseg model's truth and the DrawEM9 truth it is compared on). Posed by the configuration's
    ``pose.training`` (``rotation_deg`` overrides its rotation); the image is synthesised on
    ``device``."""
    label_sets = check_label_sets(label_sets)
    config = default_if_none(config)
    pose = config.pose.training
    affine = grid_affine(grid_shape, voxel_size)
    gen, drawn = _painted(age_months, rng, grid_shape, affine, anatomy,
                          pose.rotation_deg if rotation_deg is None else rotation_deg,
                          pose.shift_mm, pose.deform_mm,
                          tuple(s for s in label_sets if s != "drawem9"), config)
    image = synthesize_image(gen, rng, age_months, voxel_size, config=config, device=device)
    if strip_probability and rng.uniform() < strip_probability:
        removed = _stripped(gen, rng, voxel_size, config=config)
        image = np.where(removed, 0.0, image).astype(np.float32)
        gen = np.where(removed, 0, gen)
        drawn = {name: np.where(removed, 0, labels) for name, labels in drawn.items()}
    if "drawem9" in label_sets:
        drawn["drawem9"] = GEN_TO_DRAWEM9[gen]
    return image, {name: drawn[name] for name in label_sets}

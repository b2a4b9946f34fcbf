"""Procedural heads: every structure drawn from ellipsoids and smooth random fields."""

from __future__ import annotations

import numpy as np

from bids_infantseg.synth.config import GeneratorConfig, default_if_none
from bids_infantseg.synth.fields import separable_noise, smooth_noise
from bids_infantseg.synth.geometry import Frame, ellipsoid, inside_ellipsoid
from bids_infantseg.synth.head import cortical_ribbon, paint_head, paint_hippocampi
from bids_infantseg.synth.outputs import class_labels


def _procedural_labels(p: np.ndarray, rng: np.random.Generator, voxel_size: np.ndarray,
                       age_months: float,
                       config: GeneratorConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Generation labels of a procedural head at head coordinates ``p`` (3, X, Y, Z), and
    the signed distance (mm) from its midline, which the interhemispheric fissure follows."""
    t = float(np.clip(age_months, 0.0, 24.0)) / 12.0
    shape = p.shape[1:]
    ratio = np.array([rng.normal(0.80, 0.04), 1.0, rng.normal(0.74, 0.04)])
    config = default_if_none(config)
    cerebrum_ml = 0.88 * config.brain_volume.ml(age_months) * rng.uniform(0.88, 1.12)
    b = (cerebrum_ml * 1000.0 * 3.0 / (4.0 * np.pi * ratio.prod())) ** (1.0 / 3.0)
    frame = Frame(ratio * b)
    a, b, c = frame.radii

    cbm_scale = (1.0 + 0.35 * min(t, 1.0)) * rng.uniform(0.9, 1.1)
    d_cbm = ellipsoid(p, frame.at(rng.normal(0, 0.02), -0.7, -0.62),
                       (0.55 * a * cbm_scale, 0.33 * b * cbm_scale, 0.33 * c * cbm_scale))
    d_bs = ellipsoid(p, frame.at(0, -0.3, -0.8), (0.14 * a, 0.14 * b, 0.5 * c),
                      tilt_deg=rng.uniform(10, 25))
    d_cer = ellipsoid(p, (0, 0, 0), frame.radii)
    d_brain = np.minimum(np.minimum(d_cer, d_cbm), d_bs)

    gen = np.zeros(shape, dtype=np.uint8)
    paint_head(gen, p, d_brain, frame, rng, voxel_size, age_months, config)

    # Cerebrum: depth from the nearest CSF (outer surface, sulci, fissure, tentorium).
    folds = smooth_noise(rng, shape, voxel_size, rng.uniform(6.0, 9.0)).numpy()
    sulcal_depth = (6.0 + 6.0 * t) * (
        0.7 + 0.3 * separable_noise(rng, shape, voxel_size, 50.0).numpy())
    width = rng.uniform(0.25, 0.35)
    depth = -d_cer - sulcal_depth * np.exp(-(folds / width) ** 2)
    midline = p[0] - 1.5 * separable_noise(rng, shape, voxel_size, 60.0).numpy()
    callosum_arc = (p[1] / (0.62 * b)) ** 2 + ((p[2] + 0.1 * c) / (0.25 * c)) ** 2
    fissure = np.where(callosum_arc > 1.0, np.abs(midline) - rng.uniform(0.6, 1.2), np.inf)
    depth = np.minimum(np.minimum(depth, fissure), d_cbm - 1.5)
    thickness = (2.2 + 0.6 * t) * rng.uniform(0.85, 1.15)
    in_cerebrum = d_cer < 0
    gen[in_cerebrum] = np.where(depth[in_cerebrum] < 0, 1, 3)
    cortical_ribbon(gen, in_cerebrum & (gen == 3), thickness, voxel_size)

    folia = d_cbm + 1.5 * np.exp(-(folds / 0.3) ** 2)
    gen[(d_cbm < 0) & (d_cer < 0)] = 1
    gen[folia < 0] = 6

    for side in (-1, 1):
        j = rng.uniform(0.9, 1.1, size=3)
        thalamus = inside_ellipsoid(p, frame.at(side * 0.13 * j[0], -0.12, -0.06 * j[1]),
                                    (0.15 * a * j[1], 0.26 * b * j[2], 0.2 * c * j[0]))
        lentiform = inside_ellipsoid(p, frame.at(side * 0.28 * j[2], 0.1, -0.05 * j[0]),
                                     (0.12 * a * j[0], 0.3 * b * j[1], 0.22 * c * j[2]))
        gen[thalamus | lentiform] = 7
    size = rng.uniform(0.6, 1.8) * (1.0 - 0.2 * min(t, 1.0))
    horns, ventricles = {}, np.zeros(shape, bool)
    bent = np.stack([p[0], p[1], p[2] + 0.3 * c * (p[1] / b) ** 2])  # the ventricles' arch
    for side in (-1, 1):
        j = rng.uniform(0.85, 1.15, size=3)
        body = inside_ellipsoid(bent, frame.at(side * (0.1 + 0.02 * size) * j[0], 0.0,
                                               0.18 * j[1]),
                                (0.06 * a * size * j[2], 0.45 * b, 0.09 * c * size))
        horns[side] = np.array(frame.at(side * 0.27 * j[0], -0.2, -0.22 * j[1]))
        horn = inside_ellipsoid(p, horns[side], (0.03 * a * size, 0.2 * b, 0.04 * c * size),
                                tilt_deg=-35)
        ventricles |= body | horn
    paint_hippocampi(gen, p, frame, rng, horns)
    gen[ventricles] = 5
    third = inside_ellipsoid(p, frame.at(0, -0.05, -0.1), (1.0 * size + 0.5, 0.15 * b, 0.12 * c))
    gen[third] = 5
    gen[d_bs < 0] = 8
    return gen, midline



class Procedural:
    """Anatomy drawn procedurally (no files): a new head for every draw."""

    def paint(self, p: np.ndarray, rng: np.random.Generator, voxel_size: np.ndarray,
              age_months: float, *, config: GeneratorConfig | None = None) -> np.ndarray:
        return _procedural_labels(p, rng, voxel_size, age_months, config)[0]

    def paint_labels(self, p: np.ndarray, rng: np.random.Generator, voxel_size: np.ndarray,
                     age_months: float, label_sets: tuple[str, ...], *,
                     config: GeneratorConfig | None = None
                     ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Generation labels and each label set's, sided by the head's own midline (the
        fissure's), so both banks of the fissure get their hemisphere's cortex."""
        gen, midline = _procedural_labels(p, rng, voxel_size, age_months, config)
        return gen, class_labels(gen, midline >= 0, label_sets)

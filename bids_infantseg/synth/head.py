"""Painting shared by every source: the head around a brain, hippocampi where a source has
none, and an even cortical ribbon."""

from __future__ import annotations

import numpy as np

from bids_infantseg.synth.classes import EYE, FAT, SKULL
from bids_infantseg.synth.config import GeneratorConfig, at, default_if_none, draw
from bids_infantseg.synth.fields import distance_inside, separable_noise
from bids_infantseg.synth.geometry import Frame, inside_ellipsoid


def paint_head(gen: np.ndarray, p: np.ndarray, d_brain: np.ndarray, frame: Frame,
               rng: np.random.Generator, voxel_size: np.ndarray, age_months: float,
               config: GeneratorConfig | None = None) -> None:
    """Neck, face, eyes and the CSF/skull/fat/scalp shells around a brain (in place), their
    widths drawn from the configuration's ``head``."""
    h = default_if_none(config).head
    a, b, c = frame.radii
    shell_noise = separable_noise(rng, gen.shape, voxel_size, h.shell_noise_scale_mm).numpy()
    csf = draw(rng, h.csf_mm) + h.csf_noise_mm * shell_noise  # newborn: 1-4 mm
    skull = csf + draw(rng, h.skull_mm) + h.skull_growth_mm_per_year * age_months / 12.0
    fat = skull + draw(rng, h.fat_mm)
    scalp = fat + draw(rng, h.scalp_mm) + h.scalp_noise_mm * shell_noise
    neck = inside_ellipsoid(p, (0, -0.25 * b, -1.6 * c), (0.75 * a, 0.55 * b, 1.0 * c))
    face = inside_ellipsoid(p, frame.at(0, 0.55, -0.8), (0.8 * a, 0.6 * b, 0.55 * c))
    gen[neck | face | (d_brain < scalp)] = 4
    gen[(d_brain < fat) & (d_brain >= skull)] = FAT
    gen[(d_brain < skull) & (d_brain >= csf)] = SKULL
    gen[d_brain < csf] = 1
    eye_r = at(h.eye_radius_mm, age_months) * draw(rng, h.eye_radius_jitter)
    for side in (-1, 1):
        center = frame.at(side * rng.uniform(0.3, 0.36), rng.uniform(0.92, 1.0),
                          rng.uniform(-0.6, -0.5))
        eye = inside_ellipsoid(p, center, (eye_r, eye_r, eye_r))
        gen[eye & (d_brain > csf)] = EYE


def paint_hippocampi(gen: np.ndarray, p: np.ndarray, frame: Frame, rng: np.random.Generator,
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
        inside = inside_ellipsoid(p, center, radii, tilt_deg=rng.uniform(15, 30))
        gen[inside & np.isin(gen, allowed)] = 9


def cortical_ribbon(gen: np.ndarray, mantle: np.ndarray, thickness_mm: float,
                     voxel_size: np.ndarray, inside: np.ndarray | None = None) -> None:
    """Label the ``mantle`` (cerebral tissue) cortex within ``thickness_mm`` of CSF or the
    cerebrum's surface, white matter deeper (in place): a ribbon of even thickness that
    lines every sulcus. Depth is to the voxel's centre, so the outermost voxel is always
    cortex. ``inside`` (default: the mantle, ventricles and deep grey matter) is what the
    depth is measured within; everything else counts as surface."""
    if inside is None:
        inside = mantle | np.isin(gen, (5, 7))
    step = float(np.min(voxel_size))
    limit = max(thickness_mm + 0.5 * step, step)
    depth = distance_inside(inside, voxel_size, limit + step).numpy()
    gen[mantle] = np.where(depth[mantle] <= limit, 2, 3)


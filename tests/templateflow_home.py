"""A tiny local TemplateFlow home with synthetic MNIInfant heads, for tests that run offline.

Pointing templateflow at it needs care: ``templateflow.api`` reads ``TEMPLATEFLOW_HOME`` once,
when templateflow is first imported, and memoises its index, so ``monkeypatch.setenv`` after
that import does not move ``templateflow.api``. ``bids_infantseg.io.templates`` reads the
variable at call time, so ``monkeypatch.setenv("TEMPLATEFLOW_HOME", str(home))`` is enough
for it; code calling ``templateflow.api`` directly would need a fresh subprocess with the
variable set before import.

The head is an analytic function of world (RAS mm) coordinates, so a scan in any pose can be
sampled on any grid without interpolation. It is asymmetric left-right (unequal ventricles,
a left-only lesion) and front-back (eyes), so a wrong orientation cannot match it.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

FIELD_OF_VIEW_RAS = ((-96.0, 98.0), (-134.0, 98.0), (-72.0, 86.0))
"""Extent of the real tpl-MNIInfant res-1 grid (origin -96,-134,-72; 195x233x159 at 1 mm)."""

HEAD_CENTRE_RAS = np.array([0.0, -18.0, 5.0])
HEAD_SEMI_AXES_MM = np.array([47.0, 60.0, 50.0])
"""A term newborn's head, roughly; older cohorts are scaled up."""

# (centre offset from head centre, semi-axes, intensity), painted in order; offsets and
# axes are in mm at scale 1. Shells are fractions of the head ellipsoid.
_SHELLS = ((1.0, 0.55), (0.93, 0.08), (0.88, 1.0), (0.82, 0.45), (0.68, 0.7))
_BLOBS = (
    ((-9.0, 2.0, 8.0), (5.0, 20.0, 7.0), 1.0),  # left lateral ventricle (larger)
    ((8.0, 0.0, 8.0), (3.5, 15.0, 5.0), 1.0),  # right lateral ventricle
    ((0.0, -35.0, -22.0), (20.0, 11.0, 10.0), 0.4),  # cerebellum
    ((-25.0, 20.0, 20.0), (6.0, 6.0, 6.0), 0.2),  # left-only lesion
    ((-20.0, 48.0, -22.0), (9.0, 9.0, 9.0), 0.95),  # left eye
    ((20.0, 48.0, -22.0), (9.0, 9.0, 9.0), 0.95),  # right eye
)
_EDGE_MM = 1.5


def cohort_scale(cohort: int) -> float:
    """Heads grow with age, so cohorts differ visibly."""
    return 1.0 + 0.04 * (cohort - 1)


def template_grid(voxel_size: float = 2.0) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape and affine covering the real MNIInfant field of view at this voxel size."""
    lows = np.array([lo for lo, _ in FIELD_OF_VIEW_RAS])
    extent = np.array([hi - lo + 1.0 for lo, hi in FIELD_OF_VIEW_RAS])
    shape = tuple(int(n) for n in np.ceil(extent / voxel_size))
    affine = np.diag([voxel_size, voxel_size, voxel_size, 1.0])
    affine[:3, 3] = lows - (voxel_size - 1.0) / 2.0
    return shape, affine


def head_intensity(points_ras: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """T2w-like intensity (0..1) of the synthetic head at world points ``(..., 3)``."""
    image = np.zeros(points_ras.shape[:-1], np.float32)
    for fraction, value in _SHELLS:
        _paint(image, points_ras, HEAD_CENTRE_RAS, HEAD_SEMI_AXES_MM * fraction * scale, value)
    for offset, axes, value in _BLOBS:
        centre = HEAD_CENTRE_RAS + np.asarray(offset) * scale
        _paint(image, points_ras, centre, np.asarray(axes) * scale, value)
    return image


def synthetic_head(
    shape: tuple[int, int, int],
    affine: np.ndarray,
    *,
    scale: float = 1.0,
    pose: np.ndarray | None = None,
) -> np.ndarray:
    """The head sampled on a voxel grid; ``pose`` (4x4, RAS) moves the head in the world."""
    world = _world(shape, affine)
    if pose is not None:
        inverse = np.linalg.inv(pose)
        world = world @ inverse[:3, :3].T + inverse[:3, 3]
    return head_intensity(world, scale)


def build_templateflow_home(
    root: Path, cohorts: tuple[int, ...] = (1,), voxel_size: float = 2.0
) -> Path:
    """Write tpl-MNIInfant with a head T2w and brain mask per cohort; return the home.

    Files are named ``res-1`` like the real 1 mm template but sampled at ``voxel_size``
    (2 mm by default) to keep tests fast; template_description.json says so.
    """
    root = Path(root)
    tpl = root / "tpl-MNIInfant"
    tpl.mkdir(parents=True, exist_ok=True)
    shape, affine = template_grid(voxel_size)
    for cohort in cohorts:
        folder = tpl / f"cohort-{cohort}"
        folder.mkdir(exist_ok=True)
        stem = folder / f"tpl-MNIInfant_cohort-{cohort}_res-1"
        scale = cohort_scale(cohort)
        _save(synthetic_head(shape, affine, scale=scale), affine, Path(f"{stem}_T2w.nii.gz"))
        brain_axes = HEAD_SEMI_AXES_MM * _SHELLS[3][0] * scale
        radius = np.linalg.norm((_world(shape, affine) - HEAD_CENTRE_RAS) / brain_axes, axis=-1)
        _save((radius < 1.0).astype(np.uint8), affine, Path(f"{stem}_desc-brain_mask.nii.gz"))
    _write_description(tpl, cohorts, shape, affine)
    return root


def _world(shape: tuple[int, int, int], affine: np.ndarray) -> np.ndarray:
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def _paint(image: np.ndarray, points: np.ndarray, centre, axes, value: float) -> None:
    """Blend a soft-edged ellipsoid into ``image`` (edge ~1.5 mm wide)."""
    radius = np.linalg.norm((points - centre) / axes, axis=-1)
    distance_mm = (radius - 1.0) * float(np.mean(axes))
    weight = 0.5 * (1.0 - np.tanh(distance_mm / _EDGE_MM))
    image *= 1.0 - weight
    image += value * weight


def _save(data: np.ndarray, affine: np.ndarray, path: Path) -> None:
    img = nib.Nifti1Image(data, affine)
    img.set_sform(affine, code=4)
    img.set_qform(affine, code=4)
    nib.save(img, path)


def _write_description(
    tpl: Path, cohorts: tuple[int, ...], shape: tuple[int, int, int], affine: np.ndarray
) -> None:
    # Imported here so tests that only sample heads do not import templateflow (slow, and
    # its import reads TEMPLATEFLOW_HOME).
    from bids_infantseg.io.templates import COHORT_AGE_MONTHS

    description = {
        "Identifier": "MNIInfant",
        "Name": "Synthetic stand-in for the MNI infant atlases (tests only).",
        "BIDSVersion": "1.1.0",
        "TemplateFlowVersion": "1.0.0",
        "License": "CC0",
        "cohort": {
            str(c): {"age": list(COHORT_AGE_MONTHS[c]), "units": "months"} for c in cohorts
        },
        "res": {
            "1": {
                "origin": affine[:3, 3].tolist(),
                "shape": list(shape),
                "zooms": np.diag(affine)[:3].tolist(),
            }
        },
    }
    (tpl / "template_description.json").write_text(json.dumps(description, indent=2))

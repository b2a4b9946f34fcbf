"""Tiny stand-ins for the validation protocol's data: aseg maps, a fetal atlas, the four MIT
templates and a training configuration naming them, small enough for a 32^3 model grid."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

from bids_infantseg.train.validation import TEMPLATE_MONTHS


def _ellipsoid(shape: tuple[int, int, int], radii: tuple[float, float, float],
               center: tuple[float, float, float] | None = None) -> np.ndarray:
    grid = np.indices(shape, dtype=float)
    center = np.array(center if center is not None else [(s - 1) / 2 for s in shape])
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, center, radii, strict=True)) <= 1.0


def aseg_map(shape: tuple[int, int, int] = (40, 46, 40)) -> np.ndarray:
    """A brain in FreeSurfer aseg codes (3 mm voxels): cortex over white matter, lateral
    ventricles, thalamus, hippocampus, cerebellum and brainstem, left (x below the middle)
    and right codes apart."""
    left = (np.arange(shape[0]) < shape[0] // 2)[:, None, None]
    codes = np.zeros(shape, np.int16)
    cerebrum = _ellipsoid(shape, (17, 20, 14), (19.5, 25, 22))
    codes[cerebrum] = np.where(np.broadcast_to(left, shape), 3, 42)[cerebrum]
    white = _ellipsoid(shape, (14, 17, 11), (19.5, 25, 22))
    codes[white] = np.where(np.broadcast_to(left, shape), 2, 41)[white]
    for code, center, radii in ((4, (14, 27, 24), (3, 8, 3)), (43, (25, 27, 24), (3, 8, 3)),
                                (10, (16, 22, 19), (3, 4, 3)), (49, (23, 22, 19), (3, 4, 3)),
                                (17, (10, 20, 14), (2, 5, 2)), (53, (29, 20, 14), (2, 5, 2)),
                                (8, (14, 8, 8), (6, 5, 4)), (47, (25, 8, 8), (6, 5, 4)),
                                (16, (19.5, 14, 8), (3, 3, 7))):
        codes[_ellipsoid(shape, radii, center)] = code
    return codes


def write_protocol_data(root: Path, *, templates: bool = True) -> Path:
    """Write aseg maps (1 and 2 months; 2 held out), one held-out atlas, the templates and a
    configuration; return the configuration's path."""
    affine = np.diag([-3.0, 3.0, 3.0, 1.0])
    asegs = root / "infant-aseg-labels"
    asegs.mkdir(parents=True)
    for name in ("1mo_aseg.nii.gz", "2mo_aseg.nii.gz"):
        nib.save(nib.Nifti1Image(aseg_map(), affine), asegs / name)
    atlas = root / "fetal-sb-atlas-cc0" / "fetal_SB_atlas_GA23_notoperated"
    atlas.mkdir(parents=True)
    labels = np.zeros((30, 30, 30), np.uint8)
    labels[5:25, 5:25, 5:25] = 4
    labels[7:23, 7:23, 7:23] = 5
    labels[9:21, 9:21, 9:21] = 1
    labels[13:17, 12:18, 13:17] = 2
    labels[10:13, 6:10, 9:13] = 3
    atlas_affine = np.diag([0.8, 0.8, 0.8, 1.0])
    nib.save(nib.Nifti1Image(labels, atlas_affine), atlas / "parcellation.nii.gz")
    brightness = np.array([0, 300, 900, 500, 1000, 450, 400, 350, 300], np.float32)
    nib.save(nib.Nifti1Image(brightness[labels], atlas_affine), atlas / "srr.nii.gz")
    if templates:
        folder = root / "infant-t2w-templates-mit"
        folder.mkdir()
        for month in TEMPLATE_MONTHS:
            image = np.where(_ellipsoid((60, 70, 60), (22, 27, 20)), 500.0, 0.0)
            image[_ellipsoid((60, 70, 60), (15, 20, 13))] = 800.0 - 30 * month
            nib.save(nib.Nifti1Image(image.astype(np.float32), np.diag([2.0, 2.0, 2.0, 1.0])),
                     folder / f"Template-Month{month}-T2w.nii.gz")
    config = {
        "sources": [
            {"name": "procedural", "kind": "procedural", "weight": 0.2},
            {"name": "atlases", "kind": "fetal_atlas", "weight": 0.2,
             "root": str(root / "fetal-sb-atlas-cc0"),
             "held_out": ["fetal_SB_atlas_GA23_notoperated"]},
            {"name": "asegs", "kind": "label_map", "weight": 0.6, "root": str(asegs),
             "scheme": "freesurfer-aseg",
             "files": {"1mo_aseg.nii.gz": 1, "2mo_aseg.nii.gz": 2},
             "held_out": ["2mo_aseg.nii.gz"]},
        ],
        "ages": {"range_months": [0, 12], "newborn_share": 0.35, "age_window_months": 6},
    }
    path = root / "config.json"
    path.write_text(json.dumps(config))
    return path

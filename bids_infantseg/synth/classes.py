"""Generation classes: the tissues a synthetic image is painted with.

Why a class table apart from any label set: the image needs finer distinctions than the
labels (skull, fat and eyes look different but are all "Background" in DrawEM9; the newborn
thalamus is darker on T2 than the caudate), and one table lets every source of anatomy (a
procedural head, a fetal atlas, an infant aseg map) be painted the same way. Each class has
an age-aware T2 prior (its mean intensity at term birth and its change over the first year:
newborn WM brighter than GM, isointense around 6 months, adult-like by 12) and one output
label per label set the project trains.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class GenClass:
    """One tissue: its name, DrawEM9 output label, T2 prior, whether a skull-strip keeps it,
    and its aseg output where a source says no more than the class: a FreeSurfer name
    without its side (``Cerebral-Cortex``: Left- or Right- by the voxel's side) or a partial
    label group of the aseg set (``Deep-Grey-Matter``: a fetal atlas does not tell thalamus
    from putamen)."""

    name: str
    drawem9: int
    t2_birth: float  # mean T2w intensity at term (CSF ~1)
    t2_per_year: float  # change of that mean over the first year (linear in between)
    intracranial: bool
    aseg: str


CLASSES: tuple[GenClass, ...] = (
    GenClass("air", 0, 0.02, 0.0, False, "Unknown"),
    GenClass("csf", 1, 0.95, 0.0, True, "CSF"),
    GenClass("cortical_gm", 2, 0.47, -0.02, True, "Cerebral-Cortex"),
    # white matter, unmyelinated at birth: brighter than GM
    GenClass("wm", 3, 0.68, -0.36, True, "Cerebral-White-Matter"),
    GenClass("scalp", 4, 0.30, 0.0, False, "Unknown"),  # scalp, muscle, neck, face
    GenClass("ventricle", 5, 0.97, 0.0, True, "Ventricles"),
    GenClass("cerebellum", 6, 0.50, -0.10, True, "Cerebellum"),
    GenClass("deep_gm", 7, 0.43, -0.07, True, "Deep-Grey-Matter"),  # caudate, putamen, accumbens
    GenClass("brainstem", 8, 0.42, -0.12, True, "Brain-Stem"),
    GenClass("hippocampus", 9, 0.52, -0.04, True, "Hippocampus-Amygdala"),
    GenClass("skull", 4, 0.06, 0.0, False, "Unknown"),
    GenClass("eye", 4, 0.98, 0.0, False, "Unknown"),
    GenClass("fat", 4, 0.62, 0.0, False, "Unknown"),
    # Finer classes that only label-map sources (infant asegs) carry:
    GenClass("thalamus", 7, 0.38, -0.05, True, "Thalamus"),  # myelinating at term: dark
    GenClass("pallidum", 7, 0.36, -0.06, True, "Pallidum"),
    GenClass("cerebellar_wm", 6, 0.42, -0.14, True, "Cerebellum-White-Matter"),
    GenClass("choroid_plexus", 5, 0.60, -0.05, True, "Lateral-Ventricle"),
    GenClass("amygdala", 9, 0.50, -0.05, True, "Amygdala"),
    GenClass("ventral_dc", 7, 0.38, -0.08, True, "VentralDC"),
    GenClass("vessel", 7, 0.25, 0.0, True, "Cerebral-White-Matter"),
    GenClass("third_fourth_ventricle", 1, 0.96, 0.0, True, "3rd-4th-Ventricle"),
)

INDEX = {c.name: i for i, c in enumerate(CLASSES)}
"""Class name -> generation label."""
CSF, CGM, WM, SCALP, VENTRICLE = 1, 2, 3, 4, 5
CEREBELLUM, DEEP_GM, BRAINSTEM, HIPPOCAMPUS, SKULL, EYE, FAT = 6, 7, 8, 9, 10, 11, 12
"""The classes every source paints (labels 0-9 coincide with DrawEM9's)."""

GEN_TO_DRAWEM9 = np.array([c.drawem9 for c in CLASSES], dtype=np.int16)
"""Generation label -> DrawEM9 index."""
GEN_INTRACRANIAL = np.array([c.intracranial for c in CLASSES])
"""Generation labels a skull-strip keeps: brain and CSF."""
_T2_BIRTH = np.array([c.t2_birth for c in CLASSES])
_T2_PER_YEAR = np.array([c.t2_per_year for c in CLASSES])


def contrast_centres(age_months: float) -> np.ndarray:
    """Mean T2w intensity per generation class at an age (arbitrary units, CSF ~1)."""
    t = float(np.clip(age_months / 12.0, 0.0, 1.0))
    return (_T2_BIRTH + _T2_PER_YEAR * t).astype(np.float32)


def brain_volume_ml(age_months: float) -> float:
    """Typical brain volume: ~400 mL at term birth, fast growth, ~900 mL at 12 months."""
    t = float(np.clip(age_months, 0.0, 24.0))
    return 400.0 + 500.0 * (1.0 - np.exp(-t / 6.0)) / (1.0 - np.exp(-2.0))

"""Generation classes: the tissues a synthetic image is painted with.

Why a class table apart from any label set: the image needs finer distinctions than the
labels (skull, fat and eyes look different but are all "Background" in DrawEM9; the newborn
thalamus is darker on T2 than the caudate), and one table lets every source of anatomy (a
procedural head, a fetal atlas, an infant aseg map) be painted the same way. The table, each
class's T2 curve over the first year (newborn WM brighter than GM, isointense around 6-8
months, adult-like by 12) and its output label per label set are data: the generator
configuration (``config.py``, ``data/synth/generators/default.json``).
"""

from __future__ import annotations

import numpy as np

from bids_infantseg.synth.config import DEFAULT, GenClass, GeneratorConfig, default_if_none

__all__ = ["CLASSES", "GEN_INTRACRANIAL", "GEN_TO_DRAWEM9", "GenClass", "INDEX",
           "brain_volume_ml", "contrast_centres"]

CLASSES: tuple[GenClass, ...] = DEFAULT.classes
"""The generation classes; every generator configuration has this table (but T2 curves)."""
INDEX = {c.name: i for i, c in enumerate(CLASSES)}
"""Class name -> generation label."""
CSF, CGM, WM, SCALP, VENTRICLE = 1, 2, 3, 4, 5
CEREBELLUM, DEEP_GM, BRAINSTEM, HIPPOCAMPUS, SKULL, EYE, FAT = 6, 7, 8, 9, 10, 11, 12
"""The classes every source paints (labels 0-9 coincide with DrawEM9's)."""
assert [INDEX[n] for n in ("csf", "cortical_gm", "wm", "scalp", "ventricle", "cerebellum",
                           "deep_gm", "brainstem", "hippocampus", "skull", "eye", "fat")] == \
    list(range(1, 13)), "the class table's first classes are painted by number"

GEN_TO_DRAWEM9 = np.array([c.drawem9 for c in CLASSES], dtype=np.int16)
"""Generation label -> DrawEM9 index."""
GEN_INTRACRANIAL = np.array([c.intracranial for c in CLASSES])
"""Generation labels a skull-strip keeps: brain and CSF."""


def contrast_centres(age_months: float, config: GeneratorConfig | None = None) -> np.ndarray:
    """Mean T2w intensity per generation class at an age (arbitrary units, CSF ~1)."""
    return default_if_none(config).contrast_centres(age_months)


def brain_volume_ml(age_months: float, config: GeneratorConfig | None = None) -> float:
    """Typical brain volume: ~400 mL at term birth, fast growth, ~900 mL at 12 months."""
    return default_if_none(config).brain_volume.ml(age_months)

"""Output labels of synthetic heads, per label set: DrawEM9, or lateralised FreeSurfer aseg.

Why apart from the generation classes: DrawEM9 follows from a voxel's class alone, but aseg
labels need a side and, where a source has them, distinctions the image does not need
(accumbens and putamen are one class to paint, two aseg labels). So each source says what it
can: a label map carries its own codes through painting (``labelmaps.py``, by its scheme's
``outputs``), and everything else (procedural heads, fetal atlases, what painting adds
around a brain) takes its class's aseg output (``GenClass.aseg``) on the side of the head's
midline it lies. Where a class stands for several aseg labels (a fetal atlas's deep grey
matter), that output is a partial label group (``model.labels.LABEL_GROUPS``), which the
training loss reads as "one of these".
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from bids_infantseg.model.labels import BUILTIN, LABEL_GROUPS
from bids_infantseg.synth.classes import CLASSES, GEN_TO_DRAWEM9

LABEL_SETS = ("drawem9", "aseg")
"""The label sets synthesis draws."""
SIDES = ("Left", "Right")


def check_label_sets(label_sets) -> tuple[str, ...]:
    """``label_sets`` as a tuple; an error naming any set synthesis cannot draw."""
    label_sets = tuple(label_sets)
    unknown = sorted(set(label_sets) - set(LABEL_SETS))
    if unknown:
        raise ValueError(f"synthesis draws labels of {', '.join(LABEL_SETS)}, not "
                         f"{', '.join(unknown)}")
    return label_sets


@lru_cache(maxsize=8)
def _names(label_set: str) -> dict[str, int]:
    """Label and group names of a set -> their indices."""
    names = {lab.name: lab.index for lab in BUILTIN[label_set].labels}
    names.update({group.name: group.index for group in LABEL_GROUPS.get(label_set, ())})
    return names


def sided_index(label_set: str, name: str) -> tuple[int, int]:
    """(left, right) index of a label or group named without its side (``Cerebral-Cortex``:
    ``Left-``/``Right-Cerebral-Cortex``), or twice the index of an unsided name (``CSF``)."""
    names = _names(label_set)
    if all(f"{side}-{name}" in names for side in SIDES):
        left, right = (names[f"{side}-{name}"] for side in SIDES)
        return left, right
    if name in names:
        return names[name], names[name]
    raise KeyError(f"label set {label_set!r} has no label or group {name!r} (with or "
                   "without Left-/Right-)")


@lru_cache(maxsize=8)
def class_table(label_set: str) -> np.ndarray:
    """``(classes, 2)`` int16: each generation class's label (left, right) in the set."""
    if label_set == "drawem9":
        return np.repeat(GEN_TO_DRAWEM9[:, None], 2, axis=1)
    return np.array([sided_index(label_set, c.aseg) for c in CLASSES], dtype=np.int16)


def class_labels(gen: np.ndarray, right: np.ndarray, label_sets) -> dict[str, np.ndarray]:
    """Each set's labels of generation classes ``gen`` on the side ``right`` (bool: right of
    the midline) of the head."""
    side = right.astype(np.intp)
    return {name: class_table(name)[gen, side] for name in label_sets}

"""Label volumes: voxel counts times the native voxel volume, one row per label of the set.

Why native space: the scan's own grid is where the labels were restored, so volumes do not
depend on the model's voxel size; counting is exact and needs no interpolation.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from bids_infantseg.model.labels import LabelSet

COLUMNS = ("index", "name", "voxels", "volume_mm3")


def voxel_volume_mm3(affine: np.ndarray) -> float:
    """Volume of one voxel: the absolute determinant of the affine's 3x3 part."""
    return float(abs(np.linalg.det(np.asarray(affine, float)[:3, :3])))


def label_volumes(labels: np.ndarray, affine: np.ndarray, label_set: LabelSet) -> pd.DataFrame:
    """One row per label in ``label_set`` (absent labels get 0): index, name, voxels, mm^3.

    Raises ValueError naming any value in ``labels`` that the set does not define.
    """
    counts = _counts(np.asarray(labels))
    known = {lab.index for lab in label_set.labels}
    unknown = sorted(set(counts) - known)
    if unknown:
        raise ValueError(f"label map has values not in label set {label_set.name!r}: "
                         f"{', '.join(str(u) for u in unknown)}")
    size = voxel_volume_mm3(affine)
    rows = [(lab.index, lab.name, counts.get(lab.index, 0), counts.get(lab.index, 0) * size)
            for lab in label_set.labels]
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    return table.astype({"index": "int64", "voxels": "int64", "volume_mm3": "float64"})


def brain_volume_mm3(table: pd.DataFrame, brain_indices: Iterable[int]) -> float:
    """Total volume of the rows whose index is a brain label (e.g. ``LabelSet.brain_indices``)."""
    return float(table.loc[table["index"].isin(list(brain_indices)), "volume_mm3"].sum())


def _counts(labels: np.ndarray) -> dict[int, int]:
    """Voxel count of every value present; bincount when the values allow it (fast)."""
    if labels.dtype.kind == "f":
        if not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
            raise ValueError("label map has non-integer values")
        labels = labels.astype(np.int64)
    elif labels.dtype.kind not in "iub":
        raise ValueError(f"label map of dtype {labels.dtype} is not integer")
    flat = labels.ravel()
    if flat.size and flat.min() >= 0:
        counts = np.bincount(flat)
        present = np.flatnonzero(counts)
        return {int(i): int(counts[i]) for i in present}
    values, counts = np.unique(flat, return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts, strict=True)}

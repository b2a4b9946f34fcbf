"""Overlap between a predicted and a reference label map, as the QuickNAT papers report it.

Dice ``2|A∩B| / (|A| + |B|)`` and accuracy ``|A∩B| / |B|`` (A predicted, B reference) per
label, in 3D on one grid, plus the confusion matrix. Pure numpy, so training, benchmarks
and users' own checks share one definition.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bids_infantseg.model.labels import LabelSet


def confusion_matrix(predicted: np.ndarray, reference: np.ndarray,
                     indices: np.ndarray) -> np.ndarray:
    """``counts[i, j]``: voxels with reference ``indices[i]`` predicted as ``indices[j]``."""
    if predicted.shape != reference.shape:
        raise ValueError(f"label maps differ in shape: {predicted.shape} vs {reference.shape}")
    indices = np.asarray(indices)
    lookup = np.full(int(max(indices.max(), predicted.max(), reference.max())) + 1, len(indices))
    lookup[indices] = np.arange(len(indices))
    n = len(indices) + 1  # last row/column: indices outside the set
    pairs = lookup[reference.ravel()] * n + lookup[predicted.ravel()]
    counts = np.bincount(pairs, minlength=n * n).reshape(n, n)
    if counts[-1].any() or counts[:, -1].any():
        present = set(np.unique(reference).tolist()) | set(np.unique(predicted).tolist())
        unknown = sorted(present - set(indices.tolist()))
        raise ValueError(f"label maps hold indices outside the label set: {unknown}")
    return counts[:-1, :-1]


def overlap_table(predicted: np.ndarray, reference: np.ndarray,
                  label_set: LabelSet) -> pd.DataFrame:
    """One row per label: index, name, dice, accuracy, predicted and reference voxels.

    Dice is NaN where a label is in neither map; accuracy is NaN where the reference lacks it.
    """
    counts = confusion_matrix(predicted, reference, label_set.indices)
    overlap = scores(counts)
    return pd.DataFrame({
        "index": label_set.indices.astype(int),
        "name": [lab.name for lab in label_set.labels],
        "dice": overlap["dice"],
        "accuracy": overlap["accuracy"],
        "predicted_voxels": counts.sum(axis=0).astype(np.int64),
        "reference_voxels": counts.sum(axis=1).astype(np.int64),
    })


def scores(counts: np.ndarray) -> dict[str, np.ndarray]:
    """Per-label ``dice`` and ``accuracy`` from confusions ``(..., K, K)`` (rows reference,
    columns predicted): Dice NaN where a label is in neither map, accuracy NaN where the
    reference lacks it. Works on a stack of confusions, e.g. one per held-out scan."""
    both = np.diagonal(counts, axis1=-2, axis2=-1).astype(float)
    reference = counts.sum(axis=-1).astype(float)
    predicted = counts.sum(axis=-2).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"accuracy": np.where(reference > 0, both / reference, np.nan),
                "dice": np.where(reference + predicted > 0,
                                 2 * both / (reference + predicted), np.nan)}

"""benchmarks/atropos_baseline.py: Atropos's classes are named by their intensity order, and
every method's labels are merged into CSF / cGM / WM / all-grey the same way."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

ants = pytest.importorskip("ants")

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("atropos_baseline",
                                              ROOT / "benchmarks" / "atropos_baseline.py")
baseline = importlib.util.module_from_spec(spec)
spec.loader.exec_module(baseline)


def _phantom(size: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """A ball in DrawEM9 labels (WM core, cortical GM shell, CSF shell, ventricle at the
    centre, head tissue around) and its newborn-like T2w: CSF > WM > GM."""
    grid = np.indices((size,) * 3).astype(float) - (size - 1) / 2
    radius = np.sqrt((grid ** 2).sum(axis=0))
    labels = np.select([radius < 2, radius < 5.5, radius < 8, radius < 10.5, radius < 12],
                       [5, 3, 2, 1, 4], 0).astype(np.int16)
    means = {0: 0.0, 1: 1000.0, 2: 300.0, 3: 650.0, 4: 500.0, 5: 1000.0}
    image = np.vectorize(means.get)(labels).astype(np.float32)
    image += np.random.default_rng(0).normal(0, 40, image.shape).astype(np.float32)
    return labels, image


def test_classes_named_by_intensity_order():
    labels, image = _phantom()
    mask = baseline.reference_mask(labels)
    assert not mask[labels == 4].any() and mask[labels == 5].all()
    right = baseline.atropos_tissues(ants, image, (1.0, 1.0, 1.0), mask,
                                     order=("csf", "wm", "gm"))
    assert not right[~mask].any()
    scores = baseline.tissue_dice(right, labels)
    assert min(scores["CSF"], scores["cGM"], scores["WM"]) > 0.9, scores
    # the older infant's order swaps grey and white matter on a newborn contrast
    wrong = baseline.tissue_dice(baseline.atropos_tissues(ants, image, (1.0, 1.0, 1.0), mask,
                                                          order=("csf", "gm", "wm")), labels)
    assert wrong["CSF"] > 0.9 and wrong["cGM"] < 0.1 and wrong["WM"] < 0.1, wrong


def test_name_classes_brightest_first():
    classes = np.array([1, 1, 2, 2, 3, 3])
    image = np.array([5.0, 5.0, 9.0, 9.0, 1.0, 1.0])
    assert baseline.name_classes(classes, image, ("csf", "wm", "gm")) == \
        {2: "csf", 1: "wm", 3: "gm"}
    coded = baseline.as_drawem9(classes, {2: "csf", 1: "wm", 3: "gm"})
    assert coded.tolist() == [3, 3, 1, 1, 2, 2]


def test_dice_merges_tissues():
    reference = np.array([1, 5, 2, 7, 9, 3, 3, 6, 0])
    # a method that calls the ventricle extra-axial CSF and all grey matter cortex
    predicted = np.array([1, 1, 2, 2, 2, 3, 2, 6, 0])
    scores = baseline.tissue_dice(predicted, reference)
    assert scores["CSF"] == 1.0  # {1, 5} merged: the 5 -> 1 swap costs nothing
    assert scores["cGM"] == pytest.approx(2 * 1 / (4 + 1))  # only the reference's 2 counts
    assert scores["all GM"] == pytest.approx(2 * 3 / (4 + 3))  # 7 and 9 count as grey
    assert scores["WM"] == pytest.approx(2 * 1 / (1 + 2))
    assert np.isnan(baseline.dice(np.zeros(3, bool), np.zeros(3, bool)))

"""Quality-control metrics of one segmentation: plain arrays in, numbers out.

Why these: a failed segmentation of an infant scan usually shows as an implausible brain
volume *for the age*, as views that disagree (each 2D network saw a different brain), as
labels broken into pieces, or as high model uncertainty (MC dropout). None needs a manual
reference, so every scan gets them.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd
from scipy import ndimage

from bids_infantseg.model.labels import LabelSet

# Plausible brain tissue volume (grey + white matter, deep grey, cerebellum, brainstem,
# hippocampus; fluid excluded), in mL, at postnatal weeks (corrected for preterm birth;
# negative = before term). Approximate, and wide on purpose: they mark volumes that are
# implausible at that age (almost always a failed segmentation or a wrong age), not
# abnormal growth. Anchors, read from published growth data: ~ 200-250 mL at 30-32 weeks
# post-menstrual (dHCP preterm cohort; Makropoulos et al. 2018), ~ 350-550 mL at term birth
# growing to ~ 800-1000 mL at 12 months (Knickmeyer et al. 2008, J Neurosci 28:12176;
# Holland et al. 2014, JAMA Neurol 71:1266: ~ 1 %/day just after birth, slowing to
# ~ 0.4 %/day at 3 months). Each anchor range is widened by about 15 % either side for
# normal variation and segmentation error. Between anchors: linear interpolation.
BOUNDS_ML = (
    # weeks, lower, upper
    (-10.0, 150.0, 350.0),
    (0.0, 300.0, 630.0),
    (13.0, 450.0, 850.0),
    (26.0, 560.0, 1000.0),
    (39.0, 630.0, 1100.0),
    (52.0, 680.0, 1150.0),
)
BOUNDS_SOURCE = ("approximate first-year brain tissue volume ranges (Knickmeyer 2008, Holland "
                 "2014, dHCP), widened ~15% for variation and segmentation error; not centiles")
MARGIN_WEEKS = 4.0
"""Ages up to this far past the last anchor (13 months) use it without a flag."""
VIEW_DICE_WARN = 0.7
"""Mean Dice between views' brain labels below this is flagged (trained models agree > 0.85)."""

_FLUID = ("csf", "cerebrospinal fluid", "ventricles", "ventricle")


@dataclass(frozen=True)
class Bounds:
    """Plausible brain tissue volume at one age, in mL, and whether it was extrapolated."""

    lower_ml: float
    upper_ml: float
    extrapolated: bool


def brain_volume_bounds(age_weeks: float | None) -> Bounds | None:
    """Age-appropriate bounds; None without an age (never an adult default)."""
    if age_weeks is None or not np.isfinite(age_weeks):
        return None
    weeks, lower, upper = (np.array(c) for c in zip(*BOUNDS_ML, strict=True))
    outside = age_weeks < weeks[0] - 2 or age_weeks > weeks[-1] + MARGIN_WEEKS
    return Bounds(float(np.interp(age_weeks, weeks, lower)),
                  float(np.interp(age_weeks, weeks, upper)), bool(outside))


def tissue_indices(labels: LabelSet) -> tuple[int, ...]:
    """Brain labels that are tissue, not fluid (by name or abbreviation)."""
    return tuple(lab.index for lab in labels.labels
                 if lab.index in labels.brain_indices
                 and lab.name.lower() not in _FLUID and lab.abbreviation.lower() not in _FLUID)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean masks; NaN when both are empty."""
    total = int(a.sum()) + int(b.sum())
    return float("nan") if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def view_agreement(view_labels: dict[str, np.ndarray],
                   labels: LabelSet) -> tuple[dict[int, float], dict[str, float]]:
    """Per label: mean Dice over view pairs; per pair: mean Dice over brain labels.

    ``view_labels`` hold class numbers (positions in ``labels``), as the networks output.
    """
    pairs = list(combinations(sorted(view_labels), 2))
    per_label: dict[int, list[float]] = {lab.index: [] for lab in labels.labels}
    per_pair: dict[str, float] = {}
    for a, b in pairs:
        scores = []
        for k, lab in enumerate(labels.labels):
            score = dice(view_labels[a] == k, view_labels[b] == k)
            per_label[lab.index].append(score)
            if lab.index in labels.brain_indices and np.isfinite(score):
                scores.append(score)
        per_pair[f"{a}-{b}"] = float(np.mean(scores)) if scores else float("nan")
    means = {i: float(np.nanmean(s)) if np.isfinite(s).any() else float("nan")
             for i, s in per_label.items() if s}
    return means, per_pair


def components(label_map: np.ndarray, labels: LabelSet) -> dict[int, tuple[int, float]]:
    """Per label: number of 26-connected pieces and the fraction in the largest one."""
    structure = np.ones((3, 3, 3), bool)
    values = np.asarray(label_map)
    # each label is labelled within its own bounding box (one pass finds them all), not
    # across the whole native grid: several times faster on 0.8 mm scans
    boxes = dict(enumerate(ndimage.find_objects(np.clip(values, 0, None).astype(np.intp)), 1))
    boxes[0] = tuple(slice(None) for _ in values.shape)
    out = {}
    for lab in labels.labels:
        box = boxes.get(lab.index)
        if box is None or not (mask := values[box] == lab.index).any():
            out[lab.index] = (0, float("nan"))
            continue
        pieces, count = ndimage.label(mask, structure=structure)
        sizes = np.bincount(pieces.ravel())[1:]
        out[lab.index] = (int(count), float(sizes.max() / sizes.sum()))
    return out


def uncertainty(entropy: np.ndarray, grid_classes: np.ndarray, sample_counts: np.ndarray,
                labels: LabelSet) -> dict[int, tuple[float, float]]:
    """Per label: mean normalised entropy over its voxels (model grid), and the coefficient
    of variation of its volume across MC samples (Roy et al. 2019's structure-wise CV)."""
    out = {}
    for k, lab in enumerate(labels.labels):
        inside = grid_classes == k
        mean_entropy = float(entropy[inside].mean()) if inside.any() else float("nan")
        counts = sample_counts[:, k].astype(float)
        cv = float(counts.std() / counts.mean()) if counts.mean() > 0 else float("nan")
        out[lab.index] = (mean_entropy, cv)
    return out


def label_table(volumes: pd.DataFrame, labels: LabelSet, *, agreement: dict[int, float],
                pieces: dict[int, tuple[int, float]],
                uncertain: dict[int, tuple[float, float]] | None) -> pd.DataFrame:
    """One row per label: volume and every per-label metric (NaN where not measured)."""
    rows = []
    for lab in labels.labels:
        volume = volumes.loc[volumes["index"] == lab.index, "volume_mm3"]
        entropy, cv = (uncertain or {}).get(lab.index, (float("nan"), float("nan")))
        rows.append({"index": lab.index, "name": lab.name,
                     "volume_mm3": float(volume.iloc[0]) if len(volume) else float("nan"),
                     "components": pieces[lab.index][0],
                     "largest_component_fraction": pieces[lab.index][1],
                     "view_dice": agreement.get(lab.index, float("nan")),
                     "mc_entropy": entropy, "mc_volume_cv": cv})
    return pd.DataFrame(rows)


def volume_check(brain_ml: float, age_weeks: float | None) -> tuple[str, dict[str, str]]:
    """Status (ok, below, above, no age) of a brain tissue volume at an age, with flags."""
    bounds = brain_volume_bounds(age_weeks)
    flags = {}
    if bounds is None:
        return "no age", {"age": "no age: brain volume not checked (bounds depend on age)"}
    status = ("below" if brain_ml < bounds.lower_ml else
              "above" if brain_ml > bounds.upper_ml else "ok")
    if status != "ok":
        flags["brain_volume"] = (f"brain volume {brain_ml:.0f} mL is {status} the plausible "
                                 f"range {bounds.lower_ml:.0f}-{bounds.upper_ml:.0f} mL at "
                                 f"{age_weeks:.1f} weeks")
    if bounds.extrapolated:
        flags["age"] = (f"age {age_weeks:.1f} weeks is outside the bounds' ages "
                        f"({BOUNDS_ML[0][0]:g} to {BOUNDS_ML[-1][0]:g} weeks); nearest used")
    return status, flags


def summary(table: pd.DataFrame, labels: LabelSet, *, age_weeks: float | None,
            view_pairs: dict[str, float], mc_samples: int) -> dict:
    """Scan-level numbers and flags (plain JSON types) from the per-label table.

    ``flags`` maps each check (brain_volume, age, views) to its message, so the group level
    can redo the age-dependent ones when it knows an age the participant level did not.
    """
    brain = table[table["index"].isin(labels.brain_indices)]
    tissue_ml = float(table.loc[table["index"].isin(tissue_indices(labels)),
                                "volume_mm3"].sum()) / 1000
    bounds = brain_volume_bounds(age_weeks)
    status, flags = volume_check(tissue_ml, age_weeks)
    agreement = _nanmean(brain["view_dice"])
    if agreement is not None and agreement < VIEW_DICE_WARN:
        flags["views"] = f"views disagree: mean Dice {agreement:.2f} < {VIEW_DICE_WARN}"
    entropy = _nanmean(brain["mc_entropy"])
    return {
        "age_weeks": age_weeks,
        "brain_volume_ml": round(tissue_ml, 3),
        "intracranial_volume_ml": round(float(brain["volume_mm3"].sum()) / 1000, 3),
        "bounds_lower_ml": None if bounds is None else round(bounds.lower_ml, 1),
        "bounds_upper_ml": None if bounds is None else round(bounds.upper_ml, 1),
        "bounds_source": BOUNDS_SOURCE,
        "brain_volume_status": status,
        "view_dice_mean": None if agreement is None else round(agreement, 4),
        "view_dice_pairs": {k: None if not np.isfinite(v) else round(v, 4)
                            for k, v in view_pairs.items()},
        "mc_samples": mc_samples,
        "mc_entropy_mean": None if entropy is None else round(entropy, 4),
        "flags": flags,
    }


def _nanmean(values: pd.Series) -> float | None:
    finite = values.dropna()
    return float(finite.mean()) if len(finite) else None

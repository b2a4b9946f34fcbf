"""QC figures as PNG bytes: label contours over the T2w, and volumes against age.

PNG (not SVG) because a mosaic of MRI slices is a raster anyway, and bytes embed in a
self-contained HTML page as base64. Metadata is left out so equal inputs give equal bytes.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import ndimage  # noqa: E402

from bids_infantseg.model.labels import LabelSet  # noqa: E402
from bids_infantseg.qc import BOUNDS_ML  # noqa: E402

VIEWS = ("axial", "coronal", "sagittal")
_AXIS = {"sagittal": 0, "coronal": 1, "axial": 2}


def _png(fig: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, facecolor=fig.get_facecolor(),
                metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()


def _slice_positions(mask: np.ndarray, axis: int, count: int) -> list[int]:
    """``count`` slices spread over the brain's extent along ``axis`` (the image's without one)."""
    other = tuple(a for a in range(3) if a != axis)
    present = np.flatnonzero(mask.any(axis=other))
    lo, hi = (present[0], present[-1]) if present.size else (0, mask.shape[axis] - 1)
    return sorted({int(round(p)) for p in np.linspace(lo, hi, count + 2)[1:-1]})


def _plane(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    """A slice shown radiologically upright: rows = superior/anterior at the top."""
    return np.take(volume, index, axis=axis).T


WINDOW_SAMPLES = 2_000_000
"""Voxels the display window's percentiles are taken from (a regular subsample)."""


@dataclass(frozen=True)
class MosaicSource:
    """A scan's T2w and label map in RAS, cropped to the labelled head, with the brain mask
    and the grey-level window: read once for the three views' mosaics (each used to decode,
    reorient and take percentiles of the whole volume again)."""

    image: np.ndarray
    label_map: np.ndarray
    zooms: tuple[float, float, float]
    brain: np.ndarray
    window: tuple[float, float]
    origin: tuple[int, int, int] = (0, 0, 0)  # the crop's first voxel in the RAS volume

    @classmethod
    def load(cls, t2w: nib.Nifti1Image, dseg: nib.Nifti1Image, labels: LabelSet,
             margin: int = 4) -> MosaicSource:
        """Both images reoriented to RAS first, so every scan is shown the same way round
        whatever its header's axis order; cropped to the labels (head or brain) plus
        ``margin`` voxels, so small brains in large fields of view fill the panels."""
        canonical = nib.as_closest_canonical(dseg)
        label_map = np.asanyarray(canonical.dataobj)
        image = np.asanyarray(nib.as_closest_canonical(t2w).dataobj, dtype=np.float32)
        box = ndimage.find_objects((label_map > 0).astype(np.uint8))
        origin = (0, 0, 0)
        if box:
            box = tuple(slice(max(0, b.start - margin), b.stop + margin) for b in box[0])
            image, label_map = image[box], label_map[box]
            origin = tuple(b.start for b in box)
        finite = image[np.isfinite(image) & (image > 0)]
        finite = finite[::max(1, finite.size // WINDOW_SAMPLES)]
        low, high = np.percentile(finite, (1, 99)) if finite.size else (0.0, 1.0)
        return cls(image, label_map, tuple(float(z) for z in canonical.header.get_zooms()[:3]),
                   np.isin(label_map, labels.brain_indices), (float(low), float(high)),
                   origin)


def contour_mosaic(source: MosaicSource, labels: LabelSet, view: str, *,
                   count: int = 7) -> bytes:
    """One row of ``view`` slices: the T2w in grey, each brain label's outline in its colour,
    in neurological convention (the subject's right on the right, superior and anterior at
    the top); each slice is numbered as in the RAS-reoriented image."""
    label_map, zooms = source.label_map, source.zooms
    axis = _AXIS[view]
    across, up = (a for a in range(3) if a != axis)  # shown as columns, rows
    aspect = zooms[up] / zooms[across]
    positions = _slice_positions(source.brain, axis, count)
    panel = 1.9
    ratio = label_map.shape[up] * zooms[up] / (label_map.shape[across] * zooms[across])
    fig, axes = plt.subplots(1, len(positions), squeeze=False,
                             figsize=(panel * len(positions), panel * ratio))
    fig.patch.set_facecolor("black")
    low, high = source.window
    for ax, index in zip(axes[0], positions, strict=True):
        ax.imshow(_plane(source.image, axis, index), cmap="gray", vmin=low, vmax=high,
                  origin="lower", aspect=aspect, interpolation="nearest")
        plane = _plane(label_map, axis, index)
        for lab in labels.labels:
            if lab.index in labels.brain_indices and (plane == lab.index).any():
                ax.contour(plane == lab.index, levels=[0.5], colors=[lab.color],
                           linewidths=0.8)
        ax.set_axis_off()
        ax.text(0.02, 0.02, f"{index + source.origin[axis]}", color="white", fontsize=7,
                transform=ax.transAxes)
    fig.subplots_adjust(0, 0, 1, 1, 0.01, 0)
    return _png(fig)


def growth_figure(table: pd.DataFrame, column: str, title: str, *,
                  color: str = "#1f77b4", bounds: bool = False) -> bytes:
    """Volume (mL) of one label against age (weeks), one line per participant scanned twice
    or more; with ``bounds`` the plausible brain-volume range is shaded."""
    fig, ax = plt.subplots(figsize=(4.2, 3.0))
    data = table.dropna(subset=["age_weeks", column]).sort_values(["participant_id",
                                                                   "age_weeks"])
    if bounds:
        weeks, lower, upper = zip(*BOUNDS_ML, strict=True)
        ax.fill_between(weeks, lower, upper, color="#bbbbbb", alpha=0.35,
                        label="plausible range")
    for _, rows in data.groupby("participant_id", sort=True):
        if len(rows) > 1:
            ax.plot(rows["age_weeks"], rows[column] / 1000, color=color, alpha=0.4, lw=0.8)
    markers = {"F": "o", "M": "s"}
    for sex, rows in data.groupby(data["sex"].fillna("unknown"), sort=True):
        ax.scatter(rows["age_weeks"], rows[column] / 1000, s=18, color=color,
                   marker=markers.get(sex, "^"), label=f"sex {sex}", edgecolor="black",
                   linewidth=0.4)
    if data.empty:
        ax.text(0.5, 0.5, "no scan with a known age", ha="center", transform=ax.transAxes)
    ax.ticklabel_format(axis="y", useOffset=False, style="plain")
    ax.set_xlabel("age (postnatal weeks)")
    ax.set_ylabel("volume (mL)")
    ax.set_title(title, fontsize=10)
    if not data.empty or bounds:
        ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return _png(fig)


def figure_labels(labels: LabelSet) -> Sequence[tuple[str, str, str]]:
    """(column, title, colour) of the label figures: every label that is brain."""
    return [(f"{lab.abbreviation}_mm3", lab.name, lab.color) for lab in labels.labels
            if lab.index in labels.brain_indices]

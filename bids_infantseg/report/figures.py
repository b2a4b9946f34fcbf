"""Growth figures of the group report: volume against age, reference bands behind the scans.

PNG (not SVG) because bytes embed in a self-contained HTML page as base64; metadata is left
out so equal inputs give equal bytes. Colours are chosen for a white page and for
colour-blind readers (Okabe-Ito blue and vermillion); the labels' own colours are for
outlines on a dark MRI and several (yellow, cyan) vanish on white.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bids_infantseg.core.ages import PLAUSIBLE_WEEKS, WEEKS_PER_MONTH  # noqa: E402
from bids_infantseg.core.qc import (  # noqa: E402
    BOUNDS_FILE,
    BRAIN,
    STRUCTURES,
    bounds_rows,
    drawem9_structures,
    is_drawem9,
)
from bids_infantseg.model.labels import DRAWEM9, LabelSet  # noqa: E402

BAND = "#c6dbef"
"""Reference band fill (opaque, so it is one exact colour in the PNG)."""
BAND_EDGE = "#6baed6"
INSIDE = "#0b3d91"
OUTSIDE = "#d55e00"
"""Scans inside / outside the band (Okabe-Ito vermillion)."""
STRIP = "#f2f2f2"
NEUTRAL = "#666666"
"""Background and markers of the side strips (no age, age out of range): no band there."""
MARKERS = {"F": "o", "M": "s"}


@dataclass(frozen=True)
class Reference:
    """Plausible volumes of one structure by age (a band) and the source they come from."""

    weeks: np.ndarray
    low_ml: np.ndarray
    high_ml: np.ndarray
    source: str

    def outside(self, weeks: np.ndarray, ml: np.ndarray) -> np.ndarray:
        """Which (age, volume) points lie outside the band (ages beyond it: nearest end)."""
        low = np.interp(weeks, self.weeks, self.low_ml)
        high = np.interp(weeks, self.weeks, self.high_ml)
        return (ml < low) | (ml > high)


@dataclass(frozen=True)
class StructureColumn:
    """A bounded DrawEM9 structure's volume column in a group table and the label columns
    it sums (DrawEM9's own: itself; an aseg's cortical grey matter: both cortices)."""

    structure: str  # DrawEM9 abbreviation
    name: str  # DrawEM9 name
    members: tuple[str, ...]


def structure_columns(labels: LabelSet) -> dict[str, StructureColumn]:
    """Column -> structure, for each bounded DrawEM9 structure: ``cGM_mm3`` in a DrawEM9
    table, ``drawem9-cGM_mm3`` (to be summed) for a set mapped onto DrawEM9; none for an
    unmapped set."""
    structures = drawem9_structures(labels)
    if structures is None:
        return {}
    abbreviation = {lab.index: lab.abbreviation for lab in labels.labels}
    prefix = "" if is_drawem9(labels) else f"{DRAWEM9.name}-"
    found = {}
    for structure in DRAWEM9.labels:
        if structure.abbreviation not in STRUCTURES:
            continue
        members = tuple(f"{abbreviation[i]}_mm3"
                        for i in structures.members(structure.abbreviation))
        if members:
            found[f"{prefix}{structure.abbreviation}_mm3"] = StructureColumn(
                structure.abbreviation, structure.name, members)
    return found


def references(labels: LabelSet) -> dict[str, Reference]:
    """Volume column -> band: brain tissue for any label set, the bounded structures for a
    DrawEM9 set or one mapped onto it (the bounds are DrawEM9 definitions; an aseg's are
    summed columns, :func:`structure_columns`), each from QC's shipped table."""
    wanted = {"brain_volume_mm3": BRAIN}
    wanted |= {column: entry.structure for column, entry in structure_columns(labels).items()}
    found = {}
    for column, label in wanted.items():
        rows = bounds_rows(label)
        if rows.empty:
            continue
        sources = list(dict.fromkeys(rows["source"]))
        found[column] = Reference(rows["age_weeks"].to_numpy(float),
                                  rows["low_ml"].to_numpy(float),
                                  rows["high_ml"].to_numpy(float),
                                  f"{BOUNDS_FILE.name}: " + "; ".join(sources))
    return found


@dataclass(frozen=True)
class Ages:
    """A growth figure's scans split by age: plotted to scale, out of range, or none."""

    scaled: pd.DataFrame
    beyond: pd.DataFrame  # age outside ``PLAUSIBLE_WEEKS``: shown in a strip, not to scale
    missing: pd.DataFrame


def split_ages(table: pd.DataFrame, column: str,
               plausible: tuple[float, float] = PLAUSIBLE_WEEKS) -> Ages:
    """Scans with a volume in ``column``, by whether their age can share an axis: one age of
    300 years (a unit mix-up) would otherwise squeeze every infant into one pixel column."""
    data = table[table[column].notna()].copy()
    data["age_weeks"] = pd.to_numeric(data["age_weeks"], errors="coerce")
    known = data["age_weeks"].notna() & np.isfinite(data["age_weeks"])
    inside = known & data["age_weeks"].between(*plausible)
    by = ["participant_id", "age_weeks"]
    return Ages(data[inside].sort_values(by), data[known & ~inside].sort_values(by),
                data[~known].sort_values("participant_id"))


def age_text(weeks: float) -> str:
    """``15642 wk (300 y)``: weeks, and years or months when that says more."""
    if abs(weeks) >= 104:
        return f"{weeks:,.0f} wk ({weeks / (12 * WEEKS_PER_MONTH):,.3g} y)"
    return f"{weeks:.0f} wk"


def _png(fig: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, facecolor="white", metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()


def _points(ax: plt.Axes, x: np.ndarray, rows: pd.DataFrame, column: str,
            outside: np.ndarray | None) -> None:
    """Markers by sex, vermillion where outside the band, grey where there is no band
    (``outside`` None)."""
    ml = rows[column].to_numpy(float) / 1000
    sexes = rows["sex"].fillna("unknown").to_numpy() if "sex" in rows else \
        np.full(len(rows), "unknown")
    for sex in sorted(set(sexes)):
        pick = sexes == sex
        ax.scatter(x[pick], ml[pick], s=30, marker=MARKERS.get(sex, "^"), zorder=3,
                   clip_on=False,  # a 0 mL scan sits on the axis: draw it whole
                   c=(NEUTRAL if outside is None else np.where(outside[pick], OUTSIDE, INSIDE)),
                   edgecolor="white",
                   linewidth=0.6)


def _strip(ax: plt.Axes, rows: pd.DataFrame, column: str, title: str, annotate: bool) -> None:
    """A narrow panel of scans that have no place on the age axis (grey: no band to compare
    with); ``annotate`` writes each one's age beside it."""
    ax.set_facecolor(STRIP)
    x = np.linspace(-0.25, 0.25, len(rows)) if len(rows) > 1 else np.zeros(len(rows))
    _points(ax, x, rows, column, None)
    if annotate:
        for xi, (_, row) in zip(x, rows.iterrows(), strict=True):
            ax.annotate(age_text(row["age_weeks"]), (xi, row[column] / 1000), fontsize=7,
                        xytext=(0, 6), textcoords="offset points", ha="center",
                        rotation=90, va="bottom")
    ax.set_xlim(-0.6, 0.6)
    ax.set_xticks([0], [title], fontsize=8)
    ax.tick_params(axis="y", left=False, labelleft=False)


def growth_figure(table: pd.DataFrame, column: str, title: str, *,
                  reference: Reference | None = None) -> bytes:
    """``growth_plot`` as PNG bytes."""
    return _png(growth_plot(table, column, title, reference=reference))


def growth_plot(table: pd.DataFrame, column: str, title: str, *,
                reference: Reference | None = None) -> plt.Figure:
    """Volume (mL) of one label against age (postnatal weeks): the reference band behind,
    one line per participant scanned twice or more, scans outside the band in vermillion;
    scans without an age, or with one outside ``PLAUSIBLE_WEEKS``, in strips at the right.
    The age axis spans the scans (not the band's 3 years), so a study of newborns is not
    squeezed into a corner."""
    ages = split_ages(table, column)
    strips = [(name, rows, annotate) for name, rows, annotate in (
        ("no age", ages.missing, False), ("age out\nof range", ages.beyond, True)) if len(rows)]
    fig, axes = plt.subplots(1, 1 + len(strips), figsize=(5.6, 3.9), sharey=True,
                             squeeze=False, gridspec_kw={
                                 "width_ratios": [9.0] + [1.0 if not a else 1.3
                                                          for _, _, a in strips],
                                 "wspace": 0.1})
    main, *side = axes[0]
    scaled = ages.scaled
    weeks = scaled["age_weeks"].to_numpy(float)
    ml = scaled[column].to_numpy(float) / 1000
    if len(weeks):
        low, high = float(weeks.min()), float(weeks.max())
        pad = max(8.0, 0.1 * (high - low))
        low, high = max(PLAUSIBLE_WEEKS[0], low - pad), min(PLAUSIBLE_WEEKS[1], high + pad)
    elif reference is not None:
        low, high = float(reference.weeks.min()), float(reference.weeks.max())
    else:
        low, high = PLAUSIBLE_WEEKS
    handles = []
    values = list(table[column].dropna().to_numpy(float) / 1000)
    if reference is not None:
        grid = np.linspace(low, high, 200)
        band_low = np.interp(grid, reference.weeks, reference.low_ml)
        band_high = np.interp(grid, reference.weeks, reference.high_ml)
        main.fill_between(grid, band_low, band_high, color=BAND, lw=0, zorder=0)
        for edge in (band_low, band_high):
            main.plot(grid, edge, color=BAND_EDGE, lw=0.8, zorder=1)
        values += [band_low.min(), band_high.max()]
        handles.append(plt.Rectangle((0, 0), 1, 1, color=BAND, label="reference range"))
    for _, rows in scaled.groupby("participant_id", sort=True):
        if len(rows) > 1:
            main.plot(rows["age_weeks"], rows[column] / 1000, color="#555555", lw=0.9,
                      alpha=0.7, zorder=2)
    outside = (reference.outside(weeks, ml) if reference is not None
               else np.zeros(len(scaled), bool))
    _points(main, weeks, scaled, column, outside)
    main.set_xlim(low, high)
    if values:
        span = max(values) - min(values)
        main.set_ylim(max(0.0, min(values) - 0.08 * span - 1e-3),
                      max(values) + 0.08 * span + 1e-3)
    else:
        main.text(0.5, 0.5, "no volume", ha="center", transform=main.transAxes)
    main.set_xlabel("age (postnatal weeks)")
    main.set_ylabel("volume (mL)")
    main.ticklabel_format(axis="y", useOffset=False, style="plain")
    main.set_title(title, fontsize=11, loc="left")
    for ax, (name, rows, annotate) in zip(side, strips, strict=True):
        _strip(ax, rows, column, name, annotate)
    sexes = sorted(set(table["sex"].fillna("unknown"))) if "sex" in table else ["unknown"]
    handles += [plt.Line2D([], [], ls="", marker=MARKERS.get(s, "^"), color=INSIDE,
                           label=f"sex {s}") for s in sexes]
    if reference is not None:
        handles.append(plt.Line2D([], [], ls="", marker="o", color=OUTSIDE,
                                  label="outside range"))
    fig.legend(handles=handles, fontsize=8, frameon=False, loc="lower center",
               ncol=len(handles), handletextpad=0.3, columnspacing=1.0)
    fig.subplots_adjust(left=0.12, right=0.98, bottom=0.22, top=0.92)
    return fig


def figure_labels(labels: LabelSet) -> Sequence[tuple[str, str]]:
    """(column, title) of the label figures: every label that is brain."""
    return [(f"{lab.abbreviation}_mm3", lab.name) for lab in labels.labels
            if lab.index in labels.brain_indices]


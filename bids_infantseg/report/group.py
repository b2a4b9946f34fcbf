"""The group report: who is missing, which scans to look at, and how volumes grow with age."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from bids_infantseg.core.ages import PLAUSIBLE_WEEKS
from bids_infantseg.io.naming import label_values
from bids_infantseg.model.labels import LabelSet
from bids_infantseg.report.figures import (
    StructureColumn,
    age_text,
    figure_labels,
    growth_figure,
    references,
    split_ages,
    structure_columns,
)
from bids_infantseg.report.html import definition_list, notes, page, png_tag, table_html


@dataclass(frozen=True)
class Growth:
    """One growth figure: its file name, PNG and the source of its reference band."""

    name: str
    png: bytes
    source: str | None


def growth_figures(labels: LabelSet, wide: pd.DataFrame) -> list[Growth]:
    """Brain tissue and intracranial volume, then every brain label, by age, then for a set
    mapped onto DrawEM9 (aseg) the DrawEM9 structures its labels sum to; a structure with
    shipped bounds (``references``) gets them as a band behind its scans."""
    bands = references(labels)
    panels = [("brain", "brain_volume_mm3", "Brain tissue"),
              ("intracranial", "intracranial_volume_mm3", "Intracranial (brain labels)")]
    panels += [(column.removesuffix("_mm3"), column, title)
               for column, title in figure_labels(labels)]
    summed = {column: entry for column, entry in structure_columns(labels).items()
              if column not in wide and set(entry.members) <= set(wide)}
    if summed:  # a set mapped onto DrawEM9: its structures, with their bands, after its labels
        wide = wide.assign(**{column: wide[list(entry.members)].sum(axis=1, min_count=1)
                              for column, entry in summed.items()})
        panels += [(column.removesuffix("_mm3"), column, _summed_title(entry, labels.name))
                   for column, entry in summed.items()]
    figures = []
    names = label_values(name for name, _, _ in panels)  # L-Hip -> LHip: a BIDS label value
    for name, (_, column, title) in zip(names, panels, strict=True):
        band = bands.get(column)
        figures.append(Growth(f"desc-{labels.name}_label-{name}_growth.png",
                              growth_figure(wide, column, title, reference=band),
                              band.source if band else None))
    return figures


def _summed_title(entry: StructureColumn, set_name: str) -> str:
    """``Cortical grey matter (L-Ctx + R-Ctx)``; a long sum (deep grey matter's twelve
    labels) is counted instead, so the title fits the figure."""
    members = " + ".join(m.removesuffix("_mm3") for m in entry.members)
    if len(members) > 30:
        members = f"{len(entry.members)} {set_name} labels summed"
    return f"{entry.name} ({members})"


def _growth_section(figures: Sequence[Growth], wide: pd.DataFrame) -> str:
    """Figures with their band's source as caption, after the scans whose age is missing or
    out of range (each figure shows those in a strip at its edge)."""
    ids = id_columns(wide)
    ages = split_ages(wide, "brain_volume_mm3")
    low, high = PLAUSIBLE_WEEKS
    flagged = []
    if len(ages.beyond):
        flagged.append(f"Age outside {low:g} to {high:g} postnatal weeks, drawn in the "
                       "'age out of range' strip of each figure, not to scale: " + ", ".join(
                           f"{_scan_name(row, ids)} ({age_text(row['age_weeks'])})"
                           for _, row in ages.beyond.iterrows()))
    if len(ages.missing):
        flagged.append("No age, drawn in the 'no age' strip of each figure: " + ", ".join(
            _scan_name(row, ids) for _, row in ages.missing.iterrows()))
    cells = []
    for figure in figures:
        caption = (f"Shaded: plausible range by age from {figure.source}. A range, not "
                   "centiles." if figure.source else "No reference range for this volume.")
        cells.append(f"<figure>{png_tag(figure.png, figure.name)}"
                     f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    return ("<p>Volume against postnatal age; lines join a participant's scans; marker shape "
            "is sex; the shaded band is the range of volumes plausible at each age, and scans "
            "outside it are vermillion.</p>" + notes(flagged, "every scan has an age in range")
            + '<div class="grid">' + "".join(cells) + "</div>")


def id_columns(table: pd.DataFrame) -> list[str]:
    """The columns that name a scan (participant, session, entities): the group tables put
    them before ``age_weeks``, whichever entities a dataset has."""
    return list(table.columns[:list(table.columns).index("age_weeks")])


def _scan_name(row: pd.Series, ids: Sequence[str]) -> str:
    """``sub-01 ses-02 run-1``: the scan's ids and entities that it has."""
    return " ".join(str(row[c]) if c.endswith("_id") else f"{c}-{row[c]}"
                    for c in ids if isinstance(row[c], str) and row[c] not in ("", "n/a"))


def _qc_section(qc: pd.DataFrame) -> str:
    if qc.empty:
        return "<p>No complete scan.</p>"
    ids = id_columns(qc)
    shown = pd.DataFrame({
        "scan": [_scan_name(row, ids) for _, row in qc.iterrows()],
        "age (weeks)": qc["age_weeks"], "brain (mL)": qc["brain_volume_ml"],
        "intracranial (mL)": qc["intracranial_volume_ml"],
        "brain volume check": qc["brain_volume_status"],
        "Dice between views": qc["view_dice_mean"], "MC entropy": qc["mc_entropy_mean"],
        "flags": qc["flags"].replace("", "none"),
    })
    links = [None if pd.isna(r) else f"../{r}" for r in qc["report"]]
    table = table_html(shown, flag_rows=list(qc["flagged"]), links=links, wrap="flags")
    flagged = int(qc["flagged"].sum())
    return (f"<p>{flagged} of {len(qc)} scan(s) flagged (highlighted); each scan name opens "
            f"its report.</p>{table}")


def group_report(*, labels: LabelSet, wide: pd.DataFrame, qc: pd.DataFrame,
                 problems: Sequence[tuple[str, str]],
                 models: Sequence[Mapping]) -> tuple[str, dict[str, bytes]]:
    """The page and its figures (also returned, to be written next to the tables)."""
    growth = growth_figures(labels, wide) if not wide.empty else []
    participants = wide["participant_id"].nunique() if not wide.empty else 0
    summary = {"label set": labels.name, "complete scans": len(wide),
               "participants": participants,
               "scans with an age": int(wide["age_weeks"].notna().sum()) if len(wide) else 0,
               "missing or partial": len(problems)}
    model_notes = [f"model {m.get('Name')} {m.get('Version')} (sha256 "
                   f"{str(m.get('SHA256'))[:12]})" for m in models]
    warnings = [f"{who}: {why}" for who, why in problems]
    if len(models) > 1:
        warnings.insert(0, f"{len(models)} different models made these segmentations: "
                           "volumes may not be comparable")
    body = (
        "<h2>Summary</h2>" + definition_list(summary)
        + "<p>" + "<br>".join(html.escape(m) for m in model_notes) + "</p>"
        + "<h2>Missing or partial outputs</h2>" + notes(warnings, "every scan is complete")
        + "<h2>Quality control</h2>" + _qc_section(qc)
        + "<h2>Growth trajectories</h2>"
        + (_growth_section(growth, wide) if growth else "<p>No complete scan.</p>")
    )
    return (page(f"bids_infantseg group report: {labels.name}", body),
            {figure.name: figure.png for figure in growth})

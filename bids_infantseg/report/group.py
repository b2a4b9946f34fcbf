"""The group report: who is missing, which scans to look at, and how volumes grow with age."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence

import pandas as pd

from bids_infantseg.model.labels import LabelSet
from bids_infantseg.report.figures import figure_labels, growth_figure
from bids_infantseg.report.html import definition_list, notes, page, png_tag, table_html


def growth_figures(labels: LabelSet, wide: pd.DataFrame) -> dict[str, bytes]:
    """File name -> PNG: brain and intracranial volume, then every brain label, by age."""
    figures = {f"desc-{labels.name}_label-brain_growth.png":
               growth_figure(wide, "brain_volume_mm3", "Brain tissue (shaded: plausible range)",
                             color="#345", bounds=True),
               f"desc-{labels.name}_label-intracranial_growth.png":
               growth_figure(wide, "intracranial_volume_mm3", "Intracranial (brain labels)",
                             color="#678")}
    for column, title, color in figure_labels(labels):
        abbreviation = column.removesuffix("_mm3")
        figures[f"desc-{labels.name}_label-{abbreviation}_growth.png"] = growth_figure(
            wide, column, title, color=color)
    return figures


def _scan_name(row: pd.Series, id_columns: Sequence[str]) -> str:
    """``sub-01 ses-02 run-1``: the scan's ids and entities that it has."""
    return " ".join(str(row[c]) if c.endswith("_id") else f"{c}-{row[c]}"
                    for c in id_columns if isinstance(row[c], str) and row[c] not in ("", "n/a"))


def _qc_section(qc: pd.DataFrame) -> str:
    if qc.empty:
        return "<p>No complete scan.</p>"
    id_columns = list(qc.columns[:list(qc.columns).index("age_weeks")])
    shown = pd.DataFrame({
        "scan": [_scan_name(row, id_columns) for _, row in qc.iterrows()],
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
    figures = growth_figures(labels, wide) if not wide.empty else {}
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
        + "<h2>Growth trajectories</h2><p>Volume against postnatal age; lines join a "
          "participant's scans; marker shape is sex.</p><div class=\"grid\">"
        + "".join(png_tag(png, name) for name, png in figures.items()) + "</div>"
    )
    return page(f"bids_infantseg group report: {labels.name}", body), figures

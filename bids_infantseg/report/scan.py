"""The per-scan QC report: what a researcher needs to accept or reject one segmentation."""

from __future__ import annotations

import html
from collections.abc import Mapping

import nibabel as nib
import pandas as pd

from bids_infantseg.model.labels import LabelSet
from bids_infantseg.report.html import definition_list, notes, page, table_html
from bids_infantseg.report.viewer import ScanImages, viewer


def _qc_section(summary: Mapping, qc_table: pd.DataFrame) -> str:
    bounds = ("n/a" if summary.get("bounds_lower_ml") is None else
              f"{summary['bounds_lower_ml']:.0f}-{summary['bounds_upper_ml']:.0f} mL "
              + summary.get("bounds_for_age", ""))
    items = {
        "brain tissue volume": f"{summary['brain_volume_ml']:.1f} mL",
        "intracranial volume": f"{summary['intracranial_volume_ml']:.1f} mL",
        "plausible brain tissue volume": bounds.strip(),
        "brain volume check": summary["brain_volume_status"],
        "out of place (mL)": ", ".join(f"{k} {v:.1f}" for k, v in
                                       summary.get("misplaced_ml", {}).items()) or "n/a",
        "agreement between views (mean Dice, brain labels)": summary.get("view_dice_mean"),
        **{f"Dice {pair}": value for pair, value in summary.get("view_dice_pairs", {}).items()},
        "MC-dropout samples": summary.get("mc_samples") or "0 (run with --mc-samples N)",
        "mean MC entropy (brain labels, 0-1)": summary.get("mc_entropy_mean"),
    }
    columns = {"name": "label", "components": "pieces",
               "largest_component_fraction": "largest piece", "view_dice": "Dice between views",
               "mc_entropy": "MC entropy", "mc_volume_cv": "MC volume CV"}
    table = qc_table[list(columns)].rename(columns=columns)
    return (definition_list(items)
            + f"<p><small>Bounds: {html.escape(summary.get('bounds_source', ''))}.</small></p>"
            + table_html(table, digits=3))


def scan_report(*, title: str, t2w: nib.Nifti1Image, dseg: nib.Nifti1Image, labels: LabelSet,
                volumes: pd.DataFrame, qc_table: pd.DataFrame, qc_summary: Mapping,
                scan: Mapping[str, object], provenance: Mapping[str, object]) -> str:
    """The HTML page of one scan: flags first, then pictures, numbers and provenance."""
    source = ScanImages.load(t2w, dseg, labels)
    volume_table = volumes[["index", "name", "voxels", "volume_mm3"]].copy()
    volume_table["volume_mL"] = volume_table["volume_mm3"] / 1000
    body = (
        "<h2>Summary</h2>" + definition_list(scan)
        + "<h2>Warnings</h2>" + notes(qc_summary.get("flags", {}).values(), "no QC flag raised")
        + "<h2>Segmentation</h2>" + viewer(source, labels)
        + "<h2>Volumes</h2>" + table_html(volume_table, digits=1)
        + "<h2>Quality control</h2>" + _qc_section(qc_summary, qc_table)
        + "<h2>Provenance</h2>" + definition_list(provenance)
    )
    return page(title, body)

"""Where the QC outputs go and what their sidecar says, shared by the writer and the group."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import PurePosixPath

from bids_infantseg.core.qc import VIEW_DICE_WARN

IGNORED = ("*_qc.tsv", "*_qc.json")
"""QC tables and the reports' folder, which BIDS does not define. ``figures`` without the
slash: bids-validator-deno 2.x does not apply a ``figures/`` pattern to the folder itself."""


def report_path(subject: str, source_stem: str) -> PurePosixPath:
    """A scan's HTML report, relative to the output folder (fMRIPrep's figures/ place)."""
    return PurePosixPath(f"sub-{subject}", "figures", f"{source_stem}_report.html")


def qc_sidecar(summary: Mapping) -> dict:
    """Sidecar of ``..._desc-<labels>_qc.tsv``: column descriptions plus the scan's
    summary under ``QC`` (flags, volume bounds, agreement between views)."""
    return {
        "Description": "Quality-control metrics of the segmentation, one row per label; the "
                       "scan-level numbers and flags are under QC.",
        "index": {"Description": "label index (desc-<labels>_dseg.tsv)"},
        "name": {"Description": "label name"},
        "volume_mm3": {"Description": "label volume on the native grid", "Units": "mm^3"},
        "components": {"Description": "26-connected pieces of the label on the native grid"},
        "largest_component_fraction": {"Description": "share of the label's voxels in its "
                                                      "largest piece"},
        "view_dice": {"Description": "Dice between the argmax of each pair of views' networks "
                                     f"on the model grid, mean over pairs (flag if the mean "
                                     f"over brain labels < {VIEW_DICE_WARN})"},
        "mc_entropy": {"Description": "mean predictive entropy (normalised 0-1) of the "
                                      "MC-dropout samples over the label's voxels; n/a "
                                      "without --mc-samples"},
        "mc_volume_cv": {"Description": "coefficient of variation of the label's volume "
                                        "across MC-dropout samples; n/a without --mc-samples"},
        "QC": dict(summary),
    }

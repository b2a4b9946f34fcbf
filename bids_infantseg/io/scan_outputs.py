"""What a scan's outputs are called, and whether they are all on disk and readable.

The writer and the run's final count use the same names, so a scan counts as segmented only
when the files a user would open are there, whatever the workflow engine reported.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import pandas as pd

from bids_infantseg.io.discovery import Scan
from bids_infantseg.io.naming import derivative_dir, derivative_name, label_values
from bids_infantseg.model.labels import LabelSet
from bids_infantseg.report.outputs import report_path


@dataclass(frozen=True)
class ScanOutputs:
    """The paths of one scan's outputs; ``probseg`` follows the label set's order."""

    dseg: Path
    mask: Path
    volumes: Path
    qc: Path
    report: Path
    probseg: tuple[Path, ...] = ()

    def files(self) -> list[Path]:
        """Every file, sidecars included, the label map last (the writer's order)."""
        images = [*self.probseg, self.mask]
        tables = [self.volumes, self.qc]
        return [*(p for t in tables for p in (t, sidecar(t))), self.report,
                *(p for i in images for p in (i, sidecar(i))), sidecar(self.dseg), self.dseg]


def sidecar(path: Path) -> Path:
    """The JSON sidecar of an image or table: same name, ``.json`` extension."""
    return path.with_name(path.name.removesuffix(".nii.gz").removesuffix(".tsv") + ".json")


def scan_outputs(scan: Scan, output_dir: Path, labels: LabelSet,
                 write_probseg: bool) -> ScanOutputs:
    """The output paths of ``scan`` in ``output_dir`` (BIDS names from its entities)."""
    anat = Path(output_dir) / derivative_dir(scan.entities)

    def name(**entities: str) -> Path:
        return anat / derivative_name(scan.entities, **entities)

    abbreviations = label_values(label.abbreviation for label in labels.labels)
    probseg = tuple(name(space="T2w", label=value, suffix="probseg", extension=".nii.gz")
                    for value in abbreviations) if write_probseg else ()
    return ScanOutputs(
        dseg=name(space="T2w", desc=labels.name, suffix="dseg", extension=".nii.gz"),
        mask=name(space="T2w", desc="brain", suffix="mask", extension=".nii.gz"),
        volumes=name(desc=labels.name, suffix="volumes", extension=".tsv"),
        qc=name(desc=labels.name, suffix="qc", extension=".tsv"),
        report=Path(output_dir) / report_path(scan.subject, scan.source_stem),
        probseg=probseg,
    )


def read_outputs(outputs: ScanOutputs) -> tuple[dict[Path, object], dict[Path, str]]:
    """Every output opened as a user's reader would: what was read (NIfTI image, JSON, table,
    text) by path, and ``{path: "missing" | "unreadable (...)"}`` for the rest, so a caller
    uses what the check read (the QC sidecar's flags) instead of opening it again."""
    contents, problems = {}, {}
    for path in outputs.files():
        try:
            contents[path] = _read(path)
        except FileNotFoundError:
            problems[path] = "missing"
        except Exception as err:  # any reader's failure means unreadable
            problems[path] = f"unreadable ({type(err).__name__}: {err})"
    return contents, problems


def output_problems(outputs: ScanOutputs) -> dict[Path, str]:
    """``{path: "missing" | "unreadable (...)"}`` for each output a user could not open."""
    return read_outputs(outputs)[1]


def _read(path: Path) -> object:
    """Open ``path`` as its kind's reader would: NIfTI header, JSON, TSV, non-empty text."""
    if path.name.endswith(".nii.gz"):
        return nib.load(path)
    if path.suffix == ".json":
        return json.loads(path.read_text(encoding="utf-8"))
    if path.suffix == ".tsv":
        table = pd.read_csv(path, sep="\t")
        if table.empty:
            raise ValueError("no rows")
        return table
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        raise ValueError("empty")
    return text

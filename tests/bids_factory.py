"""Tiny synthetic BIDS datasets for tests: real file names and headers, random voxels."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from bids_infantseg.io.discovery import Scan
from bids_infantseg.io.naming import format_entities, parse_entities


def write_json(path: Path, content: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=2) + "\n")
    return path


def write_tsv(path: Path, rows: list[dict[str, Any]]) -> Path:
    """A TSV with the union of the rows' keys as columns (missing cells become ``n/a``)."""
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    lines = ["\t".join(columns)]
    lines += ["\t".join(str(row.get(c, "n/a")) for c in columns) for row in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def write_description(root: Path, **extra: Any) -> Path:
    """A raw dataset's dataset_description.json; ``extra`` adds or overrides fields."""
    return write_json(root / "dataset_description.json",
                      {"Name": "test", "BIDSVersion": "1.10.0", "DatasetType": "raw", **extra})


def write_nifti(path: Path, *, shape: tuple[int, ...] = (6, 7, 8), dtype: str = "float32",
                zooms: tuple[float, ...] = (1.0, 1.0, 1.0), seed: int = 0) -> Path:
    """A small random image with a plausible scaled affine."""
    rng = np.random.default_rng(seed)
    data = (rng.random(shape) * 100).astype(dtype)
    img = nib.Nifti1Image(data, np.diag([*zooms, 1.0]))
    img.header.set_xyzt_units("mm")
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, path)
    return path


def write_image(root: Path, *, suffix: str = "T2w", extension: str = ".nii.gz",
                datatype: str = "anat", sidecar: bool = True, **entities: str) -> Path:
    """An image at its BIDS place, e.g. ``write_image(root, subject="01", run="1")``."""
    folder = root / f"sub-{entities['subject']}"
    if entities.get("session"):
        folder /= f"ses-{entities['session']}"
    path = folder / datatype / f"{format_entities(entities)}_{suffix}{extension}"
    write_nifti(path)
    if sidecar:
        write_json(path.parent / f"{format_entities(entities)}_{suffix}.json",
                   {"MagneticFieldStrength": 3, "RepetitionTime": 12.0, "EchoTime": 0.156})
    return path


def example_dataset(root: Path) -> Path:
    """An infant study with the cases discovery must handle.

    sub-01: two sessions; ses-02 has two T2w runs and ages in scans.tsv (days).
    sub-02: no session, a ``.nii`` T2w with acq- and rec-, age in participants.tsv (months).
    sub-03: only a T1w (no T2w).
    """
    write_description(root)
    write_tsv(root / "participants.tsv", [
        {"participant_id": "sub-01", "sex": "F", "age": "n/a"},
        {"participant_id": "sub-02", "sex": "male", "age": "3"},
        {"participant_id": "sub-03", "sex": "n/a", "age": "1"},
    ])
    write_json(root / "participants.json", {"age": {"Units": "months"}})
    write_image(root, subject="01", session="01")
    write_image(root, subject="01", session="02", run="1")
    write_image(root, subject="01", session="02", run="2")
    write_tsv(root / "sub-01" / "sub-01_sessions.tsv", [
        {"session_id": "ses-01", "age_weeks": "2"},
        {"session_id": "ses-02", "age_weeks": "30"},
    ])
    write_tsv(root / "sub-01" / "ses-02" / "sub-01_ses-02_scans.tsv", [
        {"filename": "anat/sub-01_ses-02_run-1_T2w.nii.gz", "age_days": "203"},
        {"filename": "anat/sub-01_ses-02_run-2_T2w.nii.gz", "age_days": "n/a"},
    ])
    write_image(root, subject="02", acquisition="fast", reconstruction="norm",
                extension=".nii")
    write_image(root, subject="03", suffix="T1w")
    return root


def write_scan(root: Path, **entities: str) -> Scan:
    """A T2w image at its BIDS place and its ``Scan`` record, e.g. ``write_scan(root,
    subject="01", run="1")``; no age or sex."""
    path = write_image(root, **entities)
    return Scan(path, root, parse_entities(path.name))

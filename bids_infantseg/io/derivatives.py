"""BIDS-Derivatives output: atomic writers, dataset-level files and sidecars.

Every file is written under a temporary name in its own folder and renamed into place, so a
crash or a killed job never leaves a half-written output that a resumed run would trust.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import nibabel as nib
import pandas as pd

from bids_infantseg.core.ages import Age
from bids_infantseg.model.labels import DSEG_COLUMNS, LabelSet
from bids_infantseg.report.colors import output_labels
from bids_infantseg.utils.errors import InfantsegError
from bids_infantseg.utils.files import atomic_write

NAME = "bids_infantseg"
CODE_URL = "https://github.com/bids-infantseg/bids_infantseg"
BIDS_VERSION = "1.10.0"
RAW = "raw"
"""Name of the input dataset in ``DatasetLinks``, so sidecars cite it as ``bids:raw:...``."""

CONTAINER_ENV = {"Type": "BIDS_INFANTSEG_CONTAINER_TYPE", "Tag": "BIDS_INFANTSEG_CONTAINER_TAG"}
"""Set by the container images, so the outputs record which image made them."""

BIDSIGNORE = ("*_volumes.tsv", "*_volumes.json", "*.html", "figures", "logs", "group", "models")
"""Outputs BIDS does not define; listed so the validator judges only what BIDS does.

Folders are named without a trailing slash: bids-validator-deno matches the folder's own
entry (``/group/``) against the pattern, and ``group/`` does not match it."""


class OutputDirError(InfantsegError):
    """The output folder must not be written to; one-line message."""


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_json(path: Path, content: Any) -> Path:
    return atomic_write_text(path, json.dumps(content, indent=2) + "\n")


def atomic_write_tsv(path: Path, table: pd.DataFrame) -> Path:
    """A BIDS TSV: tab-separated, no index, missing values as ``n/a``."""
    return atomic_write(path, lambda tmp: table.to_csv(tmp, sep="\t", index=False, na_rep="n/a",
                                                   lineterminator="\n"))


def atomic_save_nifti(img: nib.Nifti1Image, path: Path) -> Path:
    """Save ``img``; unset spatial units become mm (the BIDS validator warns otherwise)."""
    spatial, temporal = img.header.get_xyzt_units()
    if spatial == "unknown":
        img.header.set_xyzt_units("mm", temporal)
    return atomic_write(path, lambda tmp: nib.save(img, tmp))


def bids_uri(rel_path: str, dataset: str = RAW) -> str:
    """A BIDS URI to a file of a linked dataset (``""`` is the output dataset itself)."""
    return f"bids:{dataset}:{rel_path}"


def _read_description(folder: Path) -> dict[str, Any] | None:
    path = folder / "dataset_description.json"
    if not path.is_file():
        return None
    try:
        content = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise OutputDirError(f"cannot read {path}: {err}") from err
    return content if isinstance(content, dict) else {}


def dataset_name(folder: Path) -> str:
    """The dataset's ``Name`` from its dataset_description.json, else the folder's name."""
    return (_read_description(Path(folder)) or {}).get("Name") or Path(folder).name


def check_output_dir(out_dir: Path, bids_dir: Path) -> None:
    """Refuse an output folder whose files are not ours to add to.

    Allowed: a new or empty folder, or an earlier bids_infantseg output (resume or update).
    Inside the input dataset only ``derivatives/`` is a place for outputs.
    """
    out, raw = Path(out_dir).resolve(), Path(bids_dir).resolve()
    if out == raw:
        raise OutputDirError(f"the output folder {out_dir} is the BIDS dataset itself")
    if out in raw.parents:
        raise OutputDirError(f"the output folder {out_dir} contains the BIDS dataset {bids_dir}")
    if raw in out.parents and (raw / "derivatives") not in out.parents:
        raise OutputDirError(f"the output folder {out_dir} is inside the BIDS dataset; "
                             f"use {raw / 'derivatives' / NAME} or a folder outside it")
    description = _read_description(out)
    if description is None:
        return
    if description.get("DatasetType") != "derivative":
        raise OutputDirError(f"the output folder {out_dir} holds a raw BIDS dataset")
    names = [g.get("Name") for g in description.get("GeneratedBy", []) if isinstance(g, dict)]
    if NAME not in names:
        owner = ", ".join(str(n) for n in names) or "an unknown tool"
        raise OutputDirError(f"the output folder {out_dir} holds outputs of {owner}, "
                             f"not {NAME}; choose another folder")


def check_writable(folder: Path, role: str) -> None:
    """Create ``folder`` and write and remove a small file in it, so that an unwritable,
    read-only or full file system is one line before any work instead of a traceback midway.

    Trying beats ``os.access``: ACLs, root-squashed network shares and full disks only show
    when a write fails.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".write-test-", dir=folder)
        try:
            os.write(handle, b"\0" * 4096)
            os.fsync(handle)
        finally:
            os.close(handle)
            os.unlink(probe)
    except OSError as err:
        where = f" ({err.filename})" if err.filename and Path(err.filename) != folder else ""
        raise OutputDirError(f"cannot write to the {role} folder {folder}: "
                             f"{err.strerror or err}{where}") from err


def _container(container: Mapping[str, str] | None) -> dict[str, str] | None:
    if container is None:
        container = {key: os.environ.get(var, "") for key, var in CONTAINER_ENV.items()}
    found = {key: value for key, value in container.items() if value}
    return found or None


def _source_dataset(raw: Path) -> dict[str, str]:
    """The input's DOI when it has one, else its location as a file URL."""
    description = _read_description(raw) or {}
    doi = description.get("DatasetDOI")
    if isinstance(doi, str) and doi:
        return {"DOI": doi if doi.startswith("doi:") else f"doi:{doi}"}
    return {"URL": raw.as_uri()}


def write_dataset_description(out_dir: Path, *, bids_dir: Path, version: str,
                              container: Mapping[str, str] | None = None) -> Path:
    """The derivative's dataset_description.json (container read from the environment)."""
    raw = Path(bids_dir).resolve()
    raw_name = dataset_name(raw)
    generated_by: dict[str, Any] = {"Name": NAME, "Version": version, "CodeURL": CODE_URL}
    found = _container(container)
    if found:
        generated_by["Container"] = found
    description = {
        "Name": f"{NAME} segmentations of {raw_name}",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "derivative",
        "GeneratedBy": [generated_by],
        "SourceDatasets": [_source_dataset(raw)],
        "DatasetLinks": {RAW: raw.as_uri()},
    }
    return atomic_write_json(Path(out_dir) / "dataset_description.json", description)


def write_label_table(out_dir: Path, label_set: LabelSet) -> Path:
    """Top-level ``desc-<labels>_dseg.tsv``, which every ``desc-<labels>_dseg`` inherits, and
    its sidecar defining the ``brain`` column; colours are those the reports draw."""
    atomic_write_json(Path(out_dir) / f"desc-{label_set.name}_dseg.json", DSEG_COLUMNS)
    return atomic_write_text(Path(out_dir) / f"desc-{label_set.name}_dseg.tsv",
                             output_labels(label_set).dseg_tsv())


def write_bidsignore(out_dir: Path, extra: Iterable[str] = ()) -> Path:
    """``.bidsignore`` with our non-BIDS outputs, keeping lines others added."""
    path = Path(out_dir) / ".bidsignore"
    lines = path.read_text().splitlines() if path.is_file() else []
    lines += [line for line in (*BIDSIGNORE, *extra) if line not in lines]
    return atomic_write_text(path, "\n".join(lines) + "\n")


def write_readme(out_dir: Path, label_set: LabelSet) -> Path:
    """A README saying what the files are (BIDS recommends one in every dataset)."""
    text = f"""# {NAME} outputs

Segmentations of infant T2w images by {NAME} ({CODE_URL}), on each image's own grid.

- `desc-{label_set.name}_dseg.tsv`: the label table (index, name, abbreviation, color, and
  `brain`: yes where the label counts as brain or CSF; defined in its `.json`).
- `sub-*/[ses-*/]anat/*_space-T2w_desc-{label_set.name}_dseg.nii.gz`: label maps.
- `*_space-T2w_desc-brain_mask.nii.gz`: brain masks; `*_label-*_probseg.nii.gz`: class
  probabilities (when requested).
- `*_desc-{label_set.name}_volumes.tsv`: volume of each label (not BIDS-defined yet).

Each JSON sidecar names its source image, the model (name, version, SHA-256) and the age used.
"""
    return atomic_write_text(Path(out_dir) / "README.md", text)


def write_dataset_files(out_dir: Path, label_set: LabelSet) -> None:
    """The dataset-level files besides dataset_description.json: labels, README, .bidsignore."""
    write_label_table(out_dir, label_set)
    write_readme(out_dir, label_set)
    write_bidsignore(out_dir)


def _model(name: str, version: str, sha256: str,
           derived: dict | None = None) -> dict[str, Any]:
    """The model record; a derived model's adds its ``Network`` and ``Mapping``."""
    return {"Name": name, "Version": version, "SHA256": sha256, **(derived or {})}


def dseg_sidecar(*, source: str, labels: str, model_name: str, model_version: str,
                 model_sha256: str, age: Age | None,
                 model_derived: dict | None = None) -> dict[str, Any]:
    """Sidecar of ``..._space-T2w_desc-<labels>_dseg.nii.gz``.

    ``source`` is the T2w's path in the input dataset: the segmentation lies on its grid,
    hence also the SpatialReference. ``Age`` records which age (if any) informed the run.
    """
    return {
        "Description": f"{labels} tissue segmentation by {NAME} on the native T2w grid",
        "Sources": [bids_uri(source)],
        "SpatialReference": bids_uri(source),
        "Manual": False,
        "Model": _model(model_name, model_version, model_sha256, model_derived),
        "Age": None if age is None else {"Weeks": round(age.weeks, 3), "Source": age.source},
    }


def probseg_sidecar(*, source: str, label: str, model_name: str, model_version: str,
                    model_sha256: str, model_derived: dict | None = None) -> dict[str, Any]:
    """Sidecar of ``..._space-T2w_label-<L>_probseg.nii.gz`` (model probability of L)."""
    return {
        "Description": f"probability of {label} from {NAME}, resampled to the native T2w grid",
        "Sources": [bids_uri(source)],
        "SpatialReference": bids_uri(source),
        "Manual": False,
        "Model": _model(model_name, model_version, model_sha256, model_derived),
    }


def mask_sidecar(*, source: str, dseg: str) -> dict[str, Any]:
    """Sidecar of ``..._space-T2w_desc-brain_mask.nii.gz``; ``dseg`` is its path in the output."""
    return {
        "Description": "brain mask: union of the brain labels of the segmentation",
        "Type": "Brain",
        "Sources": [bids_uri(dseg, ""), bids_uri(source)],
        "SpatialReference": bids_uri(source),
    }


def volumes_sidecar(*, labels: str, entity_columns: Iterable[str] = ()) -> dict[str, Any]:
    """Column descriptions of ``..._desc-<labels>_volumes.tsv``.

    BIDS has no volume table yet; the structural-derivatives draft (BEP011) proposes
    ``_morph.tsv`` with a ``volume-mm3`` column. This table follows it where it fits.
    """
    columns: dict[str, Any] = {
        "participant_id": {"Description": "participant label, as in participants.tsv"},
        "session_id": {"Description": "session label, as in sessions.tsv (n/a if none)"},
    }
    for entity in entity_columns:
        columns[entity] = {"Description": f"{entity} entity of the source T2w image"}
    columns |= {
        "index": {"Description": f"label index in the segmentation (desc-{labels}_dseg.tsv)"},
        "name": {"Description": "label name"},
        "voxels": {"Description": "number of voxels with this label on the native grid"},
        "volume_mm3": {"Description": "voxels times the native voxel volume, at full double "
                                      "precision (the reports and the QC table round it) "
                                      "(BEP011 draft: volume-mm3)", "Units": "mm^3"},
    }
    return {
        "Description": f"Volume of each {labels} label, one row per label. No BIDS standard "
                       "exists yet; follows the BEP011 draft (_morph.tsv) where it fits.",
        **columns,
    }

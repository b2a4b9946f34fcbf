import errno
import json
import os
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from bids_infantseg.core.ages import Age
from bids_infantseg.io import derivatives
from bids_infantseg.io.derivatives import (
    OutputDirError,
    atomic_save_nifti,
    atomic_write_json,
    atomic_write_text,
    atomic_write_tsv,
    check_output_dir,
    check_writable,
    dseg_sidecar,
    mask_sidecar,
    probseg_sidecar,
    volumes_sidecar,
    write_bidsignore,
    write_dataset_description,
    write_dataset_files,
)
from bids_infantseg.io.discovery import Scan, discover
from bids_infantseg.io.naming import derivative_dir, derivative_name
from bids_infantseg.model.labels import DRAWEM9, read_dseg_tsv
from tests.bids_factory import example_dataset, write_description, write_json
from tests.validator import ACCEPTED_WARNINGS, validate


def _image(value: int = 1) -> nib.Nifti1Image:
    return nib.Nifti1Image(np.full((4, 4, 4), value, dtype=np.int16), np.eye(4))


def test_atomic_writers_round_trip(tmp_path):
    atomic_write_text(tmp_path / "a" / "t.txt", "hello\n")
    atomic_write_json(tmp_path / "j.json", {"x": [1, 2]})
    atomic_write_tsv(tmp_path / "t.tsv", pd.DataFrame({"index": [1, 2], "v": [0.5, None]}))
    atomic_save_nifti(_image(3), tmp_path / "i.nii.gz")
    assert (tmp_path / "a" / "t.txt").read_text() == "hello\n"
    assert json.loads((tmp_path / "j.json").read_text()) == {"x": [1, 2]}
    assert (tmp_path / "t.tsv").read_text() == "index\tv\n1\t0.5\n2\tn/a\n"
    assert (tmp_path / "i.nii.gz").read_bytes()[:2] == b"\x1f\x8b"  # still gzipped
    img = nib.load(tmp_path / "i.nii.gz")
    assert int(img.get_fdata()[0, 0, 0]) == 3
    assert img.header.get_xyzt_units()[0] == "mm"


def test_a_crash_mid_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "dseg.nii.gz"
    atomic_save_nifti(_image(1), target)
    before = target.read_bytes()

    def half_save(img, path):
        Path(path).write_bytes(b"\x1f\x8b half a file")
        raise OSError("disk full")

    monkeypatch.setattr(derivatives.nib, "save", half_save)
    with pytest.raises(OSError, match="disk full"):
        atomic_save_nifti(_image(2), target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dseg.nii.gz"]


def test_a_crash_mid_table_keeps_the_old_table(tmp_path, monkeypatch):
    target = atomic_write_tsv(tmp_path / "v.tsv", pd.DataFrame({"a": [1]}))

    def half_csv(self, path, **kwargs):
        Path(path).write_text("a\n")
        raise KeyboardInterrupt

    monkeypatch.setattr(pd.DataFrame, "to_csv", half_csv)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_tsv(target, pd.DataFrame({"a": [2]}))
    assert target.read_text() == "a\n1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["v.tsv"]


def test_dataset_description(tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    write_description(raw, Name="Baby study")
    monkeypatch.delenv("BIDS_INFANTSEG_CONTAINER_TYPE", raising=False)
    monkeypatch.delenv("BIDS_INFANTSEG_CONTAINER_TAG", raising=False)
    path = write_dataset_description(tmp_path / "out", bids_dir=raw, version="1.2.3")
    desc = json.loads(path.read_text())
    assert desc["DatasetType"] == "derivative"
    assert desc["GeneratedBy"] == [{"Name": "bids_infantseg", "Version": "1.2.3",
                                    "CodeURL": derivatives.CODE_URL}]
    assert desc["SourceDatasets"] == [{"URL": raw.resolve().as_uri()}]
    assert desc["DatasetLinks"] == {"raw": raw.resolve().as_uri()}
    assert "Baby study" in desc["Name"]


def test_dataset_description_container_and_doi(tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    write_description(raw, DatasetDOI="10.18112/openneuro.ds000001.v1.0.0")
    monkeypatch.setenv("BIDS_INFANTSEG_CONTAINER_TYPE", "docker")
    monkeypatch.setenv("BIDS_INFANTSEG_CONTAINER_TAG", "infantseg:0.1.0")
    desc = json.loads(write_dataset_description(tmp_path / "out", bids_dir=raw,
                                                version="0.1.0").read_text())
    assert desc["GeneratedBy"][0]["Container"] == {"Type": "docker", "Tag": "infantseg:0.1.0"}
    assert desc["SourceDatasets"] == [{"DOI": "doi:10.18112/openneuro.ds000001.v1.0.0"}]
    explicit = {"Type": "apptainer", "Tag": "infantseg.sif"}
    desc = json.loads(write_dataset_description(tmp_path / "out", bids_dir=raw, version="0.1.0",
                                                container=explicit).read_text())
    assert desc["GeneratedBy"][0]["Container"] == explicit


@pytest.fixture
def raw(tmp_path) -> Path:
    write_description(tmp_path / "raw")
    return tmp_path / "raw"


@pytest.mark.parametrize("out", ["new", "raw/derivatives/bids_infantseg"])
def test_output_dir_allowed(raw, out):
    check_output_dir(raw.parent / out, raw)


def test_own_earlier_output_is_allowed(raw, tmp_path):
    write_dataset_description(tmp_path / "out", bids_dir=raw, version="0.0.1")
    check_output_dir(tmp_path / "out", raw)


@pytest.mark.parametrize(("out", "message"), [
    ("raw", "is the BIDS dataset itself"),
    ("raw/sub-01/out", "inside the BIDS dataset"),
    (".", "contains the BIDS dataset"),
])
def test_output_dir_refused_by_place(raw, out, message):
    with pytest.raises(OutputDirError, match=message):
        check_output_dir(raw.parent / out, raw)


def test_output_dir_of_another_tool_or_raw_dataset_is_refused(raw, tmp_path):
    write_json(tmp_path / "fmriprep" / "dataset_description.json",
               {"Name": "x", "BIDSVersion": "1.10.0", "DatasetType": "derivative",
                "GeneratedBy": [{"Name": "fMRIPrep"}]})
    with pytest.raises(OutputDirError, match="outputs of fMRIPrep"):
        check_output_dir(tmp_path / "fmriprep", raw)
    write_description(tmp_path / "other_raw")
    with pytest.raises(OutputDirError, match="raw BIDS dataset"):
        check_output_dir(tmp_path / "other_raw", raw)


def test_dataset_files(tmp_path):
    (tmp_path / ".bidsignore").write_text("extra/\n")
    write_dataset_files(tmp_path, DRAWEM9)
    table = read_dseg_tsv(tmp_path / "desc-drawem9_dseg.tsv")
    assert table.labels == DRAWEM9.labels
    assert table.non_brain == DRAWEM9.non_brain  # the brain column says which are not brain
    sidecar = json.loads((tmp_path / "desc-drawem9_dseg.json").read_text())
    assert set(sidecar["brain"]["Levels"]) == {"yes", "no"}
    write_bidsignore(tmp_path)
    lines = (tmp_path / ".bidsignore").read_text().splitlines()
    assert lines[0] == "extra/"
    assert len(lines) == len(set(lines))
    assert {"*_volumes.tsv", "*_volumes.json", "figures", "*.html", "logs", "group",
            "models"} <= set(lines)
    assert (tmp_path / "README.md").is_file()


def test_sidecars():
    source = "sub-01/anat/sub-01_T2w.nii.gz"
    dseg = dseg_sidecar(source=source, labels="drawem9", model_name="m", model_version="1",
                        model_sha256="ab", age=Age(6.0, "sessions.tsv:age_weeks"))
    assert dseg["Sources"] == ["bids:raw:sub-01/anat/sub-01_T2w.nii.gz"]
    assert dseg["SpatialReference"] == "bids:raw:sub-01/anat/sub-01_T2w.nii.gz"
    assert dseg["Model"] == {"Name": "m", "Version": "1", "SHA256": "ab"}
    assert dseg["Age"] == {"Weeks": 6.0, "Source": "sessions.tsv:age_weeks"}
    assert dseg_sidecar(source=source, labels="drawem9", model_name="m", model_version="1",
                        model_sha256="ab", age=None)["Age"] is None
    mask = mask_sidecar(source=source, dseg="sub-01/anat/x_dseg.nii.gz")
    assert mask["Type"] == "Brain"
    assert mask["Sources"][0] == "bids::sub-01/anat/x_dseg.nii.gz"
    volumes = volumes_sidecar(labels="drawem9", entity_columns=["run"])
    assert {"participant_id", "session_id", "run", "index", "name", "voxels",
            "volume_mm3"} <= set(volumes)
    assert "BEP011" in volumes["Description"]


def _write_outputs(scan: Scan, out: Path) -> None:
    """What a participant run writes for one scan, named as DESIGN.md says."""
    folder = out / derivative_dir(scan.entities)
    native = nib.load(scan.path)
    labels = np.random.default_rng(0).integers(0, 10, native.shape).astype(np.int16)
    model = {"model_name": "drawem9-quicknat", "model_version": "0.1.0",
             "model_sha256": "0" * 64}

    def name(suffix: str, extension: str = ".nii.gz", **entities: str) -> str:
        return derivative_name(scan.entities, suffix=suffix, extension=extension, **entities)

    dseg = name("dseg", space="T2w", desc="drawem9")
    atomic_save_nifti(nib.Nifti1Image(labels, native.affine), folder / dseg)
    atomic_write_json(folder / name("dseg", ".json", space="T2w", desc="drawem9"),
                      dseg_sidecar(source=scan.rel_path, labels="drawem9", age=scan.age,
                                   **model))
    atomic_save_nifti(nib.Nifti1Image((labels > 0).astype(np.uint8), native.affine),
                      folder / name("mask", space="T2w", desc="brain"))
    atomic_write_json(folder / name("mask", ".json", space="T2w", desc="brain"),
                      mask_sidecar(source=scan.rel_path,
                                   dseg=(derivative_dir(scan.entities) / dseg).as_posix()))
    probs = np.random.default_rng(1).random(native.shape).astype(np.float32)
    atomic_save_nifti(nib.Nifti1Image(probs, native.affine),
                      folder / name("probseg", space="T2w", label="WM"))
    atomic_write_json(folder / name("probseg", ".json", space="T2w", label="WM"),
                      probseg_sidecar(source=scan.rel_path, label="WM", **model))
    table = pd.DataFrame({"participant_id": f"sub-{scan.subject}", "session_id": scan.session,
                          "index": [1, 2], "name": ["CSF", "cGM"], "voxels": [10, 20],
                          "volume_mm3": [10.0, 20.0]})
    atomic_write_tsv(folder / name("volumes", ".tsv", desc="drawem9"), table)
    atomic_write_json(folder / name("volumes", ".json", desc="drawem9"),
                      volumes_sidecar(labels="drawem9"))


def test_outputs_pass_the_bids_validator(tmp_path):
    raw = example_dataset(tmp_path / "raw")
    out = raw / "derivatives" / "bids_infantseg"
    check_output_dir(out, raw)
    write_dataset_description(out, bids_dir=raw, version="0.1.0")
    write_dataset_files(out, DRAWEM9)
    for scan in discover(raw, output_dir=out):
        _write_outputs(scan, out)
    errors, warnings = validate(out)
    assert errors == [], errors
    assert warnings <= ACCEPTED_WARNINGS, warnings


def test_dseg_tsv_brain_column(tmp_path):
    plain = tmp_path / "desc-manual_dseg.tsv"
    plain.write_text("index\tname\n0\tOutside\n1\tBrain\n2\tSkull\n")
    assert read_dseg_tsv(plain).non_brain == (0,)  # no column: only 0 is outside
    flagged = tmp_path / "desc-flag_dseg.tsv"
    flagged.write_text("index\tname\tbrain\n0\tOutside\tno\n1\tBrain\tyes\n2\tSkull\tno\n")
    assert read_dseg_tsv(flagged).non_brain == (0, 2)
    flagged.write_text("index\tname\tbrain\n0\tOutside\tNo\n1\tBrain\tYes\n2\tSkull\t NO\n")
    assert read_dseg_tsv(flagged).non_brain == (0, 2)  # case and spaces as validated
    flagged.write_text("index\tname\tbrain\n0\tOutside\tmaybe\n")
    with pytest.raises(ValueError, match="desc-flag_dseg.tsv: column 'brain' must hold yes or no"):
        read_dseg_tsv(flagged)


def test_a_writable_folder_is_created_and_left_empty(tmp_path):
    check_writable(tmp_path / "new" / "out", "output")
    assert list((tmp_path / "new" / "out").iterdir()) == []


def test_a_full_disk_is_one_line_naming_the_folder(tmp_path, monkeypatch):
    def full(handle):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("os.fsync", full)
    message = f"cannot write to the work folder {tmp_path}: No space left on device"
    with pytest.raises(OutputDirError, match=f"^{re.escape(message)}$"):
        check_writable(tmp_path, "work")
    assert list(tmp_path.iterdir()) == []  # the probe is removed

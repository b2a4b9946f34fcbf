"""A scan's output names, and the check that they are on disk and readable (plain files)."""

from __future__ import annotations

import gzip

import pytest

from bids_infantseg.io.naming import parse_entities
from bids_infantseg.io.scan_outputs import ScanOutputs, output_problems, scan_outputs, sidecar
from bids_infantseg.model.labels import ASEG, DRAWEM9
from tests.bids_factory import write_json, write_nifti, write_scan, write_tsv


@pytest.fixture
def outputs(tmp_path) -> ScanOutputs:
    scan = write_scan(tmp_path / "bids", subject="01", session="02", run="1")
    return scan_outputs(scan, tmp_path / "out", DRAWEM9, write_probseg=True)


def write_all(outputs: ScanOutputs) -> None:
    """Every output as a small valid file of its kind."""
    for path in outputs.files():
        if path.name.endswith(".nii.gz"):
            write_nifti(path, dtype="int16")
        elif path.suffix == ".json":
            write_json(path, {"Description": "x"})
        elif path.suffix == ".tsv":
            write_tsv(path, [{"index": 0, "name": "background"}])
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("<html>report</html>")


def test_names_follow_the_scan_and_the_label_set(outputs, tmp_path):
    anat = tmp_path / "out" / "sub-01" / "ses-02" / "anat"
    stem = "sub-01_ses-02_run-1"
    assert outputs.dseg == anat / f"{stem}_space-T2w_desc-drawem9_dseg.nii.gz"
    assert outputs.mask == anat / f"{stem}_space-T2w_desc-brain_mask.nii.gz"
    assert outputs.volumes == anat / f"{stem}_desc-drawem9_volumes.tsv"
    assert outputs.qc == anat / f"{stem}_desc-drawem9_qc.tsv"
    assert outputs.report == tmp_path / "out" / "sub-01" / "figures" / f"{stem}_report.html"
    assert [p.name for p in outputs.probseg] == [
        f"{stem}_space-T2w_label-{label.abbreviation}_probseg.nii.gz" for label in DRAWEM9.labels]
    assert sidecar(outputs.dseg).name == f"{stem}_space-T2w_desc-drawem9_dseg.json"
    assert sidecar(outputs.volumes).name == f"{stem}_desc-drawem9_volumes.json"
    files = outputs.files()
    assert len(files) == len(set(files)) == 9 + 2 * len(DRAWEM9)
    assert files[-1] == outputs.dseg  # written last: its presence means the rest is there


def test_aseg_outputs_are_named_as_nibabies_collects_them(tmp_path):
    """The aseg label map and the mask as NiBabies' --derivatives finds them
    (tests/test_nibabies.py); abbreviations such as ``L-Hip`` lose what a BIDS label cannot
    hold in probseg names."""
    scan = write_scan(tmp_path / "bids", subject="01", session="02")
    outputs = scan_outputs(scan, tmp_path / "out", ASEG, write_probseg=True)
    assert outputs.dseg.name == "sub-01_ses-02_space-T2w_desc-aseg_dseg.nii.gz"
    assert outputs.mask.name == "sub-01_ses-02_space-T2w_desc-brain_mask.nii.gz"
    labels = [parse_entities(p.name)["label"] for p in outputs.probseg]
    assert len(set(labels)) == len(ASEG) and all(label.isalnum() for label in labels)


def test_without_probseg_none_is_expected(tmp_path):
    scan = write_scan(tmp_path / "bids", subject="01")
    assert scan_outputs(scan, tmp_path / "out", DRAWEM9, write_probseg=False).probseg == ()


def test_complete_outputs_have_no_problem(outputs):
    write_all(outputs)
    assert output_problems(outputs) == {}


def test_nothing_written_is_every_file_missing(outputs):
    assert output_problems(outputs) == {path: "missing" for path in outputs.files()}


def test_each_missing_or_unreadable_file_is_named(outputs):
    write_all(outputs)
    sidecar(outputs.mask).unlink()
    outputs.dseg.write_bytes(gzip.compress(b"not a nifti header"))
    outputs.volumes.write_text("")
    sidecar(outputs.qc).write_text("{")
    outputs.report.write_text(" \n")
    problems = output_problems(outputs)
    assert set(problems) == {sidecar(outputs.mask), outputs.dseg, outputs.volumes,
                             sidecar(outputs.qc), outputs.report}
    assert problems[sidecar(outputs.mask)] == "missing"
    assert all(problems[p].startswith("unreadable (") for p in set(problems)
               if p != sidecar(outputs.mask))

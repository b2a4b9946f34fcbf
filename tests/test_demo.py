"""The demo dataset: valid BIDS, ages per session, non-trivial orientations, true labels."""

from __future__ import annotations

import json
from dataclasses import replace

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from bids_infantseg import demo, qc
from bids_infantseg.ages import WEEKS_PER_MONTH
from bids_infantseg.model.labels import DRAWEM9
from bids_infantseg.volumes import label_volumes
from tests.validator import ACCEPTED_WARNINGS, validate


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return demo.write_demo_dataset(tmp_path_factory.mktemp("demo") / "bids")


def test_layout_and_ages(dataset):
    assert json.loads((dataset / "dataset_description.json").read_text())["DatasetType"] == "raw"
    participants = pd.read_csv(dataset / "participants.tsv", sep="\t")
    assert list(participants.participant_id) == ["sub-01", "sub-02"]
    assert json.loads((dataset / "sessions.json").read_text())["age"]["Units"] == "months"
    sessions = pd.read_csv(dataset / "sub-01" / "sub-01_sessions.tsv", sep="\t")
    assert list(sessions.session_id) == ["ses-01", "ses-02"]
    assert sessions.age.nunique() == 2
    t2w = sorted(p.relative_to(dataset).as_posix() for p in dataset.glob("sub-*/ses-*/anat/*"))
    assert t2w == [f"{s.folder}/{s.stem}_T2w.{ext}" for s in demo.SCANS for ext in
                   ("json", "nii.gz")]


def test_images_have_realistic_affines_and_truth(dataset):
    codes = set()
    for scan in demo.SCANS:
        image = nib.load(dataset / scan.folder / f"{scan.stem}_T2w.nii.gz")
        truth = nib.load(dataset / "derivatives" / "phantom-truth" / scan.folder
                         / f"{scan.stem}_space-T2w_desc-drawem9_dseg.nii.gz")
        assert max(image.shape) <= 160 and not np.allclose(image.affine, np.eye(4))
        np.testing.assert_allclose(truth.affine, image.affine)
        assert int(image.header["sform_code"]) == int(image.header["qform_code"]) == 1
        assert set(np.unique(np.asarray(truth.dataobj))) == set(range(10))
        codes.add(nib.aff2axcodes(image.affine))
    assert len(codes) == len(demo.SCANS) and ("R", "A", "S") in codes  # one is an oblique RAS
    rotation = nib.load(dataset / demo.SCANS[1].folder / f"{demo.SCANS[1].stem}_T2w.nii.gz")
    assert np.count_nonzero(np.round(rotation.affine[:3, :3], 3)) > 3  # oblique


def test_bids_validator_finds_no_error(dataset):
    errors, warnings = validate(dataset)
    assert errors == []
    assert warnings <= ACCEPTED_WARNINGS | {"JSON_KEY_RECOMMENDED"}


def test_main_writes_and_prints(tmp_path, capsys, monkeypatch):
    small = replace(demo.SCANS[0], shape=(40, 48, 40), voxel_size=(4.0, 4.0, 4.0))
    monkeypatch.setattr(demo, "SCANS", (small,))
    assert demo.main([str(tmp_path / "out")]) == 0
    assert capsys.readouterr().out == (
        "wrote the generated demo dataset (1 T2w scans of 1 synthetic infants, true labels in "
        f"derivatives/phantom-truth) to {(tmp_path / 'out').resolve()}\n")
    assert (tmp_path / "out" / "sub-01" / "ses-01" / "anat" / "sub-01_ses-01_T2w.nii.gz").is_file()


@pytest.mark.parametrize("scan", demo.SCANS, ids=lambda s: s.stem)
def test_phantoms_have_a_real_infants_brain_volume(dataset, scan):
    """Brain tissue of the true labels: the newborn within 350-550 mL (term newborns 350-450,
    dHCP; the real 1-month aseg map 537), and no scan flagged by QC's bounds for its age
    (before: the newborn had 242 mL, and its segmentation was flagged below 325-667)."""
    truth = nib.load(dataset / "derivatives" / "phantom-truth" / scan.folder
                     / f"{scan.stem}_space-T2w_desc-drawem9_dseg.nii.gz")
    volumes = label_volumes(np.asarray(truth.dataobj), truth.affine, DRAWEM9)
    tissue_ml = volumes.loc[volumes["index"].isin(qc.tissue_indices(DRAWEM9)),
                            "volume_mm3"].sum() / 1000
    if scan.age_months < 1:
        assert 350 <= tissue_ml <= 550, tissue_ml
    assert qc.volume_check(tissue_ml, scan.age_months * WEEKS_PER_MONTH) == ("ok", {})

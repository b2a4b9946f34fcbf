"""The demo dataset: valid BIDS, ages per session, non-trivial orientations, true labels,
real infant anatomy from the shipped maps, and a destination it may not overwrite."""

from __future__ import annotations

import configparser
import json
from dataclasses import replace
from fnmatch import fnmatch
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from bids_infantseg.cli import demo
from bids_infantseg.core import qc
from bids_infantseg.core.ages import WEEKS_PER_MONTH
from bids_infantseg.core.volumes import label_volumes
from bids_infantseg.model.card import bundled_model_names, bundled_models_dir, read_card
from bids_infantseg.model.labels import DRAWEM9
from bids_infantseg.synth import brain_volume_ml
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
    assert list(sessions.age) == [s.age_months for s in demo.SCANS if s.subject == "01"]
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


SMALL = replace(demo.SCANS[0], shape=(40, 48, 40), voxel_size=(4.0, 4.0, 4.0))


def test_main_writes_and_prints(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(demo, "SCANS", (SMALL,))
    assert demo.main([str(tmp_path / "out")]) == 0
    assert capsys.readouterr().out == (
        "wrote the generated demo dataset (1 T2w scans of real infant anatomy for 1 made-up "
        "participants, true labels in derivatives/phantom-truth) to "
        f"{(tmp_path / 'out').resolve()}\n")
    assert (tmp_path / "out" / "sub-01" / "ses-01" / "anat" / "sub-01_ses-01_T2w.nii.gz").is_file()


def test_main_refuses_a_folder_that_is_not_empty(tmp_path, capsys):
    """Before: the demo overwrote another dataset's dataset_description.json and
    participants.tsv. Now one line, exit 2, nothing touched."""
    (tmp_path / "participants.tsv").write_text("participant_id\nsub-99\n")
    assert demo.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == (f"bids_infantseg_demo: error: {tmp_path}: folder is not empty; name a new "
                   "or empty folder, or pass --force to write the demo into it (replacing "
                   "files of the same name)\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["participants.tsv"]
    assert (tmp_path / "participants.tsv").read_text() == "participant_id\nsub-99\n"


def test_main_refuses_a_file(tmp_path, capsys):
    """Before: a FileExistsError traceback. Now one line naming the file, exit 2."""
    target = tmp_path / "notes.txt"
    target.write_text("mine\n")
    assert demo.main([str(target), "--force"]) == 2
    assert capsys.readouterr().err == (f"bids_infantseg_demo: error: {target}: exists and is "
                                       "not a folder; name a new folder\n")
    assert target.read_text() == "mine\n"


def test_main_reports_a_file_system_failure_in_one_line(tmp_path, capsys):
    """A parent that is a file: one line with the reason, exit 1 (no traceback)."""
    (tmp_path / "file").write_text("")
    assert demo.main([str(tmp_path / "file" / "bids")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("bids_infantseg_demo: error: ") and err.count("\n") == 1, err
    assert "Not a directory" in err


def test_force_writes_into_a_folder_and_keeps_other_files(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "SCANS", (SMALL,))
    (tmp_path / "participants.tsv").write_text("participant_id\nsub-99\n")
    (tmp_path / "mine.txt").write_text("kept\n")
    assert demo.main([str(tmp_path), "--force"]) == 0
    assert (tmp_path / "mine.txt").read_text() == "kept\n"
    assert "sub-01" in (tmp_path / "participants.tsv").read_text()
    assert not list(tmp_path.rglob(".*tmp-*"))  # atomic writes leave no temporary behind


def test_an_empty_folder_is_accepted(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "SCANS", (SMALL,))
    assert demo.main([str(tmp_path)]) == 0
    assert (tmp_path / "dataset_description.json").is_file()


def test_scans_are_painted_from_the_shipped_real_maps(dataset):
    """Before: procedural phantoms. Now each scan names its real infant map, which ships in
    the package with its licence and credit, and whose anatomy (scaled to the scan's age)
    the truth holds: hippocampus and amygdala, and a brain near the age's typical volume."""
    for scan in demo.SCANS:
        sidecar = json.loads((dataset / scan.folder / f"{scan.stem}_T2w.json").read_text())
        assert sidecar["SyntheticPhantom"]["LabelMap"].endswith(scan.labelmap)
        source = nib.load(demo.MAPS / scan.labelmap)
        assert source.get_data_dtype() == np.uint8
        truth = nib.load(dataset / "derivatives" / "phantom-truth" / scan.folder
                         / f"{scan.stem}_space-T2w_desc-drawem9_dseg.nii.gz")
        labels = np.asarray(truth.dataobj)
        voxel_ml = abs(np.linalg.det(truth.affine[:3, :3])) / 1000
        brain_ml = np.isin(labels, [2, 3, 5, 6, 7, 8, 9]).sum() * voxel_ml
        assert 0.75 <= brain_ml / brain_volume_ml(scan.age_months) <= 1.15, brain_ml
        assert (labels == 9).sum() * voxel_ml > 1.0
    assert "Apache License" in (demo.MAPS / "LICENSE").read_text()
    assert "Apache-2.0" in (demo.MAPS / "README.md").read_text()
    assert (dataset / "LICENSE").read_text() == (demo.MAPS / "LICENSE").read_text()


def test_shipped_maps_are_small():
    sizes = {p.name: p.stat().st_size for p in demo.MAPS.glob("*.nii.gz")}
    assert set(sizes) == {scan.labelmap for scan in demo.SCANS}
    assert sum(sizes.values()) < 400_000, sizes


def test_package_data_globs_cover_every_data_file():
    """Before: the demo maps were not in setup.cfg's package_data, so a wheel lacked them."""
    root = Path(demo.__file__).resolve().parents[2]
    config = configparser.ConfigParser()
    config.read(root / "setup.cfg")
    globs = config["options.package_data"]["bids_infantseg"].split()
    package = root / "bids_infantseg"
    files = [p.relative_to(package).as_posix() for p in (package / "data").rglob("*")
             if p.is_file() and "__pycache__" not in p.parts]
    assert [f for f in files if not any(fnmatch(f, g) for g in globs)] == []


def test_dataset_says_which_models_trained_on_each_map(dataset):
    """Taken from the bundled cards: a map a model holds out is "not used to train" it."""
    description = json.loads((dataset / "dataset_description.json").read_text())
    assert description["License"] == "Apache-2.0"
    readme = (dataset / "README").read_text()
    for name in bundled_model_names():
        card = read_card(bundled_models_dir() / name)
        held_out = {f for source in card.training["data"]["held_out"] for f in source["files"]}
        for scan in demo.SCANS:
            trained = demo.training_use(scan.labelmap)[f"{card.name} {card.version}"]
            assert trained is (scan.labelmap not in held_out)
            assert scan.labelmap in description["Acknowledgements"]
            assert scan.labelmap in readme


def test_trained_files_follow_the_warm_start():
    parent = {"data": {"sources": [{"files": ["1mo_aseg.nii.gz"]}]}}
    child = {"data": {"sources": [{"files": ["3mo_aseg.nii.gz"]}, {"files": []}]},
             "warm_start": {"training": parent}}
    assert demo._trained_files(child) == {"1mo_aseg.nii.gz", "3mo_aseg.nii.gz"}
    assert demo._trained_files({"warm_start": {"training": parent}}) is None


@pytest.mark.parametrize("scan", demo.SCANS, ids=lambda s: s.stem)
def test_truth_brain_volume_is_plausible_for_its_age(dataset, scan):
    """Brain tissue of the true labels is within QC's bounds for the scan's age."""
    truth = nib.load(dataset / "derivatives" / "phantom-truth" / scan.folder
                     / f"{scan.stem}_space-T2w_desc-drawem9_dseg.nii.gz")
    volumes = label_volumes(np.asarray(truth.dataobj), truth.affine, DRAWEM9)
    tissue_ml = volumes.loc[volumes["index"].isin(qc.tissue_indices(DRAWEM9)),
                            "volume_mm3"].sum() / 1000
    assert qc.volume_check(tissue_ml, scan.age_months * WEEKS_PER_MONTH) == ("ok", {})

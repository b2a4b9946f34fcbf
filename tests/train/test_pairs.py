"""Finding training pairs: labels matched to T2w scans by entities, grids checked, tables read."""

from __future__ import annotations

import logging
import shutil

import nibabel as nib
import numpy as np
import pytest

from bids_infantseg.model.labels import DRAWEM9
from bids_infantseg.train.pairs import TrainDataError, find_training_data
from tests.bids_factory import write_tsv
from tests.train.factory import bobs_dataset, labelled_dataset


def find(root, labels, **kwargs):
    return find_training_data(root, labels, work_dir=root.parent / "work", **kwargs)


def test_scans_and_labels_pair_by_entities_and_the_table_gives_the_label_set(tmp_path):
    root, labels = labelled_dataset(tmp_path / "bids", ("01", "02"), sessions=("a", "b"))
    data = find(root, labels)
    assert [p.key for p in data.pairs] == ["sub-01_ses-a", "sub-01_ses-b", "sub-02_ses-a",
                                           "sub-02_ses-b"]
    assert all(p.labels.name == f"{p.key}_desc-manual_dseg.nii.gz" for p in data.pairs)
    assert data.label_set.name == "manual"
    assert [lab.name for lab in data.label_set.labels] == ["Outside", "Shell", "Core", "Blob"]
    assert data.skipped == []


def test_dhcp_layout_labels_name_fewer_entities_and_only_the_scan_on_their_grid_pairs(tmp_path):
    """dHCP: sub-X_ses-Y_desc-drawem9_dseg (no run-, no dseg.tsv) beside raw runs; only the
    run on the label grid pairs; drawem9 comes from the built-in table."""
    root, labels = labelled_dataset(tmp_path / "bids", ("01",), sessions=("1",),
                                    table=None, desc="drawem9")
    anat = root / "sub-01" / "ses-1" / "anat"
    (anat / "sub-01_ses-1_T2w.nii.gz").rename(anat / "sub-01_ses-1_run-1_T2w.nii.gz")
    img = nib.load(anat / "sub-01_ses-1_run-1_T2w.nii.gz")
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj)[:-2], img.affine),
             anat / "sub-01_ses-1_run-2_T2w.nii.gz")  # another grid
    data = find(root, labels, desc="drawem9")
    assert [p.key for p in data.pairs] == ["sub-01_ses-1_run-1"]
    assert data.label_set == DRAWEM9 and data.table is None
    assert [(s.item.split("/")[-1], "not on the grid" in s.reason) for s in data.skipped] == \
        [("sub-01_ses-1_run-2_T2w.nii.gz", True)]


def test_scan_without_labels_is_left_out_and_logged(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="bids_infantseg")
    root, labels = labelled_dataset(tmp_path / "bids", ("01", "02", "03"))
    shutil.rmtree(labels / "sub-02")
    data = find(root, labels)
    assert [p.subject for p in data.pairs] == ["01", "03"]
    assert [(s.item, s.reason) for s in data.skipped] == \
        [("sub-02/anat/sub-02_T2w.nii.gz", "no label map")]
    assert "left out sub-02/anat/sub-02_T2w.nii.gz: no label map" in caplog.text


def test_two_label_maps_for_one_scan_need_labels_desc(tmp_path):
    root, labels = labelled_dataset(tmp_path / "bids", ("01",))
    anat = labels / "sub-01" / "anat"
    shutil.copy(anat / "sub-01_desc-manual_dseg.nii.gz", anat / "sub-01_desc-other_dseg.nii.gz")
    with pytest.raises(TrainDataError, match="--labels-desc"):
        find(root, labels)
    assert len(find(root, labels, desc="manual").pairs) == 1


def test_missing_lookup_table_is_a_clear_error(tmp_path):
    root, labels = labelled_dataset(tmp_path / "bids", ("01",), table=None)
    with pytest.raises(TrainDataError, match="no lookup table.*desc-manual_dseg.tsv"):
        find(root, labels)


def test_table_beside_the_file_wins_and_background_is_added(tmp_path):
    root, labels = labelled_dataset(tmp_path / "bids", ("01",))
    (labels / "sub-01" / "anat" / "sub-01_desc-manual_dseg.tsv").write_text(
        "index\tname\n1\tShell\n2\tCore\n3\tBlob\n")
    data = find(root, labels)
    assert data.table.parent.name == "anat"
    assert data.label_set.indices.tolist() == [0, 1, 2, 3]


def test_no_label_maps_is_a_clear_error(tmp_path):
    root, labels = labelled_dataset(tmp_path / "bids", ("01",))
    with pytest.raises(TrainDataError, match="no sub-\\*_dseg.*desc-nope"):
        find(root, labels, desc="nope")
    with pytest.raises(TrainDataError, match="no such folder"):
        find(root, tmp_path / "missing")


def test_labels_on_no_scan_grid_is_a_clear_error(tmp_path):
    root, labels = labelled_dataset(tmp_path / "bids", ("01",))
    path = labels / "sub-01" / "anat" / "sub-01_desc-manual_dseg.nii.gz"
    img = nib.load(path)
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj), img.affine * 2), path)
    with pytest.raises(TrainDataError, match="no T2w scan .* has a label map .* on its grid"):
        find(root, labels)


def test_a_dhcp_derivative_folder_can_be_both_the_scans_and_the_labels(tmp_path):
    """dhcp_anat_pipeline holds sub-X_ses-Y_T2w (on the label grid) beside the labels; the
    bias-corrected desc-restore_T2w is not a raw T2w and is not picked up."""
    raw, labels = labelled_dataset(tmp_path / "bids", ("01", "02"), sessions=("1",),
                                   table=None, desc="drawem9")
    for t2w in raw.rglob("*_T2w.nii.gz"):
        rel = t2w.relative_to(raw)
        shutil.copy(t2w, labels / rel)
        shutil.copy(t2w, labels / rel.parent / rel.name.replace("_T2w", "_desc-restore_T2w"))
    for subject, weeks in (("01", "41.5"), ("02", "44")):  # dHCP: post-menstrual scan_age
        write_tsv(labels / f"sub-{subject}" / f"sub-{subject}_sessions.tsv",
                  [{"session_id": "ses-1", "scan_age": weeks}])
    data = find(labels, labels, desc="drawem9")
    assert [p.scan.path.name for p in data.pairs] == ["sub-01_ses-1_T2w.nii.gz",
                                                      "sub-02_ses-1_T2w.nii.gz"]
    assert all(p.scan.path.parent == p.labels.parent for p in data.pairs)
    assert [p.scan.age.weeks for p in data.pairs] == [1.5, 4.0]  # postnatal, from term


def test_brain_column_of_the_table_marks_non_brain_labels(tmp_path):
    root, labels = labelled_dataset(tmp_path / "bids", ("01",))
    (labels / "desc-manual_dseg.tsv").write_text(
        "index\tname\tbrain\n0\tOutside\tno\n1\tShell\tno\n2\tCore\tyes\n3\tBlob\tyes\n")
    assert find(root, labels).label_set.non_brain == (0, 1)
    (labels / "desc-manual_dseg.tsv").write_text("index\tname\tbrain\n0\tOutside\t1\n")
    with pytest.raises(TrainDataError, match="desc-manual_dseg.tsv: column 'brain'"):
        find(root, labels)


def test_baby_open_brains_layout_pairs_each_t2w_with_the_aseg_beside_it(tmp_path):
    """ds005450 as it is: space-INFANTMNIacpc T2w and desc-aseg dseg in the raw dataset,
    given as both datasets; the mapping's target is the label set, dseg.tsv is not read."""
    root = bobs_dataset(tmp_path / "ds005450")
    data = find(root, root, labels_map="aseg-to-drawem9")
    assert [p.key for p in data.pairs] == ["sub-01_ses-1mo_space-INFANTMNIacpc",
                                           "sub-01_ses-6mo_space-INFANTMNIacpc",
                                           "sub-02_ses-3mo_space-INFANTMNIacpc"]
    assert all(p.labels.name == f"{p.key}_desc-aseg_dseg.nii.gz" for p in data.pairs)
    assert all(p.mapping.name == "aseg-to-drawem9" for p in data.pairs)
    assert data.label_set == DRAWEM9 and data.table.name == "aseg-to-drawem9.tsv"
    assert data.skipped == []
    with pytest.raises(TrainDataError, match="--labels-map .*no such file or shipped"):
        find(root, root, labels_map="aseg-to-nothing")


def test_a_scan_naming_a_space_takes_only_labels_in_that_space(tmp_path):
    root = bobs_dataset(tmp_path / "bids", {"01": ("1mo",), "02": ("1mo",)})
    anat = root / "sub-02" / "ses-1mo" / "anat"
    label = anat / "sub-02_ses-1mo_space-INFANTMNIacpc_desc-aseg_dseg.nii.gz"
    label.rename(anat / "sub-02_ses-1mo_space-other_desc-aseg_dseg.nii.gz")
    data = find(root, root, labels_map="aseg-to-drawem9")
    assert [p.subject for p in data.pairs] == ["01"]
    assert ("sub-02/ses-1mo/anat/sub-02_ses-1mo_space-INFANTMNIacpc_T2w.nii.gz",
            "no label map") in [(s.item, s.reason) for s in data.skipped]


def test_a_scan_naming_no_space_ignores_the_labels_space(tmp_path):
    root, labels = labelled_dataset(tmp_path / "bids", ("01",))
    anat = labels / "sub-01" / "anat"
    (anat / "sub-01_desc-manual_dseg.nii.gz").rename(anat / "sub-01_space-T2w_desc-manual_dseg"
                                                             ".nii.gz")
    assert [p.key for p in find(root, labels).pairs] == ["sub-01"]


def test_label_maps_in_the_output_folder_are_not_labels(tmp_path):
    """--labels at the dataset root, outputs inside it: segmentations written there by an
    earlier participant run must not count as a second label map."""
    root = bobs_dataset(tmp_path / "bids", {"01": ("1mo",)})
    out = root / "derivatives" / "infantseg"
    anat = out / "sub-01" / "ses-1mo" / "anat"
    anat.mkdir(parents=True)
    shutil.copy(root / "sub-01" / "ses-1mo" / "anat" /
                "sub-01_ses-1mo_space-INFANTMNIacpc_desc-aseg_dseg.nii.gz",
                anat / "sub-01_ses-1mo_space-INFANTMNIacpc_desc-drawem9_dseg.nii.gz")
    data = find(root, root, labels_map="aseg-to-drawem9", output_dir=out)
    assert [p.labels.parent for p in data.pairs] == [root / "sub-01" / "ses-1mo" / "anat"]

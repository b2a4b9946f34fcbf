"""Finding T2w scans with PyBIDS: entities, ages, sex, selections, filters, the index."""

import json
import logging
from pathlib import Path

import pytest

from bids_infantseg.core.ages import Age
from bids_infantseg.io.discovery import (
    DiscoveryError,
    FilterFileError,
    Scan,
    discover,
    load_filter_file,
)
from tests.bids_factory import example_dataset, write_description, write_image


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return example_dataset(tmp_path_factory.mktemp("bids"))


def _stems(scans: list[Scan]) -> list[str]:
    return [scan.source_stem for scan in scans]


def test_discovers_every_t2w_with_entities_ages_and_sex(dataset, caplog):
    with caplog.at_level(logging.INFO, logger="bids_infantseg"):
        scans = discover(dataset)
    assert _stems(scans) == ["sub-01_ses-01", "sub-01_ses-02_run-1", "sub-01_ses-02_run-2",
                             "sub-02_acq-fast_rec-norm"]
    by_stem = {scan.source_stem: scan for scan in scans}
    assert by_stem["sub-02_acq-fast_rec-norm"].rel_path == \
        "sub-02/anat/sub-02_acq-fast_rec-norm_T2w.nii"
    assert by_stem["sub-02_acq-fast_rec-norm"].entities == {
        "subject": "02", "acquisition": "fast", "reconstruction": "norm"}
    assert by_stem["sub-01_ses-02_run-1"].age == Age(29.0, "scans.tsv:age_days")
    assert by_stem["sub-01_ses-02_run-2"].age == Age(30.0, "sessions.tsv:age_weeks")
    assert by_stem["sub-02_acq-fast_rec-norm"].age.source == "participants.tsv:age"
    assert [scan.sex for scan in scans] == ["F", "F", "F", "M"]
    assert "sub-03 has no T2w" in caplog.text
    assert "sub-01/ses-02/anat/sub-01_ses-02_run-2_T2w.nii.gz" in caplog.text  # files logged


@pytest.mark.parametrize("labels", [["02"], ["sub-02"]])
def test_participant_labels_with_or_without_prefix(dataset, labels):
    assert _stems(discover(dataset, participant_labels=labels)) == ["sub-02_acq-fast_rec-norm"]


def test_unknown_participant_lists_what_exists(dataset):
    with pytest.raises(DiscoveryError, match=r"no subject 07 .*subjects: 01, 02, 03$"):
        discover(dataset, participant_labels=["01", "07"])


def test_session_labels(dataset):
    scans = discover(dataset, session_labels=["ses-02"])
    assert _stems(scans) == ["sub-01_ses-02_run-1", "sub-01_ses-02_run-2"]
    with pytest.raises(DiscoveryError, match="no session 05"):
        discover(dataset, session_labels=["05"])


def test_selected_subjects_without_t2w_is_an_error(dataset):
    with pytest.raises(DiscoveryError, match="no T2w image"):
        discover(dataset, participant_labels=["03"])


def test_refuses_a_folder_that_is_not_bids(tmp_path):
    with pytest.raises(DiscoveryError, match="not a BIDS dataset"):
        discover(tmp_path)


def test_ignores_derivatives_and_output_and_work_folders_inside_the_dataset(tmp_path):
    write_description(tmp_path)
    write_image(tmp_path, subject="01")
    write_image(tmp_path / "derivatives" / "other", subject="02")
    # Folders that would be indexed if not ignored, named so that their files look like BIDS.
    write_image(tmp_path, subject="98")
    write_image(tmp_path, subject="99")
    assert _stems(discover(tmp_path)) == ["sub-01", "sub-98", "sub-99"]
    scans = discover(tmp_path, output_dir=tmp_path / "sub-98", work_dir=tmp_path / "sub-99")
    assert _stems(scans) == ["sub-01"]


def test_index_is_cached_in_work_dir_and_refreshed_when_files_change(tmp_path, caplog):
    root, work = tmp_path / "bids", tmp_path / "bids" / "work"
    write_description(root)
    write_image(root, subject="01")
    assert len(discover(root, work_dir=work)) == 1
    with caplog.at_level(logging.INFO, logger="bids_infantseg"):
        assert len(discover(root, work_dir=work)) == 1
    assert "reusing the BIDS index" in caplog.text
    write_image(root, subject="02")
    assert len(discover(root, work_dir=work)) == 2
    assert not list((work / "bids_db").glob(".*"))  # no half-built index left behind


def test_t2w_named_with_a_space_is_found_only_when_asked(tmp_path):
    """Baby Open Brains ships sub-X_ses-Y_space-INFANTMNIacpc_T2w in its raw dataset: the
    train level asks for it; participant discovery keeps to valid raw BIDS."""
    root, work = tmp_path / "bids", tmp_path / "work"
    write_description(root)
    write_image(root, subject="01", session="1mo", space="INFANTMNIacpc")
    write_image(root, subject="02")
    assert _stems(discover(root, work_dir=work)) == ["sub-02"]
    scans = discover(root, work_dir=work, with_space=True)
    assert _stems(scans) == ["sub-01_ses-1mo_space-INFANTMNIacpc", "sub-02"]
    assert scans[0].entities["space"] == "INFANTMNIacpc"


@pytest.mark.parametrize(("t2w", "stems"), [
    ({"acquisition": None}, ["sub-01_ses-01", "sub-01_ses-02_run-1", "sub-01_ses-02_run-2"]),
    ({"acquisition": "fast"}, ["sub-02_acq-fast_rec-norm"]),
    ({"run": [2]}, ["sub-01_ses-02_run-2"]),
    ({"reconstruction": "*"}, ["sub-02_acq-fast_rec-norm"]),
])
def test_bids_filters(dataset, t2w, stems):
    assert _stems(discover(dataset, bids_filters={"t2w": t2w})) == stems


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", "not valid JSON"),
    ('{"bold": {}}', "unknown filter queries"),
    ('{"t2w": {"acq": "x"}}', "unknown entity 'acq'"),
    ('{"t2w": {"subject": "01"}}', "--participant-label"),
    ('{"t2w": []}', "must be an object"),
])
def test_filter_file_errors(tmp_path, content, message):
    path = tmp_path / "filter.json"
    path.write_text(content)
    with pytest.raises(FilterFileError, match=message):
        load_filter_file(path)


def test_filter_file_loads(tmp_path):
    path = tmp_path / "filter.json"
    path.write_text(json.dumps({"t2w": {"acquisition": None}}))
    assert load_filter_file(path) == {"t2w": {"acquisition": None}}
    with pytest.raises(FilterFileError, match="cannot read"):
        load_filter_file(tmp_path / "missing.json")


def test_scans_are_hashable():
    scan = Scan(Path("/d/sub-01/anat/sub-01_T2w.nii.gz"), Path("/d"), {"subject": "01"},
                Age(3.0, "participants.tsv:age_weeks"), "F")
    same = Scan(Path("/d/sub-01/anat/sub-01_T2w.nii.gz"), Path("/d"), {"subject": "01"},
                Age(3.0, "participants.tsv:age_weeks"), "F")
    assert len({scan, same}) == 1

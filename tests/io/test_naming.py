"""BIDS file names: entity order, parsing, derivative names and folders (no PyBIDS)."""

from pathlib import Path

import pytest

from bids_infantseg.io.naming import (
    ENTITIES,
    derivative_dir,
    derivative_name,
    format_entities,
    label_values,
    parse_entities,
    source_key,
)


def test_derivative_names_follow_bids_order():
    source = parse_entities("sub-01_ses-02_acq-fast_rec-x_run-1_T2w.nii.gz")
    assert format_entities(source) == "sub-01_ses-02_acq-fast_rec-x_run-1"
    assert derivative_name(source, suffix="dseg", extension=".nii.gz", space="T2w",
                           desc="drawem9") == \
        "sub-01_ses-02_acq-fast_rec-x_run-1_space-T2w_desc-drawem9_dseg.nii.gz"
    assert derivative_name(source, suffix="probseg", extension="nii.gz", desc="x", label="WM",
                           space="T2w") == \
        "sub-01_ses-02_acq-fast_rec-x_run-1_space-T2w_label-WM_desc-x_probseg.nii.gz"
    assert derivative_name(source, suffix="volumes", extension=".tsv", desc="drawem9") == \
        "sub-01_ses-02_acq-fast_rec-x_run-1_desc-drawem9_volumes.tsv"


def test_two_runs_never_collide_and_padding_is_kept():
    runs = [parse_entities(f"sub-01_ses-02_run-{run}_T2w.nii.gz") for run in ("01", "02")]
    names = {derivative_name(s, suffix="dseg", extension=".nii.gz", space="T2w",
                             desc="drawem9") for s in runs}
    assert names == {"sub-01_ses-02_run-01_space-T2w_desc-drawem9_dseg.nii.gz",
                     "sub-01_ses-02_run-02_space-T2w_desc-drawem9_dseg.nii.gz"}


def test_derivative_name_rejects_bad_labels():
    source = parse_entities("sub-01_ses-02_T2w.nii.gz")
    with pytest.raises(ValueError, match="invalid BIDS label"):
        derivative_name(source, suffix="dseg", extension=".nii.gz", desc="drawem-9")
    with pytest.raises(ValueError, match="unknown BIDS entity"):
        derivative_name(source, suffix="dseg", extension=".nii.gz", colour="red")


def test_derivative_dir():
    assert derivative_dir(parse_entities("sub-01_ses-02_T2w.nii.gz")) == Path("sub-01/ses-02/anat")
    assert derivative_dir(parse_entities("sub-01_T2w.nii")) == Path("sub-01/anat")


def test_long_and_short_keys_name_alike_and_derived_entities_are_dropped():
    assert format_entities({"acq": "fast", "subject": "01"}) == "sub-01_acq-fast"
    assert derivative_name({"sub": "01"}, suffix="mask", extension=".nii.gz",
                           space="T2w") == "sub-01_space-T2w_mask.nii.gz"
    assert source_key("sub-01_ses-2_run-1_space-T2w_desc-drawem9_dseg.nii.gz") == \
        "sub-01_ses-2_run-1"
    with pytest.raises(ValueError, match="not a BIDS entity"):
        parse_entities("sub-01_colour-red_T2w.nii.gz")


def test_entity_order_matches_the_bids_schema():
    schema = pytest.importorskip("bidsschematools.schema").load_schema()
    keys = [schema.objects.entities[name].name for name in schema.rules.entities]
    assert [key for key, _ in ENTITIES] == keys


def test_label_values_keep_letters_and_digits_and_stay_distinct():
    assert label_values(["L-Hip", "R-Hip", "WM", "3rd ventricle"]) == \
        ["LHip", "RHip", "WM", "3rdventricle"]
    assert label_values(["L-WM", "LWM", "--"]) == ["LWM0", "LWM1", "2"]
    assert all(format_entities({"label": v}) for v in label_values(["a_b", "a.b", "+"]))

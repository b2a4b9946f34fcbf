import json

import nibabel as nib
import numpy as np
import pytest

from bids_infantseg.cli.accuracy import AccuracyError, compare, main
from bids_infantseg.model.labelmap import LabelMapping
from bids_infantseg.model.labels import DRAWEM9

AFFINE = np.diag([1.2, 1.2, 1.2, 1.0])


def _save(path, data, affine=AFFINE):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data.astype(np.int16), affine), path)


@pytest.fixture
def folders(tmp_path):
    out, manual = tmp_path / "out", tmp_path / "manual"
    (out).mkdir()
    (out / "desc-drawem9_dseg.tsv").write_text(DRAWEM9.dseg_tsv())
    truth = np.zeros((10, 10, 10), int)
    truth[2:8, 2:8, 2:8] = 3
    truth[4:6, 4:6, 4:6] = 5
    pred = truth.copy()
    pred[2:8, 2:8, 2] = 2  # one WM face called cortex
    for run in ("1", "2"):
        _save(out / "sub-01/anat" / f"sub-01_run-{run}_space-T2w_desc-drawem9_dseg.nii.gz", pred)
        # the manual set uses its own indices: 1 = WM, 2 = ventricles
        manual_labels = np.select([truth == 3, truth == 5], [1, 2], 0)
        _save(manual / "sub-01/anat" / f"sub-01_run-{run}_desc-manual_dseg.nii.gz",
              manual_labels)
    return out, manual, truth, pred


def test_matches_scans_and_maps_labels(folders, tmp_path, capsys):
    out, manual, truth, pred = folders
    table = compare(out, manual, mapping={1: 3, 2: 5})
    assert sorted(table["scan"].unique()) == ["sub-01_run-1", "sub-01_run-2"]
    wm = table[(table["index"] == 3)].iloc[0]
    both = ((pred == 3) & (truth == 3)).sum()
    assert wm["dice"] == pytest.approx(2 * both / ((pred == 3).sum() + (truth == 3).sum()))
    assert wm["accuracy"] == pytest.approx(both / (truth == 3).sum())
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({"1": 3, "2": 5}))
    assert main([str(out), str(manual), "--map", str(mapping), "--tsv",
                 str(tmp_path / "t.tsv")]) == 0
    assert "White matter" in capsys.readouterr().out


def test_grid_mismatch_is_a_clear_error(folders):
    out, manual, truth, _ = folders
    bad = manual / "sub-01/anat/sub-01_run-2_desc-manual_dseg.nii.gz"
    _save(bad, truth, np.diag([1.0, 1.0, 1.0, 1.0]))
    with pytest.raises(AccuracyError, match="not on the grid"):
        compare(out, manual, mapping={1: 3, 2: 5})


def test_manual_scan_without_output_is_named(folders):
    out, manual, truth, _ = folders
    _save(manual / "sub-02/anat/sub-02_desc-manual_dseg.nii.gz", truth)
    assert main([str(out), str(manual)]) == 2


def test_an_aseg_output_is_scored_in_drawem9_through_the_shipped_mapping(tmp_path, capsys):
    """An aseg model against DrawEM9 manual labels: both hemispheres' cortex count as DrawEM9
    cortex, so a map right in DrawEM9 scores 1 however its sides are split."""
    from bids_infantseg.model.labels import ASEG

    out, manual = tmp_path / "out", tmp_path / "manual"
    out.mkdir()
    (out / "desc-aseg_dseg.tsv").write_text(ASEG.dseg_tsv())
    truth = np.zeros((10, 10, 10), int)
    truth[2:8, 2:8, 2:8] = 2  # DrawEM9 cortex
    truth[4:6, 4:6, 4:6] = 5  # ventricles
    aseg = np.select([truth == 2, truth == 5], [3, 4], 0)  # left cortex, left ventricle
    aseg[5:] = np.select([truth[5:] == 2, truth[5:] == 5], [42, 43], 0)  # right side
    _save(out / "sub-01/anat/sub-01_space-T2w_desc-aseg_dseg.nii.gz", aseg)
    _save(manual / "sub-01/anat/sub-01_desc-manual_dseg.nii.gz", truth)
    table = compare(out, manual, predicted_mapping=LabelMapping.load("aseg-to-drawem9"))
    scores = table.set_index("index")["dice"]
    assert scores[2] == pytest.approx(1.0) and scores[5] == pytest.approx(1.0)
    unmapped = compare(out, manual)  # in aseg codes the DrawEM9 truth does not line up
    assert unmapped.set_index("index")["dice"].get(3, 0.0) < 1.0
    assert main([str(out), str(manual), "--predicted-map", "aseg-to-drawem9"]) == 0
    assert "Cortical grey matter" in capsys.readouterr().out
    # a mapping whose source is not the outputs' label set is refused, naming the folder
    (out / "desc-aseg_dseg.tsv").rename(out / "desc-drawem9_dseg.tsv")
    (out / "desc-drawem9_dseg.tsv").write_text(DRAWEM9.dseg_tsv())
    with pytest.raises(AccuracyError, match="not the source of the mapping"):
        compare(out, manual, predicted_mapping=LabelMapping.load("aseg-to-drawem9"))

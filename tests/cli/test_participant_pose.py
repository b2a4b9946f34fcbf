"""--pose-normalize end to end, with a local TemplateFlow home built by the tests."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np

from bids_infantseg.cli.main import main
from bids_infantseg.core.pose import rotation_angle_deg
from tests.bids_factory import write_description, write_tsv
from tests.conftest import t2w_path
from tests.core.test_pose import NATIVE_AFFINE, rigid, scan
from tests.templateflow_home import build_templateflow_home


def _dataset(root):
    write_description(root)
    write_tsv(root / "participants.tsv", [{"participant_id": "sub-01", "age_weeks": "2"}])
    for run, pose in (("1", np.eye(4)), ("2", rigid(18.0, (1.0, 0.5, 0.3), (8.0, -5.0, 12.0)))):
        path = t2w_path(root, "01", run=run)
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(scan(pose, seed=int(run)), NATIVE_AFFINE), path)
    return root


def _conformed(work):
    return [np.asanyarray(nib.load(p).dataobj)
            for p in sorted(work.rglob("conform/conformed.nii.gz"))]


def _correlation(a, b):
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def test_pose_normalisation_aligns_scans_and_outputs_stay_native(tmp_path, monkeypatch,
                                                                 tiny_model_dir):
    home = build_templateflow_home(tmp_path / "tf", cohorts=(1,))
    monkeypatch.setenv("TEMPLATEFLOW_HOME", str(home))
    bids = _dataset(tmp_path / "bids")
    common = [str(bids), "participant", "--model", str(tiny_model_dir), "--nprocs", "1"]

    assert main([common[0], str(tmp_path / "plain"), *common[1:],
                 "-w", str(tmp_path / "w_plain")]) == 0
    out = tmp_path / "posed"
    assert main([common[0], str(out), *common[1:], "-w", str(tmp_path / "w_posed"),
                 "--pose-normalize"]) == 0

    sidecar = json.loads((out / "sub-01/anat/sub-01_run-2_space-T2w_desc-drawem9_dseg.json")
                         .read_text())
    pose = sidecar["PoseNormalization"]
    assert pose["accepted"], pose["message"]
    assert abs(rotation_angle_deg(np.array(pose["transform"])) - 18.0) < 3.0
    dseg = nib.load(out / "sub-01/anat/sub-01_run-2_space-T2w_desc-drawem9_dseg.nii.gz")
    assert dseg.shape == scan(np.eye(4)).shape
    np.testing.assert_allclose(dseg.affine, NATIVE_AFFINE)

    plain, posed = _conformed(tmp_path / "w_plain"), _conformed(tmp_path / "w_posed")
    # aligned to the template, the turned head lands where the straight one does
    mismatch_posed, mismatch_plain = 1 - _correlation(*posed), 1 - _correlation(*plain)
    assert mismatch_posed < 0.5 * mismatch_plain, (mismatch_posed, mismatch_plain)


def test_missing_template_names_the_cohort(tmp_path, monkeypatch, tiny_model_dir, capsys):
    home = build_templateflow_home(tmp_path / "tf", cohorts=(5,))
    monkeypatch.setenv("TEMPLATEFLOW_HOME", str(home))
    bids = _dataset(tmp_path / "bids")
    assert main([str(bids), str(tmp_path / "out"), "participant", "--model",
                 str(tiny_model_dir), "--pose-normalize"]) == 2
    err = capsys.readouterr().err
    assert "cohort" in err and "1" in err and str(home) in err
    assert len(err.strip().splitlines()) == 1

"""benchmarks/fetal_atlas_bids.py: atlases as BIDS with manual labels, optionally rescaled."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from bids_infantseg.synth import ATLAS_TO_GEN
from tests.benchmarks.test_accuracy import _load

fetal_atlas_bids = _load("fetal_atlas_bids")


@pytest.fixture
def atlas_root(tmp_path):
    """One fake atlas: a 10 mm cube of labels 1-8 in a 0.8 mm grid, an image to match."""
    folder = tmp_path / "atlases" / "fetal_SB_atlas_GA23_notoperated"
    folder.mkdir(parents=True)
    labels = np.zeros((30, 30, 30), np.uint8)
    labels[5:17, 5:17, 5:17] = np.arange(12 ** 3).reshape(12, 12, 12) % 8 + 1
    affine = np.diag([0.8, 0.8, 0.8, 1.0])
    nib.save(nib.Nifti1Image(labels, affine), folder / "parcellation.nii.gz")
    nib.save(nib.Nifti1Image(labels.astype(np.float32) * 100, affine), folder / "srr.nii.gz")
    return folder.parent


def _brain_ml(path) -> float:
    image = nib.load(path)
    return float((np.asanyarray(image.dataobj) > 0).sum()
                 * np.prod(image.header.get_zooms()[:3]) / 1000.0)


@pytest.mark.parametrize("target_ml", [None, 5.0])
def test_dataset_labels_and_scaling(atlas_root, tmp_path, target_ml):
    out = tmp_path / "bids"
    args = [str(out), "--atlas-root", str(atlas_root)]
    assert fetal_atlas_bids.main(args + (["--scale-to-ml", str(target_ml)] if target_ml
                                         else [])) == 0
    t2w = out / "sub-ga23notop/anat/sub-ga23notop_T2w.nii.gz"
    dseg = out / "derivatives/manual/sub-ga23notop/anat/sub-ga23notop_desc-atlas_dseg.nii.gz"
    source = atlas_root / "fetal_SB_atlas_GA23_notoperated"
    np.testing.assert_array_equal(nib.load(dseg).get_fdata(),
                                  nib.load(source / "parcellation.nii.gz").get_fdata())
    np.testing.assert_allclose(nib.load(t2w).affine, nib.load(dseg).affine)
    expected = target_ml or _brain_ml(source / "parcellation.nii.gz")
    assert _brain_ml(dseg) == pytest.approx(expected, rel=1e-4)
    mapping = json.loads((out / "code/atlas-to-drawem9.json").read_text())
    # the documented table (docs/accuracy.md), and the one synthesis uses
    documented = {1: 3, 2: 5, 3: 6, 4: 1, 5: 2, 6: 7, 7: 8, 8: 3}
    assert {int(k): v for k, v in mapping.items()} == documented
    assert ATLAS_TO_GEN[list(documented)].tolist() == list(documented.values())
    assert "23" in (out / "participants.tsv").read_text()

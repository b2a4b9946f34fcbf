import io

import nibabel as nib
import numpy as np
import pandas as pd
from PIL import Image

from bids_infantseg.model.labels import DRAWEM9
from bids_infantseg.report.figures import (
    MosaicSource,
    contour_mosaic,
    figure_labels,
    growth_figure,
)


def _images(affine=None):
    grid = np.indices((30, 36, 24)).astype(float)
    head = ((grid[0] - 15) / 12) ** 2 + ((grid[1] - 18) / 15) ** 2 + ((grid[2] - 12) / 10) ** 2
    t2w = np.where(head < 1, 500.0, 0.0) + 300 * (grid[0] < 12) * (head < 1)
    labels = np.where(head < 0.6, 3, np.where(head < 1, 2, 0)).astype(np.int16)
    labels[(grid[0] < 12) & (head < 0.3)] = 9  # an asymmetric structure
    affine = np.diag([2.0, 2.0, 3.0, 1.0]) if affine is None else affine
    return nib.Nifti1Image(t2w, affine), nib.Nifti1Image(labels, affine)


def test_mosaic_does_not_depend_on_the_header_axis_order():
    t2w, dseg = _images()
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])
    flip[0, 3] = t2w.shape[0] - 1
    affine = t2w.affine @ flip
    t2w_las = nib.Nifti1Image(np.asanyarray(t2w.dataobj)[::-1], affine)
    dseg_las = nib.Nifti1Image(np.asanyarray(dseg.dataobj)[::-1], affine)
    ras, las = MosaicSource.load(t2w, dseg, DRAWEM9), MosaicSource.load(t2w_las, dseg_las,
                                                                        DRAWEM9)
    for view in ("axial", "coronal", "sagittal"):
        png = contour_mosaic(ras, DRAWEM9, view)
        assert png == contour_mosaic(las, DRAWEM9, view)
        image = Image.open(io.BytesIO(png))
        assert image.width > image.height  # one row of slices


def test_mosaic_source_is_cropped_to_the_labels_with_a_margin():
    t2w, dseg = _images()
    padded = nib.Nifti1Image(np.pad(np.asanyarray(t2w.dataobj), 20), t2w.affine)
    padded_labels = nib.Nifti1Image(np.pad(np.asanyarray(dseg.dataobj), 20), dseg.affine)
    source = MosaicSource.load(padded, padded_labels, DRAWEM9, margin=3)
    extent = [int(np.ptp(np.flatnonzero(np.asanyarray(dseg.dataobj).any(axis=tuple(
        a for a in range(3) if a != axis))))) + 1 for axis in range(3)]
    assert source.label_map.shape == tuple(e + 6 for e in extent)
    assert source.image.shape == source.label_map.shape
    first = [int(np.flatnonzero(np.asanyarray(dseg.dataobj).any(axis=tuple(
        a for a in range(3) if a != axis)))[0]) for axis in range(3)]
    assert source.origin == tuple(20 + f - 3 for f in first)
    assert source.window == MosaicSource.load(t2w, dseg, DRAWEM9).window


def test_growth_figure_with_and_without_ages():
    table = pd.DataFrame({"participant_id": ["sub-01", "sub-01", "sub-02"],
                          "age_weeks": [2.0, 26.0, None], "sex": ["F", "F", None],
                          "WM_mm3": [150e3, 300e3, 200e3]})
    assert Image.open(io.BytesIO(growth_figure(table, "WM_mm3", "White matter"))).width > 100
    empty = table.assign(age_weeks=None)
    assert growth_figure(empty, "WM_mm3", "White matter", bounds=True)[:4] == b"\x89PNG"
    assert [c for c, _, _ in figure_labels(DRAWEM9)][:2] == ["CSF_mm3", "cGM_mm3"]

import io
import json
import re

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from bids_infantseg.model.labels import DRAWEM9, LabelSet
from bids_infantseg.report.colors import display_colors
from bids_infantseg.report.viewer import MARKERS, ScanImages, class_map, legend, viewer, volume
from tests.report.pages import CHROMIUM, NO_CHROMIUM, probe


def _images(affine=None):
    grid = np.indices((30, 36, 24)).astype(float)
    head = ((grid[0] - 15) / 12) ** 2 + ((grid[1] - 18) / 15) ** 2 + ((grid[2] - 12) / 10) ** 2
    t2w = np.where(head < 1, 500.0, 0.0) + 300 * (grid[0] < 12) * (head < 1)
    labels = np.where(head < 0.6, 3, np.where(head < 1, 2, 0)).astype(np.int16)
    labels[(grid[0] < 12) & (head < 0.3)] = 9  # an asymmetric structure, on the left (x low)
    affine = np.diag([2.0, 2.0, 3.0, 1.0]) if affine is None else affine
    return nib.Nifti1Image(t2w, affine), nib.Nifti1Image(labels, affine)


def _untile(png: bytes, shape: tuple[int, int, int], columns: int) -> np.ndarray:
    tiled = np.asarray(Image.open(io.BytesIO(png)).convert("L"))
    nx, ny, nz = shape
    out = np.zeros(shape, np.uint8)
    for k in range(nz):
        top, left = (k // columns) * ny, (k % columns) * nx
        out[:, :, k] = tiled[top:top + ny, left:left + nx].T
    return out


def test_volume_carries_the_label_map_exactly_and_the_t2w_closely():
    t2w, dseg = _images()
    source = ScanImages.load(t2w, dseg, DRAWEM9)
    data = volume(source, DRAWEM9)
    assert data.shape == source.label_map.shape and data.step == 1
    classes = _untile(data.labels_png, data.shape, data.columns)
    assert np.array_equal(DRAWEM9.indices[classes], source.label_map)
    grey = _untile(data.t2w_jpeg, data.shape, data.columns).astype(float)
    low, high = source.window
    expected = np.clip((source.image - low) / (high - low) * 255, 0, 255)
    assert np.abs(grey - expected).mean() < 4  # JPEG: close, not exact
    assert data.t2w_jpeg[:2] == b"\xff\xd8" and data.labels_png[:4] == b"\x89PNG"


def test_volume_does_not_depend_on_the_header_axis_order():
    t2w, dseg = _images()
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])
    flip[0, 3] = t2w.shape[0] - 1
    affine = t2w.affine @ flip
    t2w_las = nib.Nifti1Image(np.asanyarray(t2w.dataobj)[::-1], affine)
    dseg_las = nib.Nifti1Image(np.asanyarray(dseg.dataobj)[::-1], affine)
    ras = volume(ScanImages.load(t2w, dseg, DRAWEM9), DRAWEM9)
    las = volume(ScanImages.load(t2w_las, dseg_las, DRAWEM9), DRAWEM9)
    assert ras == las


def test_a_large_volume_keeps_every_nth_voxel():
    t2w, dseg = _images()
    source = ScanImages.load(t2w, dseg, DRAWEM9)
    data = volume(source, DRAWEM9, max_voxels=source.label_map.size // 5)
    assert data.step == 2
    assert data.shape == tuple(-(-n // 2) for n in source.label_map.shape)
    assert data.zooms == tuple(2 * z for z in source.zooms)


def test_source_is_cropped_to_the_labels_with_a_margin():
    t2w, dseg = _images()
    padded = nib.Nifti1Image(np.pad(np.asanyarray(t2w.dataobj), 20), t2w.affine)
    padded_labels = nib.Nifti1Image(np.pad(np.asanyarray(dseg.dataobj), 20), dseg.affine)
    source = ScanImages.load(padded, padded_labels, DRAWEM9, margin=3)
    extent = [int(np.ptp(np.flatnonzero(np.asanyarray(dseg.dataobj).any(axis=tuple(
        a for a in range(3) if a != axis))))) + 1 for axis in range(3)]
    assert source.label_map.shape == tuple(e + 6 for e in extent)
    assert source.image.shape == source.label_map.shape
    first = [int(np.flatnonzero(np.asanyarray(dseg.dataobj).any(axis=tuple(
        a for a in range(3) if a != axis)))[0]) for axis in range(3)]
    assert source.origin == tuple(20 + f - 3 for f in first)
    assert source.window == ScanImages.load(t2w, dseg, DRAWEM9).window


def test_class_map_numbers_labels_by_position_and_unknown_as_background():
    labels = LabelSet.from_records("site", [{"index": 0, "name": "bg"},
                                            {"index": 1000, "name": "a"},
                                            {"index": 5, "name": "b"}])
    label_map = np.array([[[0, 1000, 5, 7]]])
    assert class_map(label_map, labels).tolist() == [[[0, 1, 2, 0]]]


def test_legend_has_a_toggle_and_a_swatch_per_label():
    text = legend(DRAWEM9, display_colors(DRAWEM9))
    boxes = re.findall(r'<input type="checkbox" data-class="(\d+)"( checked)?>'
                       r'<span class="swatch" style="background:(#[0-9a-f]{6})">', text)
    shown = [lab for lab in DRAWEM9.labels if lab.index != 0]
    assert [int(position) for position, _, _ in boxes] == \
        [DRAWEM9.labels.index(lab) for lab in shown]
    assert [bool(checked) for _, checked, _ in boxes] == \
        [lab.index in DRAWEM9.brain_indices for lab in shown]  # non-brain tissue starts hidden
    assert [color for _, _, color in boxes] == [display_colors(DRAWEM9)[lab.index]
                                                for lab in shown]
    for lab in shown:
        assert f"{lab.name} <small>({lab.abbreviation}, {lab.index})" in text


def test_each_view_has_its_orientation_letters_and_a_slider():
    t2w, dseg = _images()
    text = viewer(ScanImages.load(t2w, dseg, DRAWEM9), DRAWEM9)
    views = re.findall(r'<figure class="view" data-view="(\w+)".*?</figure>', text, re.S)
    assert views == ["axial", "coronal", "sagittal"]
    for name in views:
        block = re.search(rf'data-view="{name}".*?</figure>', text, re.S).group(0)
        letters = re.findall(r'<span class="ori (\w+)"[^>]*>(\w)</span>', block)
        assert letters == list(zip(("left", "right", "top", "bottom"), MARKERS[name],
                                   strict=True))
        assert '<input type="range"' in block
    assert MARKERS["axial"][:2] == ("L", "R")  # neurological: the subject's right on the right


@pytest.fixture
def viewer_page(tmp_path):
    t2w, dseg = _images()
    page = tmp_path / "viewer.html"
    page.write_text("<!DOCTYPE html><html><body>"
                    + viewer(ScanImages.load(t2w, dseg, DRAWEM9), DRAWEM9) + "</body></html>")
    return page


_PROBE = r"""
function count(canvas, rgb) {  // pixels of one colour, and how many lie left of the middle
  const g = canvas.getContext("2d"), d = g.getImageData(0, 0, canvas.width, canvas.height).data;
  let n = 0, left = 0;
  for (let i = 0; i < d.length; i += 4)
    if (d[i] === rgb[0] && d[i + 1] === rgb[1] && d[i + 2] === rgb[2]) {
      n++; if ((i / 4) % canvas.width < canvas.width / 2) left++; }
  return [n, left];
}
function measure() {
  const root = document.getElementById("viewer");
  if (root.dataset.ready !== "1") { setTimeout(measure, 50); return; }
  const api = window.bidsInfantsegViewer, D = JSON.parse(
    document.getElementById("viewer-data").textContent);
  const hist = new Array(D.colors.length).fill(0);
  for (const k of api.labels) hist[k]++;
  const axial = api.views[0].canvas, wm = D.colors[3], hip = D.colors[9];
  const box = root.querySelector('input[data-class="3"]');
  const before = count(axial, wm), hipBefore = count(axial, hip);
  box.click();
  const hidden = count(axial, wm), hipHidden = count(axial, hip);
  box.click();
  const again = count(axial, wm);
  document.body.dataset.probe = JSON.stringify({hist, before, hidden, again, hipBefore,
                                                hipHidden, width: axial.width});
}
measure();
"""


@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
def test_viewer_decodes_the_labels_and_toggles_each_label_in_chromium(viewer_page):
    dom = probe(viewer_page, _PROBE)
    found = re.search(r'data-probe="([^"]*)"', dom)
    assert found, dom[-2000:]
    result = json.loads(found.group(1).replace("&quot;", '"'))
    t2w, dseg = _images()
    source = ScanImages.load(t2w, dseg, DRAWEM9)
    expected = np.bincount(class_map(source.label_map, DRAWEM9).ravel(), minlength=10)
    assert result["hist"] == expected.tolist()  # the browser reads every voxel's label back
    assert result["width"] > 200
    assert result["before"][0] > 0 and result["hidden"][0] == 0  # unticked: WM outline gone
    assert result["again"] == result["before"]
    assert result["hipBefore"] == result["hipHidden"] and result["hipBefore"][0] > 0
    # the structure at low x (the subject's left) is drawn left of the middle, under "L"
    assert result["hipBefore"][1] == result["hipBefore"][0]

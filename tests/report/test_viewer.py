import html
import io
import json
import re

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from bids_infantseg.model.labels import DRAWEM9, LabelSet
from bids_infantseg.report.colors import display_colors, rgb
from bids_infantseg.report.viewer import (
    CONVENTIONS,
    FILL_OPACITY,
    MARKERS,
    VIEWS,
    ScanImages,
    _start,
    class_map,
    legend,
    viewer,
    volume,
)
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


@pytest.fixture(scope="module")
def viewer_page(tmp_path_factory):
    t2w, dseg = _images()
    page = tmp_path_factory.mktemp("viewer") / "viewer.html"
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
function centre(canvas) {
  const g = canvas.getContext("2d");
  return [...g.getImageData(canvas.width >> 1, canvas.height >> 1, 1, 1).data.slice(0, 3)];
}
// a control the page lacks is skipped (?.), so that the checks below say what differs
const letters = fig => [...fig.querySelectorAll(".ori")].map(e => e.textContent).join("");
function measure() {
  const root = document.getElementById("viewer");
  if (root.dataset.ready !== "1") { setTimeout(measure, 50); return; }
  const api = window.bidsInfantsegViewer, D = JSON.parse(
    document.getElementById("viewer-data").textContent);
  const hist = new Array(D.colors.length).fill(0);
  for (const k of api.labels) hist[k]++;
  const axial = api.views[0].canvas, wm = D.colors[3], hip = D.colors[9];
  const r = {hist, width: axial.width, filled: centre(axial), wmFilled: count(axial, wm),
             captions: api.views.map(v => v.out.textContent),
             convention: root.querySelector(".convention")?.textContent,
             letters: api.views.map(v => letters(v.fig))};
  root.querySelector('input.mode[value="outline"]')?.click();
  r.grey = centre(axial);
  const box = root.querySelector('input[data-class="3"]');
  r.before = count(axial, wm); r.hipBefore = count(axial, hip);
  box.click();
  r.hidden = count(axial, wm); r.hipHidden = count(axial, hip);
  box.click();
  r.again = count(axial, wm);
  root.querySelector("input.radiological")?.click();
  r.hipMirrored = count(axial, hip);
  r.lettersMirrored = api.views.map(v => letters(v.fig));
  r.conventionMirrored = root.querySelector(".convention")?.textContent;
  document.body.dataset.probe = JSON.stringify(r);
}
measure();
"""


@pytest.fixture(scope="module")
def probed(viewer_page) -> dict:
    """What ``_PROBE`` measured in Chromium, once for the tests below."""
    if CHROMIUM is None:
        pytest.skip(NO_CHROMIUM)
    dom = probe(viewer_page, _PROBE)
    found = re.search(r'data-probe="([^"]*)"', dom)
    assert found, dom[-2000:]
    return json.loads(html.unescape(found.group(1)))


def test_viewer_decodes_the_labels_and_toggles_each_label_in_chromium(probed):
    result = probed
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


def test_labels_start_filled_at_40_percent_and_outlines_are_a_toggle(probed, viewer_page):
    result = probed
    grey, filled = np.array(result["grey"]), np.array(result["filled"])
    assert len(set(result["grey"])) == 1  # outlined: the middle of the white matter is T2w
    wm = np.array(rgb(display_colors(DRAWEM9)[3]))
    assert np.abs(filled - (FILL_OPACITY * wm + (1 - FILL_OPACITY) * grey)).max() <= 2
    assert result["wmFilled"][0] == 0  # no opaque outline while filled
    assert 'value="fill" checked' in viewer_page.read_text()


def test_neurological_by_default_stated_and_radiological_mirrors_left_and_right(probed):
    result = probed
    assert result["convention"] == CONVENTIONS["neurological"]
    assert result["letters"] == ["LRAP", "LRSI", "PASI"]
    # radiological: the left-sided structure moves right of the middle, L and R change places
    assert result["hipMirrored"] == [result["hipBefore"][0], 0]
    assert result["lettersMirrored"] == ["RLAP", "RLSI", "PASI"]
    assert result["conventionMirrored"] == CONVENTIONS["radiological"]


def test_each_caption_shows_one_slice_number_the_files_own(probed):
    result = probed
    t2w, dseg = _images()
    source = ScanImages.load(t2w, dseg, DRAWEM9)
    starts = [_start(source, axes[0], 1) for axes in VIEWS.values()]
    assert result["captions"] == [f"slice {source.origin[axes[0]] + start}"
                                  for axes, start in zip(VIEWS.values(), starts, strict=True)]


def test_slice_numbers_follow_the_files_axis_order():
    t2w, dseg = _images()
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])  # the file's first axis runs right to left
    flip[0, 3] = t2w.shape[0] - 1
    las = nib.Nifti1Image(np.asanyarray(dseg.dataobj)[::-1], dseg.affine @ flip)
    ras_source = ScanImages.load(t2w, dseg, DRAWEM9)
    source = ScanImages.load(nib.Nifti1Image(np.asanyarray(t2w.dataobj)[::-1], las.affine),
                             las, DRAWEM9)
    assert ras_source.file_slices == tuple((o, 1) for o in ras_source.origin)
    first_x = source.origin[0]  # the crop's first RAS x is file index (n - 1 - x)
    assert source.file_slices[0] == (dseg.shape[0] - 1 - first_x, -1)
    assert source.file_slices[1:] == ras_source.file_slices[1:]
    sagittal = re.search(r'data-view="sagittal" data-first="(-?\d+)" data-step="(-?\d+)"',
                         viewer(source, DRAWEM9))
    assert sagittal.groups() == (str(dseg.shape[0] - 1 - first_x), "-1")

import colorsys
import json
import re

import numpy as np

from bids_infantseg.io.derivatives import write_label_table
from bids_infantseg.model.labels import (
    ASEG,
    DRAWEM9,
    KELLY,
    LabelSet,
    distinct_color,
    read_dseg_tsv,
)
from bids_infantseg.report.colors import display_colors, faint, output_labels, rgb
from bids_infantseg.report.viewer import ScanImages, viewer
from tests.report.test_viewer import _images


def _records(count: int, **extra) -> list[dict]:
    return [{"index": 0, "name": "Background"}] + [
        {"index": i, "name": f"structure {i}", **extra} for i in range(1, count + 1)]


def test_a_table_without_colours_gets_distinct_ones_in_class_order(tmp_path):
    table = tmp_path / "desc-site_dseg.tsv"  # a site's table: no colour column at all
    table.write_text("index\tname\n0\tBackground\n" + "".join(
        f"{i}\tstructure {i}\n" for i in range(1, 13)))
    labels = read_dseg_tsv(table)
    colors = [lab.color for lab in labels.labels]
    assert colors[0] == "#000000"
    assert "#808080" not in colors and len(set(colors)) == len(colors)
    assert colors[1:] == list(KELLY[:12])  # Kelly's order: neighbours differ most
    assert read_dseg_tsv(table) == labels  # deterministic
    for color in colors[1:]:  # saturated enough to show on a grey MRI
        assert colorsys.rgb_to_hsv(*(c / 255 for c in rgb(color)))[1] > 0.3


def test_missing_colours_are_filled_and_given_ones_kept():
    labels = LabelSet.from_records("site", [
        {"index": 0, "name": "bg", "color": "n/a"}, {"index": 3, "name": "a", "color": ""},
        {"index": 7, "name": "b", "color": "#123456"}, {"index": 9, "name": "c", "color": None},
        {"index": 11, "name": "d", "color": "n/a"}])
    assert [lab.color for lab in labels.labels] == \
        ["#000000", KELLY[0], "#123456", KELLY[2], KELLY[3]]  # by class, not by fill order


def test_many_labels_stay_distinct():
    labels = LabelSet.from_records("aseg", _records(60))
    colors = [lab.color for lab in labels.labels[1:]]
    assert len(set(colors)) == 60
    assert distinct_color(17) == colors[17] and distinct_color(59) == colors[59]


def test_reports_draw_drawem9_in_its_high_contrast_colours():
    old = [dict(r) for r in DRAWEM9.to_records()]  # a card written before (beige WM)
    old[3]["color"], old[1]["color"] = "#f5f5dc", "#78b4ff"
    card = LabelSet.from_records("drawem9", old, DRAWEM9.non_brain)
    colors = display_colors(card)
    assert colors == {lab.index: lab.color for lab in DRAWEM9.labels}
    brain = [colors[i] for i in DRAWEM9.brain_indices]
    assert len(set(brain)) == len(brain)
    for index in (1, 3):  # CSF and WM outline tissue that is bright on T2: dark-enough hues
        red, green, blue = rgb(colors[index])
        assert 0.2126 * red + 0.7152 * green + 0.0722 * blue < 120
    site = LabelSet.from_records("site", _records(3))
    assert display_colors(site) == {lab.index: lab.color for lab in site.labels}


def test_faint_colours_are_replaced_in_the_outputs_not_in_the_set():
    labels = LabelSet.from_records("fs", [
        {"index": 0, "name": "Unknown", "color": "#000000"},
        {"index": 2, "name": "Left-Cerebral-White-Matter", "color": "#f5f5f5"},
        {"index": 3, "name": "Left-Cerebral-Cortex", "color": "#cd3e4e"},
        {"index": 24, "name": "CSF", "color": "#3c3c3c"},
        {"index": 41, "name": "Right-Cerebral-White-Matter", "color": "#f5f5f5"}])
    colors = display_colors(labels)
    assert colors[3] == "#cd3e4e" and colors[0] == "#000000"  # a visible colour is kept
    assert [colors[i] for i in (2, 24, 41)] == list(KELLY[:3])  # grey, white, black are not
    assert labels.by_index(2).color == "#f5f5f5"  # the set (a model's card) keeps its LUT
    assert [lab.color for lab in output_labels(labels).labels] == list(colors.values())
    assert output_labels(labels).same_classes(labels)
    aseg = display_colors(ASEG)  # FreeSurfer's LUT: white WM, grey CSF
    assert not any(faint(aseg[lab.index]) for lab in ASEG.labels[1:])
    assert aseg[2] != aseg[41] and aseg[3] == aseg[42]  # each faint label its own colour


NEIGHBOURS = [(1, 2), (2, 3), (1, 4), (1, 6), (3, 7), (3, 5), (1, 8), (5, 7), (2, 8), (3, 9),
              (2, 5), (6, 8), (2, 9), (5, 9), (7, 9), (1, 5), (3, 8), (2, 4), (2, 7), (1, 9)]
"""DrawEM9 labels that touch in the demo's phantom truth (all three scans), longest shared
border first; the first six share over 1000 voxel faces in each."""
LONG_BORDERS = NEIGHBOURS[:6]


def _lab(color: str) -> np.ndarray:
    """sRGB -> CIELAB (D65): distances there follow perceived colour differences."""
    linear = np.array(rgb(color)) / 255
    linear = np.where(linear > 0.04045, ((linear + 0.055) / 1.055) ** 2.4, linear / 12.92)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722],
                    [0.0193, 0.1192, 0.9505]]) @ linear / np.array([0.9505, 1.0, 1.089])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def _difference(a: str, b: str) -> float:
    return float(np.linalg.norm(_lab(a) - _lab(b)))


def _mix(a: str, b: str) -> str:
    """Two thin outlines side by side, as the eye averages them."""
    return "#" + "".join(f"{(x + y) // 2:02x}" for x, y in zip(rgb(a), rgb(b), strict=True))


def test_drawem9_neighbours_have_distinct_colours_that_do_not_mix_into_a_third():
    colors = {lab.index: lab.color for lab in DRAWEM9.labels}
    for a, b in NEIGHBOURS:  # e.g. ventricles and hippocampus were violet and pink: 66
        assert _difference(colors[a], colors[b]) >= 60, (a, b)
    for a, b in LONG_BORDERS:  # white matter red beside yellow cortex read as orange: 16
        mixed = _mix(colors[a], colors[b])
        for other in DRAWEM9.brain_indices:
            if other not in (a, b):
                assert _difference(mixed, colors[other]) >= 25, (a, b, other)


def test_the_label_table_lists_the_colours_the_report_draws(tmp_path):
    card = [dict(r) for r in DRAWEM9.to_records()]  # the bundled 0.5.0 card's colours
    for row, color in zip(card, ("#000000", "#78b4ff", "#c83c3c", "#f5f5dc", "#5a5a5a",
                                 "#3c3cdc", "#e6b43c", "#50c850", "#b464c8", "#ff8cc8"),
                          strict=True):
        row["color"] = color
    labels = LabelSet.from_records("drawem9", card, DRAWEM9.non_brain)
    table = read_dseg_tsv(write_label_table(tmp_path, labels))
    listed = [lab.color for lab in table.labels]
    t2w, dseg = _images()
    page = viewer(ScanImages.load(t2w, dseg, labels), labels)
    swatches = re.findall(r'class="swatch" style="background:(#[0-9a-f]{6})"', page)
    drawn = json.loads(re.search(r'id="viewer-data">(.*?)</script>', page).group(1))["colors"]
    assert swatches == listed[1:]  # the legend (background 0 has no swatch)
    assert drawn == [list(rgb(color)) for color in listed]  # what the views paint
    assert listed[2] == DRAWEM9.by_index(2).color != "#c83c3c"

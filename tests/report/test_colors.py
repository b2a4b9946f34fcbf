import colorsys

from bids_infantseg.model.labels import (
    ASEG,
    DRAWEM9,
    KELLY,
    LabelSet,
    distinct_color,
    read_dseg_tsv,
)
from bids_infantseg.report.colors import display_colors, faint, rgb


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


def test_faint_colours_are_replaced_in_the_report_only():
    labels = LabelSet.from_records("fs", [
        {"index": 0, "name": "Unknown", "color": "#000000"},
        {"index": 2, "name": "Left-Cerebral-White-Matter", "color": "#f5f5f5"},
        {"index": 3, "name": "Left-Cerebral-Cortex", "color": "#cd3e4e"},
        {"index": 24, "name": "CSF", "color": "#3c3c3c"},
        {"index": 41, "name": "Right-Cerebral-White-Matter", "color": "#f5f5f5"}])
    colors = display_colors(labels)
    assert colors[3] == "#cd3e4e" and colors[0] == "#000000"  # a visible colour is kept
    assert [colors[i] for i in (2, 24, 41)] == list(KELLY[:3])  # grey, white, black are not
    assert labels.by_index(2).color == "#f5f5f5"  # the label table keeps the site's LUT
    aseg = display_colors(ASEG)  # FreeSurfer's LUT: white WM, grey CSF
    assert not any(faint(aseg[lab.index]) for lab in ASEG.labels[1:])
    assert aseg[2] != aseg[41] and aseg[3] == aseg[42]  # each faint label its own colour

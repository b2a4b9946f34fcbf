"""QC metrics on plain arrays, and the MC-dropout passes they get their uncertainty from."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import ndimage

from bids_infantseg.cli.group import Collected, qc_table, wide_table
from bids_infantseg.core import qc
from bids_infantseg.core.inference import predict, predict_with_qc
from bids_infantseg.core.volumes import label_volumes
from bids_infantseg.model.card import load_model, save_model
from bids_infantseg.model.labels import ASEG, DRAWEM9, LabelSet
from bids_infantseg.model.quicknat import QuickNAT, QuickNATConfig
from tests.model_factory import make_tiny_model, tiny_card


def test_bounds_depend_on_age_and_accept_a_normal_neonate():
    newborn, one_year = qc.brain_volume_bounds(0), qc.brain_volume_bounds(52)
    assert newborn.lower_ml < 400 < 550 < newborn.upper_ml  # a typical newborn brain
    assert one_year.lower_ml < 850 < 1000 < one_year.upper_ml
    assert newborn.upper_ml < one_year.lower_ml + 100  # bounds grow with age
    status, flags = qc.volume_check(450, 2)
    assert status == "ok" and not flags  # FastSurfer's adult 0.70 L threshold would reject it
    status, flags = qc.volume_check(450, 50)
    assert status == "below" and "brain_volume" in flags
    assert qc.brain_volume_bounds(None) is None  # never an adult default
    assert qc.brain_volume_bounds(53).extrapolated is False  # 12 months in weeks is 52.1
    # the table reaches the ages the participant level accepts (-20..150 weeks)
    assert qc.brain_volume_bounds(-20).extrapolated is False
    assert qc.brain_volume_bounds(150).extrapolated is False
    assert qc.brain_volume_bounds(170).extrapolated is True
    assert qc.brain_volume_bounds(-23).extrapolated is True


def test_brain_bounds_keep_the_published_ranges_they_replace():
    """The table's brain rows are QC's former bounds where those were defined."""
    for weeks, lower, upper in ((-10, 150, 350), (0, 300, 630), (13, 450, 850),
                                (26, 560, 1000), (39, 630, 1100), (52, 680, 1150)):
        bounds = qc.brain_volume_bounds(weeks)
        assert (bounds.lower_ml, bounds.upper_ml) == (pytest.approx(lower, abs=0.5),
                                                      pytest.approx(upper, abs=0.5))
    assert qc.BOUNDS_ML[0][0] == pytest.approx(-20, abs=0.1)


def test_the_bounds_table_names_a_source_for_every_row():
    table = pd.read_csv(qc.BOUNDS_FILE, sep="\t")
    assert list(table.columns) == ["label", "age_months", "low_ml", "high_ml", "source"]
    assert table["source"].str.len().min() > 20
    assert (table["low_ml"] > 0).all() and (table["low_ml"] < table["high_ml"]).all()
    # every DrawEM9 brain label but CSF; not CSF or non-brain tissue (no source for them)
    assert set(table["label"]) == {"brain", "cGM", "WM", "Ven", "Cbm", "dGM", "BS", "Hip"}
    assert qc.STRUCTURES == ("cGM", "WM", "Ven", "Cbm", "dGM", "BS", "Hip")
    for label, rows in table.groupby("label"):
        assert rows["age_months"].min() < -4.5 and rows["age_months"].max() >= 36, label
        if label != "Ven":  # growth: bounds never fall with age
            assert rows.sort_values("age_months")["high_ml"].is_monotonic_increasing, label


# DrawEM9 volumes (mL) of the real 1-month and 12-month aseg maps the bounds were fitted to
# (../shared/data/infant-aseg-labels, mapped as benchmarks/qc_volume_bounds.py does)
ASEG_1MO = {"cGM": 257.2, "WM": 187.6, "Ven": 8.5, "Cbm": 45.1, "dGM": 25.2, "BS": 8.5,
            "Hip": 4.9}
ASEG_12MO = {"cGM": 575.0, "WM": 257.8, "Ven": 12.8, "Cbm": 106.3, "dGM": 42.4, "BS": 9.8,
             "Hip": 9.0}


def test_structure_bounds_accept_real_infants_and_flag_what_is_missing_or_swollen():
    for volumes, weeks in ((ASEG_1MO, 4.3), (ASEG_12MO, 52.1)):
        bounds, flags = qc.structure_checks(volumes, weeks, DRAWEM9)
        assert flags == {} and set(bounds) == set(qc.STRUCTURES)
    # the 12-month MIT template has no cerebellum; 0.3.0 paints 32 mL of hippocampus on it
    _, flags = qc.structure_checks(ASEG_12MO | {"Cbm": 0.0, "Hip": 32.2}, 52.1, DRAWEM9)
    assert set(flags) == {"volume_Cbm", "volume_Hip"}
    assert flags["volume_Cbm"].startswith("cerebellum 0.0 mL is below the plausible")
    assert "above" in flags["volume_Hip"]
    # the 12-month brain at 1 month: several structures too large for the age
    assert "volume_Cbm" in qc.structure_checks(ASEG_12MO, 4.3, DRAWEM9)[1]
    assert qc.structure_checks(ASEG_1MO, None, DRAWEM9)[1] == {}  # no age: the first year's
    assert qc.age_dependent("volume_Cbm") and not qc.age_dependent("misplaced_Cbm")


def test_summary_line():
    assert qc.summary_line({}) == "QC ok"
    assert qc.summary_line({"views": "views disagree: mean Dice 0.27 < 0.35",
                            "misplaced_Cbm": "cerebellum 16.8 of 23.7 mL out of place"}) \
        == ("QC: 2 flags (cerebellum 16.8 of 23.7 mL out of place; views disagree: mean Dice "
            "0.27 < 0.35)")
    assert qc.summary_line({"age": "x"}) == "QC: 1 flag (x)"


def test_tissue_excludes_fluid():
    assert qc.tissue_indices(DRAWEM9) == (2, 3, 6, 7, 8, 9)


def test_view_agreement_is_one_for_identical_views_and_lower_otherwise():
    labels = np.zeros((10, 10, 10), np.uint8)
    labels[2:8, 2:8, 2:8] = 2
    labels[4:6, 4:6, 4:6] = 3
    shifted = np.roll(labels, 1, axis=0)
    same, pairs = qc.view_agreement({"axial": labels, "coronal": labels}, DRAWEM9)
    assert same[2] == pytest.approx(1.0) and pairs == {"axial-coronal": pytest.approx(1.0)}
    assert np.isnan(same[5])  # absent in both views
    moved, pairs = qc.view_agreement({"axial": labels, "coronal": labels, "sagittal": shifted},
                                     DRAWEM9)
    assert moved[2] < 1.0 and len(pairs) == 3


def test_components_count_pieces_and_the_largest_share():
    labels = np.zeros((12, 12, 12), np.int16)
    labels[1:4, 1:4, 1:4] = 9  # 27 voxels
    labels[8:9, 8:9, 8:9] = 9  # 1 voxel, apart
    labels[5, 5, 5] = 3
    pieces = qc.components(labels, DRAWEM9)
    assert pieces[9] == (2, pytest.approx(27 / 28))
    assert pieces[3] == (1, 1.0)
    assert pieces[6][0] == 0


def test_components_within_bounding_boxes_equal_labelling_the_whole_grid():
    rng = np.random.default_rng(0)
    labels = rng.choice(np.array([0, 1, 2, 3, 9], np.int16), size=(20, 18, 16),
                        p=[0.6, 0.1, 0.1, 0.1, 0.1])
    labels[:, :, :4] = 0
    structure = np.ones((3, 3, 3), bool)
    for index, (count, largest) in qc.components(labels, DRAWEM9).items():
        pieces, expected = ndimage.label(labels == index, structure=structure)
        assert count == expected
        if expected:
            sizes = np.bincount(pieces.ravel())[1:]
            assert largest == pytest.approx(sizes.max() / sizes.sum())


def _table(agreement: float, volumes_ml: dict[str, float] | None = None) -> pd.DataFrame:
    volumes_ml = {"CSF": 50, "cGM": 200, "WM": 200, "Ven": 10, "Cbm": 30, "dGM": 20, "BS": 5,
                  "Hip": 5} | (volumes_ml or {})
    volumes = pd.DataFrame({"index": [lab.index for lab in DRAWEM9.labels],
                            "volume_mm3": [1000 * volumes_ml.get(lab.abbreviation, 0)
                                           for lab in DRAWEM9.labels]})
    return qc.label_table(volumes, DRAWEM9, agreement=dict.fromkeys(range(10), agreement),
                          pieces=dict.fromkeys(range(10), (1, 1.0)), uncertain=None)


def test_summary_flags_views_that_disagree_as_on_broken_inputs_only():
    summary = qc.summary(_table(0.45), DRAWEM9, age_weeks=1.0, view_pairs={"a-b": 0.45},
                         mc_samples=0)
    assert summary["brain_volume_ml"] == pytest.approx(460)
    assert summary["brain_volume_status"] == "ok"
    assert summary["flags"] == {}  # the real MIT templates agree 0.44-0.47 (0.7 flagged them)
    assert summary["mc_entropy_mean"] is None
    assert set(summary["structure_bounds_ml"]) == set(qc.STRUCTURES)
    broken = qc.summary(_table(0.27), DRAWEM9, age_weeks=1.0, view_pairs={"a-b": 0.27},
                        mc_samples=0)  # uniform noise: 0.27-0.29
    assert set(broken["flags"]) == {"views"}


def test_summary_flags_structures_out_of_bounds_and_out_of_place():
    summary = qc.summary(_table(0.6, {"Cbm": 0.0}), DRAWEM9, age_weeks=1.0,
                         view_pairs={"a-b": 0.6}, mc_samples=0,
                         misplaced_ml={"Cbm": 0.0, "BS": 0.9, "Hip": 2.5})
    assert set(summary["flags"]) == {"volume_Cbm", "misplaced_Hip"}  # BS: under 1 mL
    assert summary["flags"]["misplaced_Hip"].startswith("hippocampus 2.5 of 5.0 mL out of place")
    assert summary["misplaced_ml"] == {"Cbm": 0.0, "BS": 0.9, "Hip": 2.5}
    # 1.7 mL of specks in a 90 mL cerebellum (0.3.0 on the demo's 6-month scan): not flagged
    assert qc.placement_flags({"Cbm": 1.7}, {"Cbm": 89.5}) == {}
    assert set(qc.placement_flags({"Cbm": 3.4}, {"Cbm": 4.5})) == {"misplaced_Cbm"}


# A synthetic brain at 2 mm in RAS world millimetres: cerebrum (cortex around white matter),
# deep grey matter D at (0, -5, 10), brainstem below it, cerebellum below and behind,
# hippocampi low and lateral; as real anatomy lies relative to D (qc.PLACEMENTS).
ZOOM = 2.0
SHAPE = (60, 70, 60)


def _affine() -> np.ndarray:
    affine = np.diag([ZOOM, ZOOM, ZOOM, 1.0])
    affine[:3, 3] = -np.array(SHAPE) * ZOOM / 2
    return affine


def _ball(centre, radii) -> np.ndarray:
    grid = np.indices(SHAPE).reshape(3, -1).T @ _affine()[:3, :3].T + _affine()[:3, 3]
    inside = (((grid - np.array(centre, float)) / np.array(radii, float)) ** 2).sum(1) <= 1
    return inside.reshape(SHAPE)


def _brain() -> np.ndarray:
    labels = np.zeros(SHAPE, np.int16)
    labels[_ball((0, 0, 10), (46, 56, 41))] = 2
    labels[_ball((0, 0, 10), (42, 52, 37))] = 3
    labels[_ball((0, -5, 10), (15, 12, 10))] = 7
    labels[_ball((0, -18, -20), (8, 8, 18))] = 8
    labels[_ball((0, -42, -25), (30, 15, 12))] = 6
    for x in (-25, 25):
        labels[_ball((x, -10, -8), (5, 12, 5))] = 9
    return labels


def _painted(labels: np.ndarray, label: int, centre, radius=7.0) -> tuple[np.ndarray, float]:
    """``labels`` with a ball of ``label`` added, and the ball's mL."""
    ball = _ball(centre, (radius,) * 3) & (labels != label)
    out = labels.copy()
    out[ball] = label
    return out, float(ball.sum()) * ZOOM ** 3 / 1000


def test_real_anatomy_has_nothing_out_of_place_whatever_the_voxel_order_or_a_tilt():
    labels, affine = _brain(), _affine()
    assert qc.misplaced(labels, affine, DRAWEM9) == {"Cbm": 0.0, "BS": 0.0, "Hip": 0.0}
    flipped = affine @ np.diag([-1.0, 1, 1, 1])  # LAS voxel order, same world
    flipped[0, 3] = affine[0, 3] + (SHAPE[0] - 1) * ZOOM
    assert qc.misplaced(labels[::-1], flipped, DRAWEM9) == {"Cbm": 0.0, "BS": 0.0, "Hip": 0.0}
    for degrees in (-20, 20):  # head pitched nose down / up in the scanner
        t = np.radians(degrees)
        pitch = np.array([[1, 0, 0, 0], [0, np.cos(t), -np.sin(t), 0],
                          [0, np.sin(t), np.cos(t), 0], [0, 0, 0, 1]])
        assert sum(qc.misplaced(labels, pitch @ affine, DRAWEM9).values()) == 0, degrees


def test_cerebellum_above_the_tentorium_or_along_the_temporal_lobes_is_out_of_place():
    brain, affine = _brain(), _affine()
    above, ml = _painted(brain, 6, (0, -30, 35))  # a piece above the deep grey matter
    assert ml > 1 and qc.misplaced(above, affine, DRAWEM9)["Cbm"] == pytest.approx(ml)
    temporal, left = _painted(brain, 6, (-36, 5, -12))  # in front of D: the temporal lobes
    temporal, right = _painted(temporal, 6, (36, 5, -12))
    found = qc.misplaced(temporal, affine, DRAWEM9)
    assert found["Cbm"] == pytest.approx(left + right) and found["BS"] == 0
    # the cerebellum grown up through the tentorium in one piece: the part above D + 0.2 R
    tall = brain.copy()
    tall[_ball((0, -45, 10), (6, 6, 30)) & (brain != 7)] = 6
    assert qc.misplaced(tall, affine, DRAWEM9)["Cbm"] > 1
    # a piece 4-5 mm from the main cerebellum (a flocculus) belongs to it; farther, it does not
    i, j, k = max(np.argwhere(brain == 6), key=lambda v: v[0])  # its rightmost voxel
    near = brain.copy()
    near[i + 2, j - 1:j + 1, k - 1:k + 1] = 6  # 2 mm gap: a piece of its own
    assert qc.components(near, DRAWEM9)[6][0] == 2
    assert qc.misplaced(near, affine, DRAWEM9)["Cbm"] == 0
    far = brain.copy()
    far[i + 4, j - 1:j + 1, k - 1:k + 1] = 6  # 6 mm gap
    assert qc.misplaced(far, affine, DRAWEM9)["Cbm"] == pytest.approx(4 * ZOOM ** 3 / 1000)
    # without a cerebellum where one belongs (the MIT templates), no piece is its main piece
    no_cerebellum = np.where(brain == 6, 3, brain)
    lonely, ml = _painted(no_cerebellum, 6, (36, 5, -12))
    assert qc.misplaced(lonely, affine, DRAWEM9)["Cbm"] == pytest.approx(ml)


def test_brainstem_above_the_thalami_and_hippocampus_in_the_parietal_lobe_are_out_of_place():
    brain, affine = _brain(), _affine()
    stem, ml = _painted(brain, 8, (0, -5, 35))
    assert qc.misplaced(stem, affine, DRAWEM9) == {"Cbm": 0.0, "BS": pytest.approx(ml),
                                                   "Hip": 0.0}
    hippocampus, ml = _painted(brain, 9, (20, -20, 38))
    assert qc.misplaced(hippocampus, affine, DRAWEM9)["Hip"] == pytest.approx(ml)


def test_nothing_is_placed_without_deep_grey_matter_or_in_another_label_set():
    brain = _brain()
    assert qc.misplaced(np.where(brain == 7, 3, brain), _affine(), DRAWEM9) == {}
    other = dataclasses.replace(DRAWEM9, labels=tuple(  # not DrawEM9's classes: other names
        dataclasses.replace(lab, name=f"x{lab.index}", abbreviation=f"x{lab.index}")
        for lab in DRAWEM9.labels))
    assert qc.misplaced(brain, _affine(), other) == {}
    assert qc.structure_checks(ASEG_1MO, 4.3, other) == ({}, {})


# The phantom with fluid (a CSF shell, lateral ventricles), and relabelled as an aseg: each
# DrawEM9 structure one or two aseg labels per side (split at x = 0; RAS, so left is x < 0),
# whose sums are the DrawEM9 structures again (data/labelmaps/aseg-to-drawem9.tsv).
ASEG_SIDES = {1: (24, 24), 2: (3, 42), 3: (2, 41), 5: (4, 43), 6: (8, 47), 7: (10, 49),
              8: (16, 16), 9: (17, 53)}


def _fluid_brain() -> np.ndarray:
    labels = _brain()
    labels[_ball((0, 0, 10), (50, 60, 45)) & (labels == 0)] = 1
    for x in (-12, 12):
        labels[_ball((x, 5, 24), (4, 14, 4)) & (labels == 3)] = 5
    return labels


def _as_aseg(drawem9: np.ndarray) -> np.ndarray:
    x = np.indices(SHAPE)[0] * ZOOM + _affine()[0, 3]
    out = np.zeros(SHAPE, np.int16)
    for label, (left, right) in ASEG_SIDES.items():
        out[(drawem9 == label) & (x < 0)] = left
        out[(drawem9 == label) & (x >= 0)] = right
    # subdivisions the structure sums must gather: cerebellar white matter inside the
    # cerebellar cortex, caudate in front of the thalamus, amygdala in front of the hippocampus
    inner = _ball((0, -42, -25), (22, 9, 7)) & (drawem9 == 6)
    out[inner] = np.where(x[inner] < 0, 7, 46)
    y = np.indices(SHAPE)[1] * ZOOM + _affine()[1, 3]
    for label, (left, right) in ((7, (11, 50)), (9, (18, 54))):
        front = (drawem9 == label) & (y > (0 if label == 7 else -6))
        out[front] = np.where(x[front] < 0, left, right)
    return out


def _classes(label_map: np.ndarray, labels) -> np.ndarray:
    lut = np.zeros(int(labels.indices.max()) + 1, np.int64)
    lut[labels.indices] = np.arange(len(labels))
    return lut[label_map]


def _scan_qc(label_map: np.ndarray, labels, age_weeks: float | None,
             views: tuple[np.ndarray, ...]) -> dict:
    """What the participant level's QC node computes from a label map and the views'."""
    affine = _affine()
    agreement, pairs = qc.view_agreement(
        {f"v{i}": _classes(v, labels) for i, v in enumerate(views)}, labels)
    boxes = qc.label_boxes(label_map)
    table = qc.label_table(label_volumes(label_map, affine, labels), labels,
                           agreement=agreement,
                           pieces=qc.components(label_map, labels, boxes), uncertain=None)
    return qc.summary(table, labels, age_weeks=age_weeks, view_pairs=pairs, mc_samples=0,
                      misplaced_ml=qc.misplaced(label_map, affine, labels, boxes))


def _group_flags(label_map: np.ndarray, labels, age_weeks: float) -> str:
    volumes = label_volumes(label_map, _affine(), labels)
    scan = {"participant_id": "sub-01", "session_id": None, "age_weeks": age_weeks,
            "age_source": "participants.tsv:age", "sex": None, "volumes": volumes,
            "qc": {"flags": {}}, "model": {}, "report": None}
    collected = Collected(labels, scans=[scan])
    return qc_table(collected, wide_table(collected))["flags"].iloc[0]


def test_tissue_of_an_aseg_comes_from_its_mapping_not_its_names():
    tissue = qc.tissue_indices(ASEG)
    assert {3, 42, 2, 41, 7, 8, 46, 47, 10, 49, 16, 17, 53} <= set(tissue)
    assert not {4, 5, 14, 15, 24, 43, 44} & set(tissue)  # ventricles and CSF are fluid
    assert qc.drawem9_structures(ASEG).source == "aseg-to-drawem9"
    assert qc.drawem9_structures(ASEG).members("cGM") == (3, 42)
    assert qc.structures_skipped(ASEG) is None and qc.structures_skipped(DRAWEM9) is None


def test_an_aseg_gets_the_qc_of_the_drawem9_map_it_was_relabelled_from():
    brain = _fluid_brain()
    above, _ = _painted(brain, 6, (0, -30, 35))  # cerebellum above the tentorium
    lonely, _ = _painted(np.where(brain == 6, 3, brain), 6, (36, 5, -12))  # the MIT templates
    hippocampus, _ = _painted(brain, 9, (20, -20, 38))
    cases = {"phantom": (brain, 1.0, 0), "above": (above, 52.0, 0),
             "temporal": (lonely, 26.0, 0), "hippocampus": (hippocampus, None, 0),
             "views": (brain, 1.0, 9)}
    seen = set()
    for case, (drawem9, weeks, shift) in cases.items():
        aseg = _as_aseg(drawem9)
        assert set(np.unique(aseg)) - {0} and not set(np.unique(aseg)) & {1, 5, 6, 9}, case
        views = (drawem9, np.roll(drawem9, shift, axis=2))
        expected = _scan_qc(drawem9, DRAWEM9, weeks, views)
        found = _scan_qc(aseg, ASEG, weeks, tuple(_as_aseg(v) for v in views))
        assert found["flags"] == expected["flags"], case
        for key in ("brain_volume_ml", "intracranial_volume_ml", "brain_volume_status",
                    "structure_bounds_ml"):
            assert found[key] == expected[key], (case, key)
        assert found["misplaced_ml"] == pytest.approx(expected["misplaced_ml"]), case
        assert found["view_dice_mean"] == pytest.approx(expected["view_dice_mean"]), case
        if weeks is not None:
            assert _group_flags(aseg, ASEG, weeks) == _group_flags(drawem9, DRAWEM9, weeks)
        seen |= set(expected["flags"])
    # the cases meant something: structure volumes, placement and views were all flagged
    assert {"volume_Cbm", "misplaced_Cbm", "misplaced_Hip", "views"} <= seen, seen


def test_a_site_table_without_a_mapping_skips_the_structure_checks():
    """A site's own table is not read as DrawEM9 structures, even where its abbreviations
    or its indices look like them: the checks are skipped, and the log says why."""
    codes = {1: 1, 2: 2, 3: 3, 5: 4, 6: 5, 7: 6, 8: 7, 9: 8}  # DrawEM9 -> the site's indices
    site = LabelSet.from_records("site", [
        {"index": 0, "name": "Outside"}, {"index": 1, "name": "Fluid", "abbreviation": "CSF"},
        {"index": 2, "name": "Grey", "abbreviation": "cGM"},
        {"index": 3, "name": "White", "abbreviation": "WM"},
        {"index": 4, "name": "Ventricles", "abbreviation": "Ven"},
        {"index": 5, "name": "Cerebellum", "abbreviation": "Cbm"},
        {"index": 6, "name": "Deep", "abbreviation": "dGM"},
        {"index": 7, "name": "Stem", "abbreviation": "BS"},
        {"index": 8, "name": "Hippocampus", "abbreviation": "Hip"}])
    brain, _ = _painted(_fluid_brain(), 6, (0, -30, 35))
    label_map = np.zeros(SHAPE, np.int16)
    for drawem9, index in codes.items():
        label_map[brain == drawem9] = index
    assert qc.drawem9_structures(site) is None
    assert qc.misplaced(label_map, _affine(), site) == {}
    assert qc.structure_checks({"Cbm": 0.0, "Hip": 99.0}, 52.0, site) == ({}, {})
    summary = _scan_qc(label_map, site, 52.0, (label_map, label_map))
    assert summary["structure_bounds_ml"] == {} and summary["misplaced_ml"] == {}
    assert not [f for f in summary["flags"] if f.startswith(("volume_", "misplaced_"))]
    assert summary["brain_volume_status"] in ("ok", "below", "above")  # still checked, by names
    why = qc.structures_skipped(site)
    assert "\n" not in why and "'site'" in why and "skipped" in why
    assert "aseg-to-drawem9" in why
    # FreeSurfer indices with other names are not an aseg
    impostor = LabelSet.from_records("aseg", [{"index": 0, "name": "Unknown"},
                                              {"index": 3, "name": "White matter"},
                                              {"index": 4, "name": "Grey matter"}])
    assert qc.drawem9_structures(impostor) is None and qc.structures_skipped(impostor)


@pytest.fixture(scope="module")
def dropout_model(tmp_path_factory):
    card = dataclasses.replace(tiny_card(), architecture=QuickNATConfig(
        num_classes=len(DRAWEM9), num_filters=4, dropout=0.5))
    torch.manual_seed(1)
    nets = {view: QuickNAT(card.architecture).eval() for view in card.views}
    return load_model(save_model(tmp_path_factory.mktemp("dropout"), card, nets))


def _volume() -> np.ndarray:
    volume = np.zeros((32, 32, 32), np.float32)
    volume[6:26, 8:24, 6:26] = np.random.default_rng(0).random((20, 16, 20))
    return volume


def test_mc_dropout_measures_uncertainty_without_changing_the_segmentation(dropout_model):
    volume = _volume()
    plain = predict(dropout_model, volume)
    result = predict_with_qc(dropout_model, volume, mc_samples=2)
    np.testing.assert_array_equal(result.probs, plain)  # dropout off for the label map
    assert set(result.view_labels) == {"axial", "coronal", "sagittal"}
    assert result.sample_counts.shape == (2, len(DRAWEM9))
    assert (result.sample_counts.sum(axis=1) == volume.size).all()
    assert 0 < result.entropy.max() <= 1 and result.entropy[0, 0, 0] == 0  # empty: certain
    again = predict_with_qc(dropout_model, volume, mc_samples=2)
    np.testing.assert_array_equal(again.entropy, result.entropy)  # seeded: reproducible
    assert not any(m.training for net in dropout_model.nets.values() for m in net.modules())
    per_label = qc.uncertainty(result.entropy, result.probs.argmax(0), result.sample_counts,
                               DRAWEM9)
    assert any(np.isfinite(e) and e > 0 for e, _ in per_label.values())


def test_each_views_labels_are_that_views_argmax(tmp_path):
    model = load_model(make_tiny_model(tmp_path / "axial", views={"axial": 1.0}))
    result = predict_with_qc(model, _volume())
    np.testing.assert_array_equal(result.view_labels["axial"], result.probs.argmax(axis=0))
    assert result.entropy is None and result.sample_counts is None


def test_the_group_level_redoes_the_structure_bounds_at_its_age():
    """A scan segmented without an age got no volume flags; the group level knows it is 12
    months old: the missing cerebellum is flagged there, the view flag is kept."""
    volumes = pd.DataFrame({"index": [lab.index for lab in DRAWEM9.labels],
                            "volume_mm3": [1000 * (ASEG_12MO | {"Cbm": 0.0, "CSF": 90.0}).get(
                                lab.abbreviation, 0.0) for lab in DRAWEM9.labels]})
    stale = {"volume_Hip": "hippocampus 9.0 mL is above ... at 2.0 weeks",
             "views": "views disagree: mean Dice 0.20 < 0.35"}
    scan = {"participant_id": "sub-01", "session_id": None, "age_weeks": 52.1,
            "age_source": "participants.tsv:age", "sex": None, "volumes": volumes,
            "qc": {"flags": stale}, "model": {}, "report": None}
    collected = Collected(DRAWEM9, scans=[scan])
    table = qc_table(collected, wide_table(collected))
    flags = table["flags"].iloc[0]
    assert "cerebellum 0.0 mL is below" in flags and "views disagree" in flags
    assert "hippocampus" not in flags  # redone at 52.1 weeks: 9.0 mL is plausible


def test_the_log_says_each_scans_qc_in_one_line(finished_study):
    run = finished_study.together
    sidecars = sorted(run.out.glob("sub-*/**/anat/*_qc.json"))
    assert len(sidecars) == 4, run.log
    for path in sidecars:
        stem = path.name.split("_desc-")[0]
        flags = json.loads(path.read_text())["QC"]["flags"]
        lines = [line for line in run.log.splitlines() if f"{stem}: QC" in line]
        assert len(lines) == 1, run.log
        assert lines[0].endswith(f"{stem}: {qc.summary_line(flags)}")


@pytest.mark.parametrize("background", ["BG", "NonBrain"])
def test_drawem9_classes_get_drawem9_qc_whatever_their_abbreviations(background):
    """A card written when Background was "BG" (or a site's abbreviations) has DrawEM9's
    classes (``LabelSet.same_classes``: indices and names) and keeps its structure checks."""
    older = dataclasses.replace(DRAWEM9, labels=tuple(
        dataclasses.replace(lab, abbreviation=background) if lab.index == 4 else lab
        for lab in DRAWEM9.labels))
    assert qc.is_drawem9(older) and qc.structures_skipped(older) is None
    assert qc.drawem9_structures(older).identity
    bounds, flags = qc.structure_checks(ASEG_12MO | {"Cbm": 0.0, background: 300.0}, 52.1,
                                        older)
    assert set(flags) == {"volume_Cbm"} and "Cbm" in bounds


def test_without_an_age_volumes_are_checked_against_the_whole_first_year():
    """No age used to skip every size check: a 50 mL "brain" passed. Now the first year's
    widest bounds (term's lowest to 12 months' highest) apply, and the record says so."""
    year = qc.first_year_bounds("brain")
    assert year.lower_ml == pytest.approx(qc.brain_volume_bounds(0).lower_ml)
    assert year.upper_ml == pytest.approx(qc.brain_volume_bounds(52.1).upper_ml, abs=1)
    for brain_ml, status in ((450, "ok"), (950, "ok"), (50, "below"), (3000, "above")):
        found, flags = qc.volume_check(brain_ml, None)
        assert found == status
        assert flags["age"] == ("no age: volumes checked against the whole first year "
                                "(0-52.1 weeks), not the scan's age")
        assert ("brain_volume" in flags) == (status != "ok")
    assert qc.volume_check(50, None)[1]["brain_volume"].endswith(
        "mL in the whole first year (0-52.1 weeks; no age known)")
    for volumes in (ASEG_1MO, ASEG_12MO):  # real infants pass at any first-year age
        bounds, flags = qc.structure_checks(volumes, None, DRAWEM9)
        assert flags == {} and set(bounds) == set(qc.STRUCTURES)
    flags = qc.structure_checks(ASEG_12MO | {"Cbm": 0.0}, None, DRAWEM9)[1]
    assert list(flags) == ["volume_Cbm"] and "no age known" in flags["volume_Cbm"]
    table = pd.DataFrame({"index": [lab.index for lab in DRAWEM9.labels],
                          "volume_mm3": [1000.0] * len(DRAWEM9), "view_dice": 0.9,
                          "mc_entropy": float("nan")})
    record = qc.summary(table, DRAWEM9, age_weeks=None, view_pairs={}, mc_samples=0)
    assert record["bounds_for_age"] == "in the whole first year (0-52.1 weeks; no age known)"
    assert record["brain_volume_status"] == "below" and record["bounds_lower_ml"] is not None


def test_the_qc_table_rounds_its_numbers_and_the_volume_table_keeps_full_precision():
    """Volumes once showed 17 digits (180461.95287119987) in the QC table people read; the
    volume table keeps voxels x voxel volume exactly, as its sidecar says."""
    affine = np.diag([0.7, 0.7, 0.9, 1.0])
    label_map = np.zeros((20, 20, 20), np.int16)
    label_map[3:17, 2:15, 4:18] = 2
    label_map[8:12, 8:12, 8:12] = 3
    volumes = label_volumes(label_map, affine, DRAWEM9)
    voxel = abs(np.linalg.det(affine[:3, :3]))
    assert list(volumes["volume_mm3"]) == [n * voxel for n in volumes["voxels"]]
    assert any(len(repr(v).split(".")[1]) > 3 for v in volumes["volume_mm3"])  # 17 digits
    table = qc.label_table(volumes, DRAWEM9, agreement={2: 1 / 3, 3: 2 / 3},
                           pieces=qc.components(label_map, DRAWEM9), uncertain=None)
    text = table.to_csv(sep="\t", index=False, na_rep="n/a")
    assert re.search(r"\d\.\d{5,}", text) is None, text
    row = table.set_index("index").loc[2]
    assert row["view_dice"] == 0.3333
    assert row["volume_mm3"] == round(float(volumes.loc[2, "volume_mm3"]), 3)

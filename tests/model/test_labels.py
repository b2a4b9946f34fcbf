"""The built-in aseg label set: FreeSurfer's indices, names and colours, both sides of each
lateral structure, its BIDS table, and the partial label groups synthesis may draw."""

from __future__ import annotations

import dataclasses

from bids_infantseg.model.card import read_card, resolve_model_path
from bids_infantseg.model.labels import ASEG, BUILTIN, DRAWEM9, LABEL_GROUPS, builtin_twin


def test_aseg_holds_every_lateralised_structure_of_the_infant_asegs():
    pairs = [(2, 41), (3, 42), (4, 43), (5, 44), (7, 46), (8, 47), (10, 49), (11, 50),
             (12, 51), (13, 52), (17, 53), (18, 54), (26, 58), (28, 60)]
    assert sorted(ASEG.indices.tolist()) == sorted([0, 14, 15, 16, 24, *sum(pairs, ())])
    assert ASEG.indices.tolist() == sorted(ASEG.indices.tolist())  # class k = k-th index
    for left, right in pairs:
        a, b = ASEG.by_index(left), ASEG.by_index(right)
        assert a.name.removeprefix("Left-") == b.name.removeprefix("Right-")
        assert a.abbreviation.removeprefix("L-") == b.abbreviation.removeprefix("R-")
    assert (ASEG.by_index(10).name, ASEG.by_index(28).name, ASEG.by_index(3).color) == \
        ("Left-Thalamus", "Left-VentralDC", "#cd3e4e")
    assert ASEG.non_brain == (0,) and BUILTIN["aseg"] is ASEG and BUILTIN["drawem9"] is DRAWEM9


def test_aseg_dseg_table_carries_freesurfer_indices_and_names():
    rows = [line.split("\t") for line in ASEG.dseg_tsv().splitlines()]
    assert rows[0] == ["index", "name", "abbreviation", "color", "brain"]
    assert len(rows) == 1 + 33
    assert ["17", "Left-Hippocampus", "L-Hip", "#dcd814", "yes"] in rows
    assert ["0", "Unknown", "UNK", "#000000", "no"] in rows


def test_groups_lie_above_the_set_and_hold_its_labels():
    indices = set(ASEG.indices.tolist())
    groups = LABEL_GROUPS["aseg"]
    assert min(g.index for g in groups) > max(indices)
    assert len({g.index for g in groups}) == len(groups)
    assert all(set(g.members) <= indices - {0} for g in groups)
    names = {g.name: set(g.members) for g in groups}
    assert names["Left-Deep-Grey-Matter"] == {10, 11, 12, 13, 26, 28}
    assert names["Right-Hippocampus-Amygdala"] == {53, 54}
    assert "drawem9" not in LABEL_GROUPS


def test_builtin_twin_is_the_built_in_set_with_the_same_classes_whatever_the_colours():
    recoloured = dataclasses.replace(ASEG, name="site", labels=tuple(
        dataclasses.replace(lab, color="#123456") for lab in ASEG.labels))
    assert builtin_twin(recoloured) is ASEG
    assert builtin_twin(DRAWEM9) is DRAWEM9
    renamed = dataclasses.replace(DRAWEM9, labels=tuple(
        dataclasses.replace(lab, name=lab.name + "x") for lab in DRAWEM9.labels))
    assert builtin_twin(renamed) is None


def _metric_keys(metrics) -> set[str]:
    """Every key of the per-label Dice tables (those with a ``brain_mean``) in a card's
    metrics."""
    if not isinstance(metrics, dict):
        return set()
    if "brain_mean" in metrics:
        return set(metrics)
    return set().union(*(_metric_keys(v) for v in metrics.values()))


def test_drawem9_background_is_not_abbreviated_as_basal_ganglia_anywhere():
    """DrawEM's "Background" (non-brain tissue in the head) was "BG", which a clinician reads
    as basal ganglia; the bundled cards' label tables and per-label metrics use the new
    abbreviation too, so outputs and cards agree."""
    background = DRAWEM9.by_index(4)
    assert (background.name, background.abbreviation) == ("Background", "Bkg")
    assert "4\tBackground\tBkg\t" in DRAWEM9.dseg_tsv()
    drawem9 = read_card(resolve_model_path("drawem9-synth-starter"))
    assert [(lab.index, lab.name, lab.abbreviation) for lab in drawem9.labels.labels] == \
        [(lab.index, lab.name, lab.abbreviation) for lab in DRAWEM9.labels]
    for name in ("drawem9-synth-starter", "aseg-synth-starter"):
        card = read_card(resolve_model_path(name))
        keys = _metric_keys(card.metrics) - {"brain_mean"}
        known = {lab.abbreviation for lab in (*DRAWEM9.labels, *card.labels.labels)}
        assert keys and "BG" not in keys and keys <= known, (name, keys - known)

"""The built-in aseg label set: FreeSurfer's indices, names and colours, both sides of each
lateral structure, its BIDS table, and the partial label groups synthesis may draw."""

from __future__ import annotations

import dataclasses

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

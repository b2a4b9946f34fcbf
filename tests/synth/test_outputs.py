"""Aseg training labels through painting: a label map carries its own codes (folded by side,
swapped when mirrored), repainted voxels take their class on the right side, and sources
without sides or subdivisions (fetal atlases, procedural heads) are lateralised by their
midline with partial labels where they lack the aseg subdivisions."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bids_infantseg import synth
from bids_infantseg.model.labels import ASEG, LABEL_GROUPS
from bids_infantseg.synth import _painted
from bids_infantseg.synth.geometry import grid_affine, grid_points
from bids_infantseg.synth.labelmaps import LabelMap, Scheme, SchemeError
from tests.synth.test_labelmaps import DRAWEM9_TO_ASEG

FS = Scheme.load("freesurfer-aseg")
LEFT = {lab.index for lab in ASEG.labels if lab.name.startswith("Left-")}
RIGHT = {lab.index for lab in ASEG.labels if lab.name.startswith("Right-")}
GROUPS = {group.name: group.index for group in LABEL_GROUPS["aseg"]}
SHAPE, VOXEL = (64, 64, 64), 3.0


def write_aseg(path: Path, left_hippocampus_only: bool = False) -> Path:
    """An aseg-like brain-only map (RAS, 2 mm) of an unturned, centred procedural head, each
    structure on the side of the head's midline (x = 0)."""
    shape = (80, 96, 80)
    affine = grid_affine(shape, 2.0)
    drawem9 = synth.GEN_TO_DRAWEM9[synth.label_map(1.0, np.random.default_rng(2), shape, affine,
                                                   rotation_deg=0.0, shift_mm=0.0,
                                                   deform_mm=0.0)]
    right = np.broadcast_to((np.arange(shape[0]) >= shape[0] / 2)[:, None, None], shape)
    aseg = np.zeros(shape, dtype=np.int16)
    for drawem, (left_code, right_code) in DRAWEM9_TO_ASEG.items():
        aseg[drawem9 == drawem] = np.where(right, right_code, left_code)[drawem9 == drawem]
    if left_hippocampus_only:
        aseg[aseg == 53] = 41
    nib.save(nib.Nifti1Image(aseg, affine), path)
    return path


@pytest.fixture(scope="module")
def aseg_file(tmp_path_factory) -> Path:
    return write_aseg(tmp_path_factory.mktemp("aseg") / "aseg.nii.gz")


def head_points() -> np.ndarray:
    """Head coordinates of a RAS grid centred on the head, unturned: x < 0 is left."""
    return grid_points(SHAPE, grid_affine(SHAPE, VOXEL), np.eye(4))


def paint(source: LabelMap, seed: int) -> tuple[np.ndarray, np.ndarray]:
    gen, labels = source.paint_labels(head_points(), np.random.default_rng(seed),
                                      np.full(3, VOXEL), 3.0, ("aseg",))
    return gen, labels["aseg"]


def mirrored(seed: int) -> bool:
    """Whether ``LabelMap.paint_labels`` mirrors the map for this seed (its second draw)."""
    rng = np.random.default_rng(seed)
    rng.uniform()
    return bool(rng.uniform() < 0.5)


def test_aseg_labels_keep_their_side_and_swap_when_the_map_is_mirrored(tmp_path):
    """A map with a left hippocampus only: it lands left or right, always named by the side
    it lands on."""
    source = LabelMap(write_aseg(tmp_path / "a.nii.gz", left_hippocampus_only=True), FS, 1.0)
    x = head_points()[0]
    landed = []
    for seed in range(6):
        _, labels = paint(source, seed)
        hippocampus = np.isin(labels, (17, 53))
        assert set(np.unique(labels[hippocampus]).tolist()) == {53 if mirrored(seed) else 17}
        assert ((x[hippocampus] > 0) == mirrored(seed)).all()
        landed.append(mirrored(seed))
        for side, sign in ((LEFT, -1), (RIGHT, 1)):
            assert (sign * x[np.isin(labels, list(side))] > 0).mean() > 0.97
    assert 0 < sum(landed) < len(landed)


def test_rarer_codes_fold_into_the_aseg_labels_by_side(tmp_path):
    """Choroid plexus is its side's lateral ventricle and a vessel its side's white matter,
    exactly as if the map said so; unsided codes (WM hypointensities, vermis, optic chiasm)
    take the side of the head's midline."""
    write_aseg(tmp_path / "base.nii.gz")
    image = nib.load(tmp_path / "base.nii.gz")
    base = np.asarray(image.dataobj).copy()
    deep = np.argwhere(base == 10)  # left deep grey matter: blocks for the chiasm and a vessel
    chiasm, vessel = tuple(deep[:40].T), tuple(deep[-40:].T)
    plain = base.copy()
    plain[chiasm], plain[vessel] = 26, 12  # accumbens and putamen mark where they land
    rare = base.copy()
    rare[base == 4], rare[base == 43] = 31, 63
    rare[np.isin(base, (2, 41))] = 77
    rare[np.isin(base, (8, 47))] = 172
    rare[chiasm], rare[vessel] = 85, 30
    for name, data in (("plain", plain), ("rare", rare)):
        nib.save(nib.Nifti1Image(data, image.affine), tmp_path / f"{name}.nii.gz")
    right = head_points()[0] >= 0
    for seed in (0, 1):  # one map unmirrored, one mirrored
        kept = LabelMap(tmp_path / "plain.nii.gz", FS, 1.0, thin_cortex=0.0)
        folded = LabelMap(tmp_path / "rare.nii.gz", FS, 1.0, thin_cortex=0.0)
        _, expected = paint(kept, seed)
        _, labels = paint(folded, seed)

        def by_side(left: int, right_index: int) -> np.ndarray:
            return np.where(right, right_index, left)

        expected = np.where(np.isin(expected, (2, 41)), by_side(2, 41), expected)
        expected = np.where(np.isin(expected, (8, 47)), by_side(8, 47), expected)
        expected = np.where(np.isin(expected, (26, 58)), by_side(28, 60), expected)
        expected = np.where(expected == 12, 2, np.where(expected == 51, 41, expected))
        present = set(np.unique(labels).tolist())
        assert {4, 43} <= present and present & {28, 60}
        np.testing.assert_array_equal(labels, expected)
    assert mirrored(0) != mirrored(1)


def test_repainted_voxels_take_their_class_on_their_side(aseg_file):
    """Opened sulci are CSF, the ribbon's cortex and white matter are the hemisphere's, the
    painted head is 0; the aseg labels agree with the DrawEM9 labels of the same draw, with
    and without a skull-strip."""
    source = LabelMap(aseg_file, FS, 1.0, thin_cortex=1.0)
    for seed, strip in ((3, 0.0), (4, 1.0)):
        _, drawn = synth.training_volume_sets(np.random.default_rng(seed), 3.0, SHAPE, VOXEL,
                                              anatomy=source, strip_probability=strip,
                                              label_sets=("aseg", "drawem9"))
        aseg, drawem9 = drawn["aseg"], drawn["drawem9"]
        assert set(np.unique(aseg).tolist()) <= set(ASEG.indices.tolist())
        np.testing.assert_array_equal(drawem9 == 2, np.isin(aseg, (3, 42)))
        assert np.isin(aseg[drawem9 == 3], (2, 41)).all()
        assert np.isin(aseg[drawem9 == 1], (24, 14, 15)).all()
        assert (aseg[np.isin(drawem9, (0, 4))] == 0).all()
        assert np.isin(aseg[drawem9 == 5], (4, 5, 43, 44)).all()


def test_a_fetal_atlas_is_lateralised_by_its_midline_with_partial_labels(atlases):
    """Every sided label on its side of the head; deep grey matter, hippocampus with
    amygdala, cerebellum and ventricles as their groups, never as a finer structure."""
    x = head_points()[0]
    for seed in (0, 1):
        gen, drawn = _painted(3.0, np.random.default_rng(seed), SHAPE, grid_affine(SHAPE, VOXEL),
                              synth.FetalAtlas(atlases[0]), 0.0, 0.0, 0.0, ("aseg",))
        labels = drawn["aseg"]
        left = np.isin(labels, [*LEFT, *(i for n, i in GROUPS.items() if n.startswith("Left"))])
        right = np.isin(labels, [*RIGHT, *(i for n, i in GROUPS.items()
                                           if n.startswith("Right"))])
        assert (x[left] < 0).all() and (x[right] >= 0).all()
        present = set(np.unique(labels).tolist())
        assert {GROUPS[f"{side}-{name}"] for side in ("Left", "Right") for name in
                ("Deep-Grey-Matter", "Ventricles", "Cerebellum",
                 "Hippocampus-Amygdala")} <= present
        assert not present & {10, 11, 12, 13, 17, 18, 26, 28, 7, 8, 4, 5}
        assert {2, 3, 41, 42, 16, 24, 0} <= present


def test_a_procedural_head_is_lateralised_by_its_fissure():
    """Sides follow the head's own midline, which waves a few mm about x = 0: left of it is
    left, along every row."""
    x = head_points()[0]
    _, drawn = _painted(3.0, np.random.default_rng(5), SHAPE, grid_affine(SHAPE, VOXEL),
                        synth.Procedural(), 0.0, 0.0, 0.0, ("aseg",))
    labels = drawn["aseg"]
    left_groups = [i for n, i in GROUPS.items() if n.startswith("Left")]
    right_groups = [i for n, i in GROUPS.items() if n.startswith("Right")]
    left, right = np.isin(labels, [*LEFT, *left_groups]), np.isin(labels, [*RIGHT, *right_groups])
    assert (x[left] < 0).mean() > 0.9 and (x[right] > 0).mean() > 0.9
    assert (x[left] < 10).all() and (x[right] > -10).all()
    last_left = np.where(left.any(axis=0), SHAPE[0] - 1 - np.argmax(left[::-1], axis=0), -1)
    first_right = np.where(right.any(axis=0), np.argmax(right, axis=0), SHAPE[0])
    assert (last_left < first_right).mean() > 0.99


def test_drawem9_is_the_default_and_other_sets_are_refused():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="synthesis draws labels of drawem9, aseg, not dkt"):
        synth.training_volume(rng, 3.0, (32, 32, 32), 6.0, labels="dkt")


def test_scheme_outputs_must_cover_its_labels_with_names_of_the_set(tmp_path):
    spec = {"name": "x", "classes": {"2": "wm", "3": "cortical_gm"}, "sides": {"left": [2, 3]},
            "outputs": {"aseg": {"2": "Cerebral-White-Matter", "3": "Cerebral-Cortex"}}}
    path = tmp_path / "x.json"
    path.write_text(json.dumps(spec))
    assert Scheme.load(path).code_outputs("aseg").tolist() == [[0, 0], [2, 41], [3, 42]]
    for outputs, message in (({"aseg": {"2": "Cerebral-White-Matter"}}, "every label"),
                             ({"aseg": {"2": "Nucleus", "3": "CSF"}}, "no label or group"),
                             ({"drawem9": {"2": "WM", "3": "cGM"}}, "DrawEM9 follows")):
        path.write_text(json.dumps({**spec, "outputs": outputs}))
        with pytest.raises(SchemeError, match=message):
            Scheme.load(path)


def test_every_code_of_the_real_asegs_gives_an_aseg_label(aseg_root):
    source = LabelMap(aseg_root / "6mo_aseg.nii.gz", FS, 6.0)
    _, labels = paint(source, 2)
    assert set(np.unique(labels).tolist()) <= set(ASEG.indices.tolist())
    assert len(set(np.unique(labels).tolist())) > 25

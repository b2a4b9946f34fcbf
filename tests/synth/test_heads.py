"""Synthetic phantoms: reproducible, nested anatomy, age-aware, oriented as the affine says."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from bids_infantseg import synth
from bids_infantseg.model.labels import DRAWEM9
from bids_infantseg.synth import fetal_atlas

SMALL = {"shape": (64, 72, 60), "voxel_size": 2.5}


def brain_ml(labels: np.ndarray, voxel_mm: float) -> float:
    return float(np.isin(labels, [2, 3, 5, 6, 7, 8, 9]).sum() * voxel_mm ** 3 / 1000.0)


@pytest.fixture(scope="module")
def newborn() -> synth.Phantom:
    return synth.phantom(0.5, seed=3, **SMALL)


def test_same_seed_same_phantom_other_seed_other(newborn):
    again = synth.phantom(0.5, seed=3, **SMALL)
    other = synth.phantom(0.5, seed=4, **SMALL)
    np.testing.assert_array_equal(newborn.labels, again.labels)
    np.testing.assert_array_equal(newborn.image, again.image)
    assert (newborn.labels != other.labels).mean() > 0.01


def test_types_and_every_drawem9_label(newborn):
    image, labels, affine = newborn
    assert image.dtype == np.float32 and labels.dtype == np.int16
    assert image.shape == labels.shape == SMALL["shape"] and affine.shape == (4, 4)
    assert set(np.unique(labels)) == set(DRAWEM9.indices.tolist())
    assert image.min() >= 0 and np.isfinite(image).all()


def test_anatomy_is_nested(newborn):
    labels = newborn.labels
    head = labels > 0
    # outside the head at the grid's corners; ventricles, deep GM and WM deep inside
    assert not head[0, 0, 0] and not head[-1, -1, -1]
    center = tuple(s // 2 for s in labels.shape)
    assert labels[center] in (3, 5, 7)
    # head tissue (4) surrounds the brain: every brain voxel is farther from air than 4 is
    depth = ndimage.distance_transform_edt(head)
    assert depth[labels == 4].mean() < depth[labels == 1].mean() < depth[labels == 3].mean()


def test_left_and_right_differ(newborn):
    labels = newborn.labels  # RAS grid centred on the head: axis 0 flips left/right
    assert (labels != labels[::-1]).mean() > 0.005


def test_brain_grows_with_age():
    vols = [brain_ml(synth.phantom(age, seed=s, **SMALL).labels, 2.5)
            for age in (0.0, 12.0) for s in (1, 2)]
    assert 250 < np.mean(vols[:2]) < 550
    assert 650 < np.mean(vols[2:]) < 1150
    assert np.mean(vols[2:]) > 1.6 * np.mean(vols[:2])


@pytest.mark.parametrize(("age", "wm_brighter"), [(0.0, True), (12.0, False)])
def test_t2_contrast_follows_age(age, wm_brighter):
    image, labels, _ = synth.phantom(age, seed=5, **SMALL)
    wm, gm = np.median(image[labels == 3]), np.median(image[labels == 2])
    csf = np.median(image[labels == 5])
    assert csf > max(wm, gm)
    assert (wm > gm) == wm_brighter


def world_centroid(labels: np.ndarray, affine: np.ndarray, index: int) -> np.ndarray:
    return (affine @ np.append(np.argwhere(labels == index).mean(axis=0), 1.0))[:3]


@pytest.mark.parametrize(("axcodes", "oblique"), [("RAS", (0, 0, 0)), ("LAS", (0, 0, 0)),
                                                  ("LPS", (0, -5, 0)), ("ASL", (12, 0, 6))])
def test_affine_orientation_is_honoured(axcodes, oblique):
    image, labels, affine = synth.phantom(6.0, seed=7, axcodes=axcodes, oblique_deg=oblique,
                                          **SMALL)
    if not any(oblique):
        assert "".join(nib.aff2axcodes(affine)) == axcodes
    # in world (RAS) coordinates the cerebellum lies behind and below the deep grey matter
    cerebellum, deep_gm = world_centroid(labels, affine, 6), world_centroid(labels, affine, 7)
    assert cerebellum[1] < deep_gm[1] - 15 and cerebellum[2] < deep_gm[2] - 10
    assert abs(cerebellum[0] - deep_gm[0]) < 8


def test_training_volume_on_model_grid():
    rng = np.random.default_rng(0)
    image, labels = synth.training_volume(rng, 3.0, (48, 48, 48), 4.0)
    assert image.shape == labels.shape == (48, 48, 48)
    assert image.dtype == np.float32 and labels.dtype == np.int16
    assert image.min() >= 0.0 and image.max() < 2.0
    assert labels.max() <= 9


@pytest.mark.parametrize("key", [11, 12, 13, 14])
def test_skull_strip_keeps_brain_and_zeroes_the_rest(key):
    shape, voxel = (48, 48, 48), 4.0
    head = synth.training_volume(np.random.default_rng(key), 6.0, shape, voxel)
    image, labels = synth.training_volume(np.random.default_rng(key), 6.0, shape, voxel,
                                          strip_probability=1.0)
    tissue = np.isin(head[1], (2, 3, 5, 6, 7, 8, 9))
    np.testing.assert_array_equal(labels[tissue], head[1][tissue])  # same head, brain kept
    np.testing.assert_array_equal(image[tissue], head[0][tissue])
    removed = (labels == 0) & (head[1] != 0)
    assert removed.sum() > 0.5 * (head[1] == 4).sum()  # most scalp, skull and face gone
    assert (image[removed] == 0).all() and (image[labels != 0] > 0).all()
    # what stays of the head is a thin rim within the margin around the brain and its CSF;
    # CSF is cut only near its outer surface (tight masks), never deep inside
    intracranial = ~np.isin(head[1], (0, 4))
    outside_mm = ndimage.distance_transform_edt(~intracranial, sampling=voxel)
    inside_mm = ndimage.distance_transform_edt(intracranial, sampling=voxel)
    assert (outside_mm[labels == 4] <= 4.0 + voxel / 2).all()
    cut_csf = (head[1] == 1) & (labels == 0)
    assert (inside_mm[cut_csf] <= 2.0 + voxel / 2).all()
    assert (labels[head[1] == 1] == 1).mean() > 0.5


def test_skull_strip_sometimes_cuts_into_the_csf():
    shape, voxel = (64, 64, 64), 3.0
    cut = []
    for key in range(12):
        head = synth.training_volume(np.random.default_rng(key), 6.0, shape, voxel)
        _, labels = synth.training_volume(np.random.default_rng(key), 6.0, shape, voxel,
                                          strip_probability=1.0)
        cut.append(((head[1] == 1) & (labels == 0)).any())
    assert 0 < sum(cut) < len(cut)


def test_atlas_source_holds_out_and_maps_labels(atlases):
    kept = synth.atlas_folders(atlases[0].parent, exclude=synth.ATLAS_HELD_OUT)
    assert len(kept) == len(atlases) - len(synth.ATLAS_HELD_OUT)
    assert not {p.name for p in kept} & set(synth.ATLAS_HELD_OUT)
    rng = np.random.default_rng(0)
    atlas = synth.FetalAtlas(atlases[0])
    _, small = synth.training_volume(rng, 0.0, (64, 64, 64), 3.0, anatomy=atlas)
    _, large = synth.training_volume(rng, 12.0, (64, 64, 64), 3.0, anatomy=atlas)
    assert set(np.unique(small)) == set(range(10))  # head shell and hippocampi added
    assert brain_ml(large, 3.0) > 1.6 * brain_ml(small, 3.0)
    assert 250 < brain_ml(small, 3.0) < 550


def _cortex_share_and_sulci(labels: np.ndarray) -> tuple[float, int]:
    """Cortex share of cortex+WM, and how many CSF islands lie inside the cerebrum."""
    mantle = np.isin(labels, (2, 3))
    filled = ndimage.binary_fill_holes(mantle | np.isin(labels, (5, 7)))
    inner_csf = (labels == 1) & ndimage.binary_erosion(filled, iterations=2)
    return float((labels == 2).sum() / mantle.sum()), int(ndimage.label(inner_csf)[1])


def test_atlas_heads_are_folded_with_an_even_ribbon(atlases, monkeypatch):
    """Scaled-up fetal atlases are smooth; the synthesis carves sulci lined with cortex of
    infant thickness (more cortex, CSF inside the cerebrum), unless the fold step is off."""
    atlas = synth.FetalAtlas([p for p in atlases if "GA21" in p.name][0])
    folded = synth.training_volume(np.random.default_rng(3), 12.0, (96, 96, 96), 2.0,
                                   anatomy=atlas)[1]
    monkeypatch.setattr(fetal_atlas, "_fold_cortex", lambda *args: None)
    smooth = synth.training_volume(np.random.default_rng(3), 12.0, (96, 96, 96), 2.0,
                                   anatomy=atlas)[1]
    share_folded, sulci_folded = _cortex_share_and_sulci(folded)
    share_smooth, sulci_smooth = _cortex_share_and_sulci(smooth)
    assert share_folded > share_smooth + 0.05
    assert sulci_folded > sulci_smooth
    # the ribbon: every cortex voxel lies within its thickness (+ a voxel) of CSF or surface
    depth = ndimage.distance_transform_edt(np.isin(folded, (2, 3, 5, 7)), sampling=2.0)
    assert depth[folded == 2].max() <= 2.8 * 1.3 + 2.0


def test_atlas_ventricles_are_shrunk_sometimes(atlases):
    atlas = synth.FetalAtlas([p for p in atlases if "GA21" in p.name][0])
    volumes = [(synth.training_volume(np.random.default_rng(k), 0.0, (64, 64, 64), 3.0,
                                      anatomy=atlas)[1] == 5).sum() for k in range(8)]
    assert max(volumes) > 1.5 * min(volumes)


@pytest.mark.parametrize("seed", [1, 2])
def test_hippocampus_lies_along_the_temporal_horn(seed, atlases):
    """Both sources put each hippocampus next to ventricular CSF (its horn), on both sides."""
    atlas = synth.FetalAtlas([p for p in atlases if "GA28" in p.name][0])
    for source in (None, atlas):
        _, labels = synth.training_volume(np.random.default_rng(seed), 3.0, (112, 112, 112),
                                          1.5, anatomy=source)
        near_csf = ndimage.binary_dilation(labels == 5, iterations=2)
        for half in (labels[:56], labels[56:]):  # axis 0 is left-right on the RAS grid
            assert (half == 9).sum() > 50
        assert (near_csf & (labels == 9)).sum() > 0.05 * (labels == 9).sum()

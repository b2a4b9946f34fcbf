"""refine: left-right class mirroring, ventricles vs CSF by connectivity, EM intensity
refinement, and which options run for a label set; small synthetic arrays."""

from __future__ import annotations

import numpy as np
import pytest

from bids_infantseg.core.refine import (
    DEFAULTS,
    RefineError,
    fluid_classes,
    mirror_classes,
    refine_em,
    refine_ventricles,
    resolve_options,
)
from bids_infantseg.model.labels import DRAWEM9, Label, LabelSet

UNK, CSF, CGM, WM, BKG, VEN, CBM, DGM, BS, HIP = range(10)  # DrawEM9 class numbers


def test_drawem9_is_not_lateralised():
    names = [lab.name for lab in DRAWEM9.labels]
    np.testing.assert_array_equal(mirror_classes(names), np.arange(len(names)))


def test_lateralised_labels_swap_with_their_mirror():
    names = ["Unknown", "Left-Hippocampus", "Right-Hippocampus", "ctx-lh-insula",
             "ctx-rh-insula", "Brain stem", "white matter RIGHT", "white matter left"]
    perm = mirror_classes(names)
    np.testing.assert_array_equal(perm, [0, 2, 1, 4, 3, 5, 7, 6])
    assert sorted(perm) == list(range(len(names)))  # a permutation: no mass lost


def test_a_lateralised_label_without_its_mirror_is_refused():
    with pytest.raises(RefineError, match="Left-Amygdala"):
        mirror_classes(["Unknown", "Left-Amygdala", "Right-Hippocampus", "Left-Hippocampus"])


def _probs(labels: np.ndarray, sure: float = 0.9) -> np.ndarray:
    """Class-first probabilities whose argmax is ``labels`` (``sure`` on it, the rest
    shared), distinct per class so a swap is visible."""
    probs = np.full((10, *labels.shape), (1 - sure) / 9, np.float32)
    np.put_along_axis(probs, labels[None].astype(np.int64), sure, axis=0)
    probs[CSF] += 0.001 * (labels != CSF)  # CSF and Ven differ where neither is the argmax
    probs /= probs.sum(axis=0)
    return probs


def _brain(shape=(40, 40, 40)) -> np.ndarray:
    """A ball of white matter under a cortex, in extra-axial CSF, in air (0)."""
    grid = np.indices(shape) - (np.array(shape)[:, None, None, None] - 1) / 2
    r = np.sqrt((grid ** 2).sum(axis=0))
    labels = np.zeros(shape, np.int16)
    labels[r < 18] = CSF
    labels[r < 15] = CGM
    labels[r < 11] = WM
    return labels


def test_enclosed_fluid_in_white_matter_becomes_ventricle():
    labels = _brain()
    labels[16:22, 16:22, 14:20] = CSF  # an atrium called CSF, deep in WM
    labels[16:22, 16:22, 20:24] = VEN  # joined to the ventricle the network found
    probs = _probs(labels)
    out, moved = refine_ventricles(probs, fluid_classes(DRAWEM9))
    result = out.argmax(axis=0)
    assert (result[16:22, 16:22, 14:24] == VEN).all()
    assert moved == {"ventricles_to_csf": 0, "csf_to_ventricles": 6 * 6 * 6}
    assert ((result == CSF) == ((labels == CSF) & ~((result == VEN) & (labels == CSF)))).all()
    assert (result[labels == CGM] == CGM).all()
    # the two classes' probabilities are swapped there, the others untouched
    inside = (slice(None), slice(16, 22), slice(16, 22), slice(14, 20))
    np.testing.assert_array_equal(out[CSF][inside[1:]], probs[VEN][inside[1:]])
    np.testing.assert_array_equal(out[VEN][inside[1:]], probs[CSF][inside[1:]])
    np.testing.assert_array_equal(np.delete(out, [CSF, VEN], axis=0),
                                  np.delete(probs, [CSF, VEN], axis=0))
    np.testing.assert_allclose(out.sum(axis=0), 1.0, atol=1e-6)


def test_fluid_reaching_the_outside_or_in_cortex_stays_csf():
    labels = _brain()
    labels[19:21, 19:21, 2:30] = CSF  # a deep sulcus: CSF from the surface into the WM
    labels[6:8, 19:21, 19:21] = CSF  # an enclosed pocket in the cortex
    assert (labels[5, 19:21, 19:21] == CGM).all() and (labels[8, 19:21, 19:21] == CGM).all()
    out, moved = refine_ventricles(_probs(labels), fluid_classes(DRAWEM9))
    assert moved["csf_to_ventricles"] == 0
    np.testing.assert_array_equal(out.argmax(axis=0), labels)


def test_fluid_cut_by_the_grid_edge_stays_csf():
    labels = _brain()
    labels[12:15, 18:22, 18:22] = CSF  # in white matter, where the grid will cut it
    labels = labels[12:]  # the grid's edge passes through the white matter
    _, moved = refine_ventricles(_probs(labels), fluid_classes(DRAWEM9))
    assert moved["csf_to_ventricles"] == 0


def test_fluid_bordered_by_cerebellum_stays_csf():
    labels = _brain()
    labels[14:26, 14:26, 14:26] = CBM
    labels[18:22, 18:22, 18:22] = CSF  # a fourth-ventricle-like pocket, not deep tissue
    _, moved = refine_ventricles(_probs(labels), fluid_classes(DRAWEM9))
    assert moved["csf_to_ventricles"] == 0


def test_ventricle_on_the_surface_becomes_csf():
    labels = _brain()
    labels[0:3, 17:23, 17:23] = VEN  # in the extra-axial CSF, touching the air
    labels[17:23, 17:23, 17:23] = VEN  # a true ventricle, deep in WM
    out, moved = refine_ventricles(_probs(labels), fluid_classes(DRAWEM9))
    result = out.argmax(axis=0)
    assert (result[0:3, 17:23, 17:23] == CSF).all()
    assert (result[17:23, 17:23, 17:23] == VEN).all()
    assert moved["ventricles_to_csf"] == 3 * 6 * 6


def test_fluid_in_white_matter_away_from_the_ventricles_stays_csf():
    """Newborn white matter is as bright as CSF: an isolated "CSF" spot in it is no ventricle."""
    labels = _brain()
    labels[16:22, 16:22, 14:20] = CSF
    _, moved = refine_ventricles(_probs(labels), fluid_classes(DRAWEM9))
    assert moved["csf_to_ventricles"] == 0


def test_ventricles_walled_by_cortex_and_touching_the_outside_stay():
    """The network may call the ventricles' walls cortex; one face on the outside does not
    make the ventricular system extra-axial CSF."""
    labels = _brain()
    labels[12:28, 12:28, 12:28] = CGM
    labels[14:26, 14:26, 14:26] = VEN
    labels[19, 19, 2:14] = VEN  # a thin channel out to the air
    labels[19, 19, 0:2] = UNK
    out, moved = refine_ventricles(_probs(labels), fluid_classes(DRAWEM9))
    assert moved["ventricles_to_csf"] == 0
    np.testing.assert_array_equal(out.argmax(axis=0), labels)


def test_label_sets_without_csf_or_ventricles_are_refused():
    labels = LabelSet("two", (Label(0, "Unknown", "UNK", "#000000"),
                              Label(1, "Brain", "BR", "#ffffff")))
    with pytest.raises(RefineError, match="CSF, Ven, cGM"):
        fluid_classes(labels)
    classes = fluid_classes(DRAWEM9)
    assert (classes.csf, classes.ventricles, classes.cortex) == (CSF, VEN, CGM)
    assert classes.outside == (UNK, BKG)
    assert set(classes.deep) == {WM, VEN, DGM, HIP}


def _two_tissues(seed: int = 0):
    """A brain of grey matter (dark) and white matter (bright) whose network probabilities
    are undecided (0.5/0.5) in a band: the intensities must decide."""
    rng = np.random.default_rng(seed)
    shape = (30, 30, 30)
    truth = np.zeros(shape, np.int16)
    truth[5:25, 5:25, 5:25] = CGM
    truth[5:25, 5:25, 15:25] = WM
    image = np.where(truth == CGM, 0.3, np.where(truth == WM, 0.7, 0.0)).astype(np.float32)
    image[truth > 0] += rng.normal(0, 0.05, (truth > 0).sum()).astype(np.float32)
    probs = np.zeros((10, *shape), np.float32)
    probs[UNK] = truth == 0
    probs[CGM] = truth == CGM
    probs[WM] = truth == WM
    band = (slice(5, 25), slice(5, 25), slice(10, 20))
    probs[(CGM, *band)] = probs[(WM, *band)] = 0.5
    return image, probs, truth, band


def test_em_decides_by_intensity_where_the_network_is_unsure():
    image, probs, truth, band = _two_tissues()
    brain = [k for k in range(10) if k not in (UNK, BKG)]
    out, fit = refine_em(image, probs, brain, iterations=5)
    assert (probs.argmax(axis=0)[band] == CGM).mean() == 1.0  # ties go to the first class
    agreement = (out.argmax(axis=0)[band] == truth[band]).mean()
    assert agreement > 0.99, agreement
    refined = dict(zip(brain, fit.refined, strict=True))
    means = dict(zip(brain, fit.mean, strict=True))
    assert refined[CGM] and refined[WM] and not refined[VEN]
    assert means[CGM] == pytest.approx(0.3, abs=0.02)
    assert means[WM] == pytest.approx(0.7, abs=0.02)
    np.testing.assert_allclose(out.sum(axis=0), probs.sum(axis=0), atol=1e-5)
    np.testing.assert_array_equal(out[UNK], probs[UNK])  # the brain's outline is kept


def test_em_keeps_confident_priors_and_small_classes():
    image, probs, truth, _ = _two_tissues()
    probs[CGM], probs[WM] = truth == CGM, truth == WM  # the network is sure everywhere
    image[6, 6, 6] = 0.7  # one bright voxel inside grey matter
    probs[:, 6:8, 6:8, 6] = 0.0
    probs[HIP, 6:8, 6:8, 6] = 1.0  # four voxels of a small class: not refitted
    brain = [k for k in range(10) if k not in (UNK, BKG)]
    out, fit = refine_em(image, probs, brain, prior_weight=1.0)
    assert not dict(zip(brain, fit.refined, strict=True))[HIP]
    np.testing.assert_array_equal(out[HIP], probs[HIP])
    np.testing.assert_array_equal(out.argmax(axis=0), probs.argmax(axis=0))


def test_em_without_iterations_changes_nothing():
    image, probs, _, _ = _two_tissues()
    out, fit = refine_em(image, probs, [CGM, WM], iterations=0)
    np.testing.assert_array_equal(out, probs)
    assert fit.iterations == 0


def test_options_default_where_the_labels_allow_and_refuse_where_asked():
    assert resolve_options(DRAWEM9) == DEFAULTS
    assert resolve_options(DRAWEM9, tta_flip=True, refine_em=False) == {
        "tta_flip": True, "refine_em": False, "refine_ventricles": DEFAULTS["refine_ventricles"]}
    lateral = LabelSet("lat", (Label(0, "Unknown", "UNK", "#000000"),
                               Label(1, "Left-Thing", "LT", "#ffffff")))
    assert resolve_options(lateral)["refine_ventricles"] is False  # left out, not refused
    with pytest.raises(RefineError, match="ventricles"):
        resolve_options(lateral, refine_ventricles=True)
    with pytest.raises(RefineError, match="mirror"):
        resolve_options(lateral, tta_flip=True)
    with pytest.raises(RefineError, match="brain labels"):
        resolve_options(lateral, refine_em=True)


def test_in_place_refinements_change_the_given_array_and_give_the_same_result():
    image, probs, _, _ = _two_tissues()
    brain = [k for k in range(10) if k not in (UNK, BKG)]
    copied, _ = refine_em(image, probs, brain)
    given = probs.copy()
    same, _ = refine_em(image, given, brain, inplace=True)
    assert same is given or np.shares_memory(same, given)
    np.testing.assert_array_equal(same, copied)
    labels = _brain()
    labels[16:22, 16:22, 14:20] = CSF
    labels[16:22, 16:22, 20:24] = VEN
    fluid = _probs(labels)
    copied, _ = refine_ventricles(fluid, fluid_classes(DRAWEM9))
    same, moved = refine_ventricles(fluid, fluid_classes(DRAWEM9), inplace=True)
    assert same is fluid and moved["csf_to_ventricles"] > 0
    np.testing.assert_array_equal(same, copied)

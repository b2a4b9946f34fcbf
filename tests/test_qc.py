"""QC metrics on plain arrays, and the MC-dropout passes they get their uncertainty from."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import ndimage

from bids_infantseg import qc
from bids_infantseg.inference import predict, predict_with_qc
from bids_infantseg.model.card import load_model, save_model
from bids_infantseg.model.labels import DRAWEM9
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
    assert qc.brain_volume_bounds(None) is None
    assert qc.volume_check(450, None)[0] == "no age"
    assert qc.brain_volume_bounds(53).extrapolated is False  # 12 months in weeks is 52.1
    assert qc.brain_volume_bounds(80).extrapolated is True


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


def test_summary_flags_views_and_volume():
    volumes = pd.DataFrame({"index": [lab.index for lab in DRAWEM9.labels],
                            "volume_mm3": [0, 50e3, 200e3, 200e3, 0, 10e3, 30e3, 30e3, 5e3, 5e3]})
    table = qc.label_table(volumes, DRAWEM9, agreement=dict.fromkeys(range(10), 0.5),
                           pieces=dict.fromkeys(range(10), (1, 1.0)), uncertain=None)
    summary = qc.summary(table, DRAWEM9, age_weeks=1.0, view_pairs={"a-b": 0.5}, mc_samples=0)
    assert summary["brain_volume_ml"] == pytest.approx(470)
    assert summary["brain_volume_status"] == "ok"
    assert set(summary["flags"]) == {"views"}
    assert summary["mc_entropy_mean"] is None


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

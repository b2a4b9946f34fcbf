"""train.validation: the protocol's cases, its one score's formula, its cache and the
trainer's (network, card) form (docs/validation.md)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import ndimage

from bids_infantseg.model.card import Model, ModelCard, load_model
from bids_infantseg.model.labels import BUILTIN
from bids_infantseg.model.quicknat import QuickNAT, QuickNATConfig
from bids_infantseg.train import validation
from bids_infantseg.train.validation import (
    COLUMNS,
    TISSUES,
    Protocol,
    ProtocolData,
    ProtocolError,
    agreement,
    band_of,
    ceiling_agreement,
    components,
    selection_score,
    template_checks,
)
from tests.model_factory import make_tiny_model, tiny_card
from tests.train.protocol_data import write_protocol_data


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    return write_protocol_data(tmp_path_factory.mktemp("protocol-data"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return load_model(make_tiny_model(tmp_path_factory.mktemp("model")))


def test_agreement_is_symmetric_on_a_log_scale():
    ratios = np.array([1.0, 2.0, 0.5, 4.0, 0.25, 10.0, 0.0, np.nan])
    np.testing.assert_allclose(agreement(ratios), [1, 0.5, 0.5, 0, 0, 0, 0, np.nan])
    np.testing.assert_allclose(ceiling_agreement(np.array([0.0, 5.0, 10.0, 20.0, 80.0])),
                               [1, 1, 0.5, 0, 0])


@pytest.mark.parametrize(("age", "band"), [(0, "0-3"), (3, "0-3"), (4, "4-8"), (8, "4-8"),
                                           (9, "9-12"), (12, "9-12")])
def test_bands(age, band):
    assert band_of(age) == band


def _rows(source, case, band, values):
    """Table rows of DrawEM9 tissues: ``values`` maps a tissue to (dice, pred_ml, ref_ml)."""
    return [dict(source=source, case=case, band=band, age=0.0, label_set="drawem9",
                 structure=t, dice=d, pred_ml=p, ref_ml=r, ratio=p / r if r else np.nan)
            for t, (d, p, r) in values.items()]


def _table():
    """Band 0-3: synthetic Dice 0.5, Hip 2x; every template check right; atlas Dice 0.6 with
    right volumes. Band 4-8: synthetic Dice 0.4, Hip 0.25x; template 4x and 20 mL cerebellum.
    Band 9-12: nothing."""
    rows = _rows("synthetic", "a", "0-3", {t: (0.5, 20.0 if t == "Hip" else 1, 10.0 if t == "Hip"
                                               else 1) for t in TISSUES})
    rows += _rows("template", "m0", "0-3", {**{t: (np.nan, 7.0, 7.0) for t in
                                               validation.TEMPLATE_CHECKS},
                                            "Cbm": (np.nan, 1.0, np.nan),
                                            "CSF": (np.nan, 99.0, np.nan)})
    rows += _rows("atlas", "ga", "0-3", {**{t: (0.6, 3.0, 3.0) for t in ("CSF", "cGM", "WM",
                                                                        "Ven")},
                                         "dGM": (0.1, 3.0, 3.0), "Cbm": (0.0, 1.0, 3.0)})
    rows += _rows("synthetic", "b", "4-8", {t: (0.4, 1.0 if t == "Hip" else 2, 4.0 if t == "Hip"
                                                else 2) for t in TISSUES})
    rows += _rows("template", "m6", "4-8", {**{t: (np.nan, 40.0, 10.0) for t in
                                               validation.TEMPLATE_CHECKS},
                                            "Cbm": (np.nan, 20.0, np.nan)})
    return pd.DataFrame(rows, columns=COLUMNS)


def test_score_formula_and_weights():
    parts = components(_table())
    assert parts.loc["0-3"].to_dict() == pytest.approx(
        {"syn_dice": 0.5, "syn_hip": 0.5, "template": 1.0, "atlas": 0.8,
         "band_score": 0.35 * 0.5 + 0.15 * 0.5 + 0.25 * 1.0 + 0.25 * 0.8})
    # no atlas in 4-8: the other weights are renormalised over 0.75
    assert parts.loc["4-8", "band_score"] == pytest.approx(0.35 * 0.4 / 0.75)
    assert np.isnan(parts.loc["9-12", "band_score"])
    assert selection_score(_table()) == pytest.approx((0.7 + 0.35 * 0.4 / 0.75) / 2)


def test_atlas_hindbrain_and_deep_grey_matter_are_not_scored():
    table = _table()
    before = selection_score(table)
    atlas = table.source == "atlas"
    table.loc[atlas & table.structure.isin(["dGM", "Cbm"]), "dice"] = 1.0
    assert selection_score(table) == before
    table.loc[atlas & (table.structure == "cGM"), "dice"] = 1.0
    assert selection_score(table) > before


def test_template_checks_pass_or_fail():
    checks = template_checks(_table()).set_index(["case", "structure"]).passes
    assert checks.loc["m0"].all() and len(checks.loc["m0"]) == 6
    assert not checks.loc["m6"].any()


def test_cases_follow_the_held_out_lists_and_age_window(config):
    data = ProtocolData.from_config(config)
    assert [m.path.name for m in data.heldout_asegs] == ["2mo_aseg.nii.gz"]
    assert [(c[0], c[2]) for c in data.synthetic_cases(2)] == [
        ("2mo@0m#0", 0.0), ("2mo@0m#1", 0.0), ("2mo@6m#0", 6.0), ("2mo@6m#1", 6.0)]
    assert [p.name for p in data.atlases] == ["fetal_SB_atlas_GA23_notoperated"]
    # every configured map is a reference for the templates, held out or not
    assert data.nearest_aseg(0).name == "1mo_aseg.nii.gz"
    assert data.nearest_aseg(12).name == "2mo_aseg.nii.gz"


def test_missing_templates_are_one_clear_error(tmp_path):
    config = write_protocol_data(tmp_path, templates=False)
    with pytest.raises(ProtocolError, match="Template-Month0-T2w.nii.gz"):
        ProtocolData.from_config(config)


def test_score_is_deterministic_and_volumes_are_cached(config, tiny, tmp_path, monkeypatch):
    protocol = Protocol.from_config(config, tmp_path / "cache")
    score, table = protocol(tiny)
    assert 0.0 <= score <= 1.0
    assert set(table.band) == {"0-3", "4-8", "9-12"}
    assert set(table.source) == {"synthetic", "atlas", "template"}
    assert set(table.label_set) == {"drawem9"}
    synthetic = table[table.source == "synthetic"]
    assert synthetic.ref_ml.gt(0).any() and synthetic.dice.notna().any()

    def no_drawing(*args, **kwargs):
        raise AssertionError("a cached volume was drawn again")

    monkeypatch.setattr(validation, "draw_labelled", no_drawing)
    monkeypatch.setattr(validation, "_conform_image", no_drawing)
    again, table_again = Protocol.from_config(config, tmp_path / "cache")(tiny)
    assert again == score
    pd.testing.assert_frame_equal(table, table_again)


def test_trainer_network_and_card(config, tiny, tmp_path):
    """A (network, card) pair scores as the saved model does; the network's mode is kept."""
    protocol = Protocol.from_config(config, tmp_path / "cache")
    net = tiny.nets["axial"]
    card = tiny_card(views={"axial": 1.0})
    net.train()
    score, _ = protocol((net, card))
    assert net.training
    model_score, _ = protocol(Model(card, {"axial": net.eval()}, tiny.path, ""))
    assert score == model_score


def test_aseg_model_is_scored_in_tissues_and_aseg_structures(config, tmp_path):
    aseg = BUILTIN["aseg"]
    card = ModelCard(name="tiny-aseg", version="0.0.1",
                     architecture=QuickNATConfig(num_classes=len(aseg), num_filters=4,
                                                 dropout=0.0),
                     labels=aseg, voxel_size_mm=6.0, grid_shape=(32, 32, 32),
                     views={"axial": 1.0, "coronal": 1.0})
    torch.manual_seed(0)
    net = QuickNAT(card.architecture).eval()
    score, table = Protocol.from_config(config, tmp_path / "cache", em=False)((net, card))
    assert np.isfinite(score)
    assert set(table.label_set) == {"drawem9", "aseg"}
    structures = set(table[table.label_set == "aseg"].structure)
    assert {"Tha", "Hip", "Ctx", "WM", "BS"} <= structures
    assert not any(s.startswith(("L-", "R-")) for s in structures)


def test_atlas_is_scaled_to_a_newborn_brain_and_aligned_with_its_labels(config):
    folder = ProtocolData.from_config(config).atlases[0]
    card = tiny_card(grid=32, voxel_size=4.0)
    conformed = validation._conform_atlas(folder, card)
    labelled = conformed["drawem9"] > 0
    volume_ml = labelled.sum() * card.voxel_size_mm ** 3 / 1000.0
    assert volume_ml == pytest.approx(validation.ATLAS_ML, rel=0.1)
    # the image's signal lies on the labels: the same grid, the same scaling
    assert (conformed["image"][labelled] > 0).mean() > 0.95
    # (trilinear image, nearest-neighbour labels: the image may reach one voxel further)
    assert (conformed["image"][~ndimage.binary_dilation(labelled, np.ones((3, 3, 3)))] == 0).all()


def test_t2_contrast_means_fluid_brightest():
    labels = np.repeat(np.array([1, 5, 2, 3, 7, 0]), 10)
    t2 = np.repeat(np.array([0.9, 0.95, 0.5, 0.6, 0.4, 0.0]), 10)
    assert validation.t2_contrast(t2, labels)
    shuffled = np.repeat(np.array([0.3, 0.1, 0.8, 0.6, 0.4, 0.0]), 10)  # a random draw
    assert not validation.t2_contrast(shuffled, labels)
    assert not validation.t2_contrast(t2, np.where(np.isin(labels, (1, 5)), 2, labels))


def test_synthetic_heads_are_redrawn_until_t2(config, tiny, monkeypatch):
    """A draw without T2 contrast is replaced by the next attempt's seed."""
    anatomy = ProtocolData.from_config(config).heldout_asegs[0]
    seen = []
    real = validation.t2_contrast

    def first_rejected(image, drawem9):
        seen.append(image.sum())
        return len(seen) > 1 and real(image, drawem9)

    monkeypatch.setattr(validation, "t2_contrast", first_rejected)
    drawn = validation._draw_t2_head(tiny.card, anatomy, 0.0, 0)
    assert len(seen) >= 2 and seen[0] != seen[1]
    assert drawn["image"].sum() == seen[-1]

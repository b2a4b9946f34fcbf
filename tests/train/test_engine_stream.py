"""The training engine on a synthetic stream (the starter's data source), with a tiny model
and tiny synthetic heads: learns, repeats, resumes, stops within a time budget."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bids_infantseg.core.inference import predict
from bids_infantseg.model.card import ModelCard, load_model, save_model
from bids_infantseg.model.labels import DRAWEM9
from bids_infantseg.model.quicknat import QuickNATConfig
from bids_infantseg.synth import Procedural
from bids_infantseg.train.batches import SyntheticStream
from bids_infantseg.train.checkpoint import CHECKPOINT_STATE, has_checkpoint
from bids_infantseg.train.data import SliceSampler, SynthSource, draw_volume
from bids_infantseg.train.engine import DONE_FILE, Recipe, Runtime
from bids_infantseg.train.evaluate import dice_per_label, evaluate_synthetic
from bids_infantseg.train.starter import Trained, from_checkpoints, starter_units, train_nets


def tiny_card(views=("axial", "coronal")) -> ModelCard:
    return ModelCard("tiny-train", "0.0.1", QuickNATConfig(len(DRAWEM9), num_filters=6,
                                                           dropout=0.0),
                     DRAWEM9, 6.0, (32, 32, 32), dict.fromkeys(views, 1.0))


def stream_recipe(epochs=2, steps=6, **kwargs) -> Recipe:
    return Recipe(0, epochs, 5e-3, batch_size=4, augment=False, seed=1, steps_per_epoch=steps,
                  **kwargs)


def run(tmp_path, epochs=2, steps=6, shared=False, **kwargs) -> tuple[ModelCard, Trained]:
    card = tiny_card()
    sampler = SliceSampler(card, SynthSource(), seed=1, pool_size=2)
    trained = train_nets(card, starter_units(tmp_path / "work", card, shared), sampler,
                         stream_recipe(epochs, steps, **kwargs), runtime=Runtime(progress=False))
    save_model(tmp_path / "model", card, trained.nets)
    return card, trained


def weights(nets) -> dict[str, np.ndarray]:
    return {f"{v}.{k}": t.numpy().copy() for v, net in nets.items()
            for k, t in net.state_dict().items()}


def epochs(trained: Trained, unit: str) -> list[int]:
    return [h["epoch"] for h in trained.results[unit].history]


def test_sampler_batches(tmp_path):
    card = tiny_card()
    images, targets = SliceSampler(card, SynthSource(), seed=0, pool_size=1).batch("axial", 3)
    assert images.shape == (3, 1, 32, 32) and targets.shape == (3, 32, 32)
    assert images.dtype == torch.float32 and targets.dtype == torch.int64
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    assert int(targets.max()) < len(DRAWEM9) and (targets > 0).any()


def test_loss_decreases_and_model_is_saved(tmp_path):
    card, trained = run(tmp_path, epochs=3, steps=12)
    histories = [r.history for r in trained.results.values()]
    losses = [np.mean([h[i]["loss"] for h in histories]) for i in range(3)]
    assert losses[-1] < losses[0]
    for record in histories[0]:  # one view per network: a step is one batch
        assert record["slices"] == 12 * 4 and record["seconds"] > 0
        assert record["data_wait_seconds"] > 0  # each epoch restarts the stream: draws first
    model = load_model(tmp_path / "model")
    assert set(model.nets) == set(card.views)
    metrics = evaluate_synthetic(model, {"procedural": (Procedural(),)}, ages=(6.0,))
    assert set(metrics["heldout_synthetic_dice"]["procedural"]["6_months"]) >= {"WM",
                                                                                "brain_mean"}
    assert metrics["volumes_per_age"] == {"procedural": 1}


def test_same_seed_same_weights(tmp_path):
    _, first = run(tmp_path / "a", epochs=1, steps=3)
    _, second = run(tmp_path / "b", epochs=1, steps=3)
    a, b = weights(first.nets), weights(second.nets)
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_resume_continues_where_it_stopped(tmp_path):
    _, straight = run(tmp_path / "straight", epochs=2, steps=3)
    run(tmp_path / "resumed", epochs=1, steps=3)
    _, resumed = run(tmp_path / "resumed", epochs=2, steps=3)
    assert epochs(resumed, "axial") == epochs(resumed, "coronal") == [1, 2]
    a, b = weights(straight.nets), weights(resumed.nets)
    assert all(np.allclose(a[k], b[k], atol=1e-6) for k in a)
    shipped, recipe = from_checkpoints(tiny_card(), starter_units(tmp_path / "resumed" / "work",
                                                                  tiny_card(), shared=False))
    assert set(shipped.nets) == {"axial", "coronal"} and recipe.epochs_all == 2
    assert shipped.summary()["epochs_done"] == 2 and not shipped.summary()["stopped_early"]


def test_time_budget_stops_with_a_checkpoint_and_a_usable_model(tmp_path):
    card, trained = run(tmp_path, epochs=50, steps=3, shared=True, time_budget_s=2.0)
    done = trained.summary()["epochs_done"]
    assert trained.summary()["stopped_early"] and 0 < done < 50
    unit = tmp_path / "work" / "shared"
    assert has_checkpoint(unit) and not (unit / DONE_FILE).exists()
    assert json.loads((unit / CHECKPOINT_STATE).read_text())["epochs_done"] == done
    model = load_model(tmp_path / "model")
    image, _ = draw_volume(card, SynthSource(), np.random.default_rng(5), age_months=6.0)
    probs = predict(model, image)
    assert probs.shape == (len(DRAWEM9), 32, 32, 32) and np.isfinite(probs).all()
    assert np.allclose(probs.sum(axis=0), 1.0, atol=1e-4)
    # the same command with time left continues from the checkpoint
    _, more = run(tmp_path, epochs=done + 1, steps=3, shared=True)
    assert epochs(more, "shared") == list(range(1, done + 2)) and not more.results[
        "shared"].stopped_early


def test_an_epoch_that_overruns_the_budget_stops_midway_and_saves(tmp_path):
    _, trained = run(tmp_path, epochs=1, steps=1000, shared=True, time_budget_s=1.0)
    (record,) = trained.results["shared"].history
    assert trained.results["shared"].stopped_early and record["partial"]
    assert 0 < record["slices"] < 1000 * 2 * 4
    assert has_checkpoint(tmp_path / "work" / "shared")


def test_shared_views_train_one_network_and_resume(tmp_path):
    run(tmp_path, epochs=1, steps=2, shared=True)
    _, trained = run(tmp_path, epochs=2, steps=2, shared=True)
    assert trained.nets["axial"] is trained.nets["coronal"]
    assert epochs(trained, "shared") == [1, 2]
    assert trained.results["shared"].history[0]["slices"] == 2 * 2 * 4  # a batch per view
    shipped, _ = from_checkpoints(tiny_card(), starter_units(tmp_path / "work", tiny_card(),
                                                             shared=True))
    assert shipped.nets["axial"] is shipped.nets["coronal"]
    model = load_model(tmp_path / "model")
    a, c = model.nets["axial"].state_dict(), model.nets["coronal"].state_dict()
    assert all(torch.equal(a[k], c[k]) for k in a)


def test_a_stream_takes_steps_and_no_cached_slice_settings():
    sampler = SliceSampler(tiny_card(), SynthSource(), pool_size=1)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        SyntheticStream(sampler, ("axial",), Recipe(0, 1, 1e-3, augment=False))
    with pytest.raises(ValueError, match="augment"):
        SyntheticStream(sampler, ("axial",), Recipe(0, 1, 1e-3, steps_per_epoch=2))


def test_dice_per_label():
    card = tiny_card()
    truth = np.array([0, 1, 1, 2, 3])
    scores = dice_per_label(np.array([0, 1, 2, 2, 3]), truth, card)
    assert scores["UNK"] == 1.0 and scores["CSF"] == pytest.approx(2 / 3)
    assert np.isnan(scores["Hip"])


def test_workers_draw_the_same_stream_and_report_waiting():
    """Volumes have their own seeds: drawing them ahead in a worker changes nothing but time."""
    card = tiny_card()
    here = SliceSampler(card, SynthSource(), seed=4, pool_size=2)
    ahead = SliceSampler(card, SynthSource(), seed=4, pool_size=2, workers=1)
    try:
        for view in ("axial", "coronal", "axial"):
            a, b = here.batch(view, 2), ahead.batch(view, 2)
            assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        assert here.wait_seconds > 0 and ahead.wait_seconds > 0
    finally:
        ahead.close()

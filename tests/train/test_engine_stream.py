"""The training loop on a tiny model and tiny synthetic heads: learns, repeats, resumes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bids_infantseg.model.card import ModelCard, load_model
from bids_infantseg.model.labels import DRAWEM9
from bids_infantseg.model.quicknat import QuickNATConfig
from bids_infantseg.synth import Procedural
from bids_infantseg.train.data import SliceSampler, SynthSource
from bids_infantseg.train.evaluate import dice_per_label, evaluate_synthetic
from bids_infantseg.train.loop import TrainConfig, nets_from_checkpoint, train


def tiny_card(views=("axial", "coronal")) -> ModelCard:
    return ModelCard("tiny-train", "0.0.1", QuickNATConfig(len(DRAWEM9), num_filters=6,
                                                           dropout=0.0),
                     DRAWEM9, 6.0, (32, 32, 32), dict.fromkeys(views, 1.0))


def run(tmp_path, epochs=2, steps=6, **kwargs):
    card = tiny_card()
    data = SliceSampler(card, SynthSource(), seed=1, pool_size=2)
    config = TrainConfig(epochs=epochs, steps_per_epoch=steps, batch_size=4,
                         learning_rate=5e-3, seed=1, **kwargs)
    return card, train(card, data, config, tmp_path / "work", tmp_path / "model",
                       progress=False)


def weights(nets) -> dict[str, np.ndarray]:
    return {f"{v}.{k}": t.numpy().copy() for v, net in nets.items()
            for k, t in net.state_dict().items()}


def test_sampler_batches(tmp_path):
    card = tiny_card()
    images, targets = SliceSampler(card, SynthSource(), seed=0, pool_size=1).batch("axial", 3)
    assert images.shape == (3, 1, 32, 32) and targets.shape == (3, 32, 32)
    assert images.dtype == torch.float32 and targets.dtype == torch.int64
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    assert int(targets.max()) < len(DRAWEM9) and (targets > 0).any()


def test_loss_decreases_and_model_is_saved(tmp_path):
    card, result = run(tmp_path, epochs=3, steps=12)
    losses = [np.mean(list(h["loss"].values())) for h in result.history]
    assert losses[-1] < losses[0]
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
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    a, b = weights(straight.nets), weights(resumed.nets)
    assert all(np.allclose(a[k], b[k], atol=1e-6) for k in a)
    nets, state = nets_from_checkpoint(tmp_path / "resumed" / "work", tiny_card())
    assert state["epochs_done"] == 2 and set(nets) == {"axial", "coronal"}


def test_time_budget_stops_early_and_still_saves(tmp_path):
    _, result = run(tmp_path, epochs=50, steps=5, time_budget_s=3.0)
    assert result.stopped_early and result.epochs_done < 50
    assert (tmp_path / "model" / "model.safetensors").is_file()


def test_shared_views_train_one_network_and_resume(tmp_path):
    run(tmp_path, epochs=1, steps=2, shared_views=True)
    _, result = run(tmp_path, epochs=2, steps=2, shared_views=True)
    assert result.nets["axial"] is result.nets["coronal"]
    assert [h["epoch"] for h in result.history] == [1, 2]
    nets, _ = nets_from_checkpoint(tmp_path / "work", tiny_card())
    assert nets["axial"] is nets["coronal"]
    model = load_model(tmp_path / "model")
    a, c = model.nets["axial"].state_dict(), model.nets["coronal"].state_dict()
    assert all(torch.equal(a[k], c[k]) for k in a)


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

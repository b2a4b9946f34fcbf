"""Starter warm start: training begins from the given model's weights, never silently from
random ones or from another architecture."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from bids_infantseg.model.card import ModelError, load_model
from bids_infantseg.train.data import SliceSampler, SynthSource
from bids_infantseg.train.loop import TrainConfig, train
from bids_infantseg.train.starter import warm_start
from tests.model_factory import make_tiny_model, tiny_card


@pytest.mark.parametrize("shared", [True, False])
def test_training_starts_from_the_init_weights(tmp_path, shared):
    init = make_tiny_model(tmp_path / "init", seed=3)
    card = tiny_card()
    data = SliceSampler(card, SynthSource(), seed=0, pool_size=1)
    # learning rate 0: whatever training does, the weights stay those it started from
    config = TrainConfig(epochs=1, steps_per_epoch=1, batch_size=2, learning_rate=0.0,
                         shared_views=shared)
    provenance = warm_start(tmp_path / "work", str(init), card, config, data)
    assert provenance["Version"] == card.version and provenance["SHA256"]
    result = train(card, data, config, tmp_path / "work", progress=False)
    init_nets = load_model(init).nets  # the tiny model has a different network per view
    for view, net in result.nets.items():  # (batch-norm statistics do move in training mode)
        expected = dict(init_nets["axial" if shared else view].named_parameters())
        for key, value in net.named_parameters():
            assert torch.equal(value, expected[key]), (view, key)
    assert result.history[0]["epoch"] == 1  # the warm start itself is no epoch


def test_existing_checkpoint_is_resumed_not_overwritten(tmp_path):
    card = tiny_card()
    data = SliceSampler(card, SynthSource(), seed=0, pool_size=1)
    config = TrainConfig(epochs=1, steps_per_epoch=1, batch_size=2, learning_rate=0.0)
    warm_start(tmp_path / "work", str(make_tiny_model(tmp_path / "a", seed=1)), card, config,
               data)
    before = (tmp_path / "work" / "checkpoint.safetensors").read_bytes()
    warm_start(tmp_path / "work", str(make_tiny_model(tmp_path / "b", seed=2)), card, config,
               data)
    assert (tmp_path / "work" / "checkpoint.safetensors").read_bytes() == before


def test_other_architecture_is_refused(tmp_path):
    init = make_tiny_model(tmp_path / "init")
    card = tiny_card()
    wider = dataclasses.replace(card, architecture=dataclasses.replace(card.architecture,
                                                                       num_filters=8))
    data = SliceSampler(wider, SynthSource(), seed=0, pool_size=1)
    with pytest.raises(ModelError, match="architecture"):
        warm_start(tmp_path / "work", str(init), wider, TrainConfig(), data)
    assert not (tmp_path / "work").exists()

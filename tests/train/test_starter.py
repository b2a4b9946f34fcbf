"""The starter: a warm start begins from the given model's weights (never silently from
random ones or from another architecture; from another label set only the classifier is
new), the recipe comes from the config file with flags overriding it, and one command
trains, scores and ships a model, DrawEM9 or aseg."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from bids_infantseg.model.card import ModelError, load_model
from bids_infantseg.model.labels import BUILTIN, DRAWEM9
from bids_infantseg.train.data import SliceSampler, SynthSource
from bids_infantseg.train.engine import Recipe, Runtime, initial_net, transfers
from bids_infantseg.train.starter import (
    main,
    parse_args,
    starter_card,
    starter_recipe,
    starter_units,
    train_nets,
    warm_start,
)
from tests.model_factory import make_tiny_model, tiny_card

REPO_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "drawem9-synth-starter.json"


def train(work, card, init, *, shared=True, epochs=1):
    """Learning rate 0: whatever training does, the weights stay those it started from."""
    sampler = SliceSampler(card, SynthSource(), seed=0, pool_size=1)
    recipe = Recipe(0, epochs, 0.0, batch_size=2, augment=False, steps_per_epoch=1)
    return train_nets(card, starter_units(work, card, shared), sampler, recipe, init=init,
                      runtime=Runtime(progress=False))


def parameters(net) -> dict[str, torch.Tensor]:
    return dict(net.named_parameters())


@pytest.mark.parametrize("shared", [True, False])
def test_training_starts_from_the_init_weights(tmp_path, shared):
    init = make_tiny_model(tmp_path / "init", seed=3)
    card = tiny_card()
    model, provenance = warm_start(str(init), card)
    assert provenance["Version"] == card.version and provenance["SHA256"]
    trained = train(tmp_path / "work", card, model, shared=shared)
    init_nets = load_model(init).nets  # the tiny model has a different network per view
    for view, net in trained.nets.items():  # (batch-norm statistics do move in training mode)
        expected = parameters(init_nets["axial" if shared else view])
        for key, value in net.named_parameters():
            assert torch.equal(value, expected[key]), (view, key)
    for result in trained.results.values():
        assert result.history[0]["epoch"] == 1  # the warm start itself is no epoch


def test_existing_checkpoint_is_resumed_not_overwritten(tmp_path):
    card = tiny_card()
    a = make_tiny_model(tmp_path / "a", seed=1)
    first = train(tmp_path / "work", card, warm_start(str(a), card)[0])
    b = make_tiny_model(tmp_path / "b", seed=2)
    second = train(tmp_path / "work", card, warm_start(str(b), card)[0], epochs=2)
    assert [h["epoch"] for h in second.results["shared"].history] == [1, 2]
    assert second.results["shared"].history[0] == first.results["shared"].history[0]
    expected = parameters(load_model(a).nets["axial"])
    for key, value in second.nets["axial"].named_parameters():
        assert torch.equal(value, expected[key]), key


def test_other_architecture_is_refused(tmp_path):
    init = make_tiny_model(tmp_path / "init")
    card = tiny_card()
    wider = dataclasses.replace(card, architecture=dataclasses.replace(card.architecture,
                                                                       num_filters=8))
    with pytest.raises(ModelError, match="architecture"):
        warm_start(str(init), wider)
    with pytest.raises(ModelError, match="architecture"):  # the command: before any work
        main(["--out", str(tmp_path / "out"), "--work", str(tmp_path / "work"),
              "--init", str(init)])
    assert not (tmp_path / "work").exists() and not (tmp_path / "out").exists()


def test_the_config_holds_the_recipe_and_flags_override_it():
    args = parse_args(["--config", str(REPO_CONFIG), "--out", "x", "--lr", "0.5"])
    assert (args.lr, args.lr_decay, args.epochs, args.steps_per_epoch, args.batch_size,
            args.skull_strip, args.workers, args.threads, args.init, args.version,
            args.filters, args.grid, args.voxel_size) == \
        (0.5, 0.94, 30, 60, 8, 0.5, 1, 1, "drawem9-synth-starter", "0.5.0", 16, 128, 1.5)
    recipe = starter_recipe(parse_args(["--config", str(REPO_CONFIG), "--out", "x"]))
    assert recipe.lr == 7e-4 and recipe.epochs_classifier == 0 and recipe.epochs_all == 30
    assert recipe.time_budget_s == 60.0 * (100 - 8)


@pytest.mark.parametrize("setting", [{"learning_rate": 0.1}, {"out": "elsewhere"}])
def test_unknown_config_settings_are_refused(tmp_path, setting, capsys):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"sources": [], "starter": setting}))
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--config", str(config), "--out", "x"])
    assert exit_info.value.code == 2
    assert f"unknown starter setting(s) {next(iter(setting))}" in capsys.readouterr().err


def test_one_command_trains_scores_and_ships(tmp_path):
    flags = ["--work", str(tmp_path / "work"), "--filters", "4", "--grid", "32",
             "--voxel-size", "6", "--epochs", "2", "--steps-per-epoch", "2", "--batch-size",
             "2", "--workers", "0", "--eval-procedural", "1", "--version", "9.9.9"]
    assert main(["--out", str(tmp_path / "model"), *flags]) == 0
    card = load_model(tmp_path / "model").card
    training = card.training
    assert training["recipe"]["steps_per_epoch"] == 2 and training["recipe"]["shared_views"]
    assert training["recipe"]["epochs_classifier"] == 0 and "warm_start" not in training
    assert training["epochs_done"] == 2 and not training["stopped_early"]
    assert training["slices_per_second"] > 0 and training["data_wait_seconds"] >= 0
    assert set(card.metrics["heldout_synthetic_dice"]) == {"procedural"}
    assert main(["--out", str(tmp_path / "shipped"), "--from-checkpoint", *flags]) == 0
    a = load_file(tmp_path / "model" / "model.safetensors")
    b = load_file(tmp_path / "shipped" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


TINY = ["--filters", "4", "--grid", "32", "--voxel-size", "6", "--steps-per-epoch", "1",
        "--batch-size", "2", "--workers", "0", "--eval-procedural", "1"]


@pytest.fixture(scope="module")
def tiny_drawem9(tmp_path_factory) -> Path:
    """A tiny DrawEM9 starter (one step): what an aseg starter warm-starts from."""
    folder = tmp_path_factory.mktemp("drawem9")
    assert main(["--out", str(folder / "model"), "--work", str(folder / "work"), "--epochs",
                 "1", *TINY]) == 0
    return folder / "model"


def test_transfer_keeps_the_body_and_replaces_the_classifier(tiny_drawem9):
    """Wang et al.'s transfer: an init of another label set gives its body, a fresh
    classifier for the new labels; stage I trains that classifier alone."""
    args = parse_args(["--out", "x", "--label-set", "aseg", *TINY])
    card = starter_card(4, ("axial", "coronal", "sagittal"), 32, 6.0, True,
                        labels=BUILTIN[args.label_set])
    init, provenance = warm_start(str(tiny_drawem9), card)
    assert provenance["transfer"]["labels_from"] == "drawem9" and card.name == "aseg-synth-starter"
    unit = starter_units(Path("work"), card, True)[0]
    net = initial_net(card, init, unit.views[0], 0)
    before = parameters(init.nets["axial"])
    for key, value in net.named_parameters():
        if key.startswith("classifier."):
            assert value.shape[0] == len(BUILTIN["aseg"])
        else:
            assert torch.equal(value, before[key]), key
    assert starter_recipe(args, new_classifier=True).schedule(from_scratch=False) == \
        ["classifier"] * 3 + ["all"] * 12
    assert starter_recipe(args).epochs_classifier == 0


def test_one_command_trains_an_aseg_model_from_a_drawem9_one(tmp_path, tiny_drawem9):
    out = tmp_path / "aseg"
    flags = ["--work", str(tmp_path / "work"), "--label-set", "aseg", "--init",
             str(tiny_drawem9), "--epochs-classifier", "1", "--epochs", "1", *TINY]
    assert main(["--out", str(out), *flags]) == 0
    model = load_model(out)
    card = model.card
    assert card.labels == BUILTIN["aseg"] and card.architecture.num_classes == 33
    history = json.loads((tmp_path / "work" / "shared" / "done.json").read_text())["history"]
    assert [h["stage"] for h in history] == ["classifier", "all"]
    assert card.training["warm_start"]["transfer"]["labels_to"] == "aseg"
    assert "partial labels" in card.training["recipe"]["loss"]
    own = card.metrics["heldout_synthetic_dice"]["procedural"]["0_months"]
    assert "L-Ctx" in own and np.isnan(own["L-Tha"])  # a procedural thalamus is a group
    mapped = card.metrics["heldout_synthetic_dice_drawem9"]["procedural"]["6_months"]
    assert set(mapped) == {lab.abbreviation for lab in DRAWEM9.labels} | {"brain_mean"}
    assert "heldout_synthetic_dice_drawem9_skull_stripped" in card.metrics


def test_the_aseg_config_trains_on_the_drawem9_sources_and_held_out_files():
    aseg = REPO_CONFIG.with_name("aseg-synth-starter.json")
    both = [json.loads(path.read_text()) for path in (REPO_CONFIG, aseg)]
    assert both[0]["sources"] == both[1]["sources"] and both[0]["ages"] == both[1]["ages"]
    args = parse_args(["--config", str(aseg), "--out", "x"])
    assert (args.label_set, args.init, args.version, args.epochs_classifier, args.epochs) == \
        ("aseg", "drawem9-synth-starter", "0.1.0", 3, 15)
    assert starter_recipe(args, new_classifier=True).epochs_classifier == 3


def test_a_warm_start_keeps_the_classifier_of_the_same_classes_in_other_colours():
    """The bundled card keeps the colours it was written with; a palette change since must
    not make a warm start throw its trained classifier away (only other classes do)."""
    card = starter_card(8, ("axial",), 32, 3.0, shared=True)
    recoloured = dataclasses.replace(DRAWEM9, labels=tuple(
        dataclasses.replace(lab, color="#123456") for lab in DRAWEM9.labels))
    old = dataclasses.replace(card, labels=recoloured)
    assert not transfers(old, card)
    aseg = starter_card(8, ("axial",), 32, 3.0, shared=True, labels=BUILTIN["aseg"])
    assert transfers(card, aseg) and transfers(aseg, card)

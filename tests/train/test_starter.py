"""Synthetic training (the starter) through the train level: a warm start begins from the
given model's weights (never silently from random ones; from another label set only the
classifier is new), the settings come from the configuration's ``train`` block with flags
overriding it, and one command trains, scores and ships a model, DrawEM9 or aseg."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from bids_infantseg.cli.main import main
from bids_infantseg.model.card import load_model
from bids_infantseg.model.labels import BUILTIN, DRAWEM9
from bids_infantseg.train.data import SliceSampler, SynthSource
from bids_infantseg.train.engine import Recipe, Runtime, initial_net, transfers
from bids_infantseg.train.settings import SYNTHETIC, build
from bids_infantseg.train.starter import (
    starter_units,
    synthetic_card,
    synthetic_recipe,
    train_nets,
    warm_start,
)
from tests.model_factory import make_tiny_model, tiny_card

REPO_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "drawem9-synth-starter.json"
MODEL = "drawem9-synth-starter"


def procedural_config(folder: Path, **train) -> Path:
    """A synthetic-data configuration of procedural heads only, with a ``train`` block."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "procedural.json"
    path.write_text(json.dumps({"sources": [{"name": "procedural", "kind": "procedural"}],
                                "train": train}))
    return path


TINY = ["--nprocs", "1", "--device", "cpu", "--steps-per-epoch", "1", "--batch-size", "2",
        "--eval-procedural", "1", "--shared-views"]
SCRATCH = ["--pretrained", "none", "--num-filters", "4", "--grid-size", "32",
           "--voxel-size-mm", "6"]


def command(config: Path, out: Path, work: Path, *flags: str) -> int:
    return main([str(config), str(out), "train", "-w", str(work), *TINY, *flags])


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
    init = load_model(make_tiny_model(tmp_path / "init", seed=3))
    card = tiny_card()
    provenance = warm_start(init, card)
    assert provenance["Version"] == card.version and provenance["SHA256"]
    trained = train(tmp_path / "work", card, init, shared=shared)
    for view, net in trained.nets.items():  # (batch-norm statistics do move in training mode)
        expected = parameters(init.nets["axial" if shared else view])
        for key, value in net.named_parameters():
            assert torch.equal(value, expected[key]), (view, key)
    for result in trained.results.values():
        assert result.history[0]["epoch"] == 1  # the warm start itself is no epoch


def test_existing_checkpoint_is_resumed_not_overwritten(tmp_path):
    card = tiny_card()
    a = load_model(make_tiny_model(tmp_path / "a", seed=1))
    first = train(tmp_path / "work", card, a)
    b = load_model(make_tiny_model(tmp_path / "b", seed=2))
    second = train(tmp_path / "work", card, b, epochs=2)
    assert [h["epoch"] for h in second.results["shared"].history] == [1, 2]
    assert second.results["shared"].history[0] == first.results["shared"].history[0]
    expected = parameters(a.nets["axial"])
    for key, value in second.nets["axial"].named_parameters():
        assert torch.equal(value, expected[key]), key


def test_a_network_setting_with_a_pretrained_model_is_refused_before_any_work(tmp_path,
                                                                            capsys):
    init = make_tiny_model(tmp_path / "init")
    config = procedural_config(tmp_path)
    status = command(config, tmp_path / "out", tmp_path / "work", "--pretrained", str(init),
                     "--num-filters", "8")
    assert status == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "apply only with --pretrained none" in err
    assert not (tmp_path / "work").exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("setting", [{"learning_rate": 0.1}, {"epochs": 3}])
def test_unknown_config_settings_are_refused(tmp_path, setting, capsys):
    config = procedural_config(tmp_path, **setting)
    assert command(config, tmp_path / "out", tmp_path / "work") == 2
    err = capsys.readouterr().err
    assert f"{config} (train block): unknown setting {next(iter(setting))!r}" in err


def test_the_budget_is_minutes_less_the_evaluation():
    settings = build({"minutes": 100, "eval_minutes": 8, "epochs_all": 30}, kind=SYNTHETIC)
    recipe = synthetic_recipe(settings)
    assert recipe.epochs_classifier == 0 and recipe.epochs_all == 30
    assert recipe.time_budget_s == 60.0 * (100 - 8) and recipe.augment is False


def test_one_command_trains_scores_and_ships(tmp_path):
    config = procedural_config(tmp_path / "c", epochs_all=2, model_version="9.9.9")
    assert command(config, tmp_path / "out", tmp_path / "work", *SCRATCH) == 0
    folder = tmp_path / "out" / "models" / MODEL
    card = load_model(folder).card
    training = card.training
    assert card.version == "9.9.9" and card.architecture.num_filters == 4
    assert training["recipe"]["steps_per_epoch"] == 1 and training["recipe"]["shared_views"]
    assert training["recipe"]["epochs_classifier"] == 0 and "warm_start" not in training
    assert training["epochs_done"] == 2 and not training["stopped_early"]
    assert training["slices_per_second"] > 0 and training["data_wait_seconds"] >= 0
    assert set(card.metrics["heldout_synthetic_dice"]) == {"procedural"}
    assert (tmp_path / "work" / "synthetic" / MODEL / "shared" / "checkpoint.json").is_file()
    assert command(config, tmp_path / "shipped", tmp_path / "work", *SCRATCH,
                   "--from-checkpoint") == 0
    a = load_file(folder / "model.safetensors")
    b = load_file(tmp_path / "shipped" / "models" / MODEL / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def tiny_drawem9(tmp_path_factory) -> Path:
    """A tiny DrawEM9 starter (one step): what an aseg starter warm-starts from."""
    folder = tmp_path_factory.mktemp("drawem9")
    config = procedural_config(folder / "c", epochs_all=1)
    assert command(config, folder / "out", folder / "work", *SCRATCH) == 0
    return folder / "out" / "models" / MODEL


def test_transfer_keeps_the_body_and_replaces_the_classifier(tiny_drawem9):
    """Wang et al.'s transfer: an init of another label set gives its body, a fresh
    classifier for the new labels; stage I trains that classifier alone."""
    settings = build({"label_set": "aseg", "pretrained": str(tiny_drawem9), "shared_views": True,
                      "epochs_classifier": 3, "epochs_all": 12}, kind=SYNTHETIC)
    init = load_model(tiny_drawem9)
    card = synthetic_card(settings, BUILTIN["aseg"], init, "procedural")
    provenance = warm_start(init, card)
    assert provenance["transfer"]["labels_from"] == "drawem9" and card.name == "aseg-synth-starter"
    unit = starter_units(Path("work"), card, True)[0]
    net = initial_net(card, init, unit.views[0], 0)
    before = parameters(init.nets["axial"])
    for key, value in net.named_parameters():
        if key.startswith("classifier."):
            assert value.shape[0] == len(BUILTIN["aseg"])
        else:
            assert torch.equal(value, before[key]), key
    assert synthetic_recipe(settings, new_classifier=True).schedule(from_scratch=False) == \
        ["classifier"] * 3 + ["all"] * 12
    assert synthetic_recipe(settings).epochs_classifier == 0


def test_one_command_trains_an_aseg_model_from_a_drawem9_one(tmp_path, tiny_drawem9):
    config = procedural_config(tmp_path / "c", label_set="aseg", epochs_classifier=1,
                               epochs_all=1)
    assert command(config, tmp_path / "out", tmp_path / "work", "--pretrained",
                   str(tiny_drawem9)) == 0
    model = load_model(tmp_path / "out" / "models" / "aseg-synth-starter")
    card = model.card
    assert card.labels == BUILTIN["aseg"] and card.architecture.num_classes == 33
    done = tmp_path / "work" / "synthetic" / "aseg-synth-starter" / "shared" / "done.json"
    history = json.loads(done.read_text())["history"]
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


def test_a_warm_start_keeps_the_classifier_of_the_same_classes_in_other_colours():
    """The bundled card keeps the colours it was written with; a palette change since must
    not make a warm start throw its trained classifier away (only other classes do)."""
    card = tiny_card()
    recoloured = dataclasses.replace(DRAWEM9, labels=tuple(
        dataclasses.replace(lab, color="#123456") for lab in DRAWEM9.labels))
    old = dataclasses.replace(card, labels=recoloured)
    assert not transfers(old, card)
    aseg = dataclasses.replace(card, labels=BUILTIN["aseg"], architecture=dataclasses.replace(
        card.architecture, num_classes=len(BUILTIN["aseg"])))
    assert transfers(card, aseg) and transfers(aseg, card)


@pytest.mark.slow
def test_the_gpu_command_stops_in_its_budget_and_continues_from_its_compact_checkpoint(
        tmp_path):
    """docs/training.md's GPU command on this CPU: a wall budget in minutes, compact
    checkpoints, weights and card in the folder it is given; run again, it goes on."""
    config = procedural_config(tmp_path / "c")
    flags = [*SCRATCH, "--minutes", "0.2", "--eval-minutes", "0.05", "--epochs-all", "1000",
             "--compact-checkpoints"]
    assert command(config, tmp_path / "out", tmp_path / "ckpt", *flags) == 0
    folder = tmp_path / "out" / "models" / MODEL
    card = json.loads((folder / "card.json").read_text())
    first = card["training"]["epochs_done"]
    assert card["training"]["stopped_early"] and 0 < first < 1000
    assert card["training"]["recipe"]["compact_checkpoints"]
    unit = tmp_path / "ckpt" / "synthetic" / MODEL / "shared"
    stored = load_file(unit / "checkpoint.safetensors")
    assert {v.dtype for k, v in stored.items() if k.startswith("net.") and v.is_floating_point()} \
        == {torch.float16}
    assert command(config, tmp_path / "out", tmp_path / "ckpt", *flags) == 0
    again = json.loads((folder / "card.json").read_text())["training"]["epochs_done"]
    assert again > first


def test_a_missing_synthetic_configuration_is_one_line(tmp_path, capsys):
    assert command(tmp_path / "none.json", tmp_path / "out", tmp_path / "work") == 2
    assert capsys.readouterr().err.strip() == \
        f"bids_infantseg: error: {tmp_path / 'none.json'}: no such synthetic-data configuration"

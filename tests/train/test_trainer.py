"""The trainer's hooks: a short loop whose steps are methods, a scorer that picks the
checkpoint that ships, compact checkpoints, and a network known only through the
architecture registry's training protocol."""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pytest
import torch
from torch import nn

from bids_infantseg.model import architectures
from bids_infantseg.model.architectures import Architecture
from bids_infantseg.model.card import ModelCard
from bids_infantseg.model.labels import DRAWEM9
from bids_infantseg.train.batches import SyntheticStream
from bids_infantseg.train.checkpoint import CHECKPOINT_WEIGHTS
from bids_infantseg.train.data import SliceSampler, SynthSource
from bids_infantseg.train.engine import (
    BEST_FILE,
    DONE_FILE,
    SCORES_FILE,
    Recipe,
    Runtime,
    Unit,
    UnitTrainer,
    initial_net,
)
from tests.train.test_engine_stream import tiny_card


def recipe(epochs: int = 3, **kwargs) -> Recipe:
    return Recipe(0, epochs, 5e-3, batch_size=2, augment=False, seed=1, steps_per_epoch=2,
                  **kwargs)


def trainer(tmp_path, card: ModelCard, rec: Recipe, runtime: Runtime, *, net=None,
            from_scratch=True, cls=UnitTrainer) -> UnitTrainer:
    unit = Unit("axial", tmp_path / "axial", ("axial",), (0,))
    sampler = SliceSampler(card, SynthSource(), seed=1, pool_size=1)
    net = net if net is not None else initial_net(card, None, "axial", 0)
    return cls(unit, card, net, SyntheticStream(sampler, unit.views, rec), [], rec, runtime,
               from_scratch=from_scratch)


def test_a_scheduler_is_a_hook_not_an_edit_of_the_loop(tmp_path):
    class Halving(UnitTrainer):
        def configure_scheduler(self):
            return torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=2, gamma=0.5)

    card = tiny_card(("axial",))
    default = trainer(tmp_path / "a", card, recipe(4, lr_decay=0.8), Runtime(progress=False))
    assert [h["lr"] for h in default.run().history] == [5e-3, 5e-3 * 0.8, 5e-3 * 0.8 * 0.8,
                                                         5e-3 * 0.8 * 0.8 * 0.8]
    halving = trainer(tmp_path / "b", card, recipe(4), Runtime(progress=False), cls=Halving)
    assert [h["lr"] for h in halving.run().history] == [5e-3, 5e-3, 2.5e-3, 2.5e-3]


def test_the_best_scored_checkpoint_ships_and_every_score_is_kept(tmp_path):
    card = tiny_card(("axial",))
    scores = iter([0.2, 0.9, 0.5])
    snapshots: dict[int, dict[str, torch.Tensor]] = {}
    seen = []

    def scorer(model):
        seen.append(sorted(model.nets))
        return next(scores), pd.DataFrame({"structure": ["WM"], "dice": [0.5]})

    net = initial_net(card, None, "axial", 0)
    runtime = Runtime(progress=False, scorer=scorer, after_epoch=lambda unit, epoch:
                      snapshots.update({epoch: {k: v.clone() for k, v in
                                                net.state_dict().items()}}))
    result = trainer(tmp_path, card, recipe(3), runtime, net=net).run()
    assert seen == [["axial"]] * 3 and result.best_epoch == 2
    assert all(torch.equal(result.state[k], snapshots[2][k]) for k in result.state)
    assert not all(torch.equal(result.state[k], snapshots[3][k]) for k in result.state)
    table = pd.read_csv(tmp_path / "axial" / SCORES_FILE, sep="\t")
    assert table["epoch"].tolist() == [1, 2, 3] and table["score"].tolist() == [0.2, 0.9, 0.5]
    assert (tmp_path / "axial" / "score_epoch-002.tsv").is_file()
    assert json.loads((tmp_path / "axial" / DONE_FILE).read_text())["best_epoch"] == 2
    assert (tmp_path / "axial" / BEST_FILE).is_file()


def test_score_every_scores_some_checkpoints_and_always_the_last(tmp_path):
    card = tiny_card(("axial",))
    scored = []

    def scorer(model):
        scored.append(len(scored))
        return float(len(scored)), None

    runtime = Runtime(progress=False, scorer=scorer)
    result = trainer(tmp_path, card, recipe(5, score_every=2), runtime).run()
    assert [h["epoch"] for h in result.history if "score" in h] == [2, 4, 5]
    assert result.best_epoch == 5 and len(scored) == 3


def test_without_a_scorer_the_last_epoch_ships(tmp_path):
    card = tiny_card(("axial",))
    net = initial_net(card, None, "axial", 0)
    result = trainer(tmp_path, card, recipe(2), Runtime(progress=False), net=net).run()
    assert result.best_epoch is None and not (tmp_path / "axial" / SCORES_FILE).exists()
    assert all(torch.equal(result.state[k], v) for k, v in net.state_dict().items())


def test_compact_checkpoints_are_small_and_resume(tmp_path):
    card = tiny_card(("axial",))
    full = trainer(tmp_path / "full", card, recipe(1), Runtime(progress=False))
    full.run()
    compact = trainer(tmp_path / "compact", card, recipe(1, compact_checkpoints=True),
                      Runtime(progress=False))
    compact.run()
    sizes = [(tmp_path / name / "axial" / CHECKPOINT_WEIGHTS).stat().st_size
             for name in ("full", "compact")]
    assert sizes[1] < 0.6 * sizes[0]  # half the bytes per tensor, names and headers as before
    resumed = trainer(tmp_path / "compact", card, recipe(2, compact_checkpoints=True),
                      Runtime(progress=False)).run()
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    assert all(v.dtype == torch.float32 for v in resumed.state.values() if v.is_floating_point())


@dataclasses.dataclass(frozen=True)
class _WideConfig:
    num_classes: int
    width: int = 4

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class _Wide(nn.Module):
    """A network whose classifier is not called ``classifier``."""

    def __init__(self, cfg: _WideConfig) -> None:
        super().__init__()
        self.body = nn.Conv2d(1, cfg.width, 3, padding=1)
        self.head = nn.Conv2d(cfg.width, cfg.num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.body(x)))


def _replace_head(net: _Wide, classes: int) -> None:
    net.head = nn.Conv2d(net.body.out_channels, classes, 1)


@pytest.fixture
def wide(monkeypatch):
    monkeypatch.setitem(architectures.ARCHITECTURES, "wide", Architecture(
        "Wide", _WideConfig, _Wide, grid_multiple=1, feature_maps=lambda s: s.width,
        classifier=lambda net: net.head, replace_classifier=_replace_head,
        with_width=lambda s, width: dataclasses.replace(s, width=width)))


def test_a_second_architecture_trains_through_the_registry(tmp_path, wide):
    """Stage I trains the classifier the registry names, whatever the network calls it."""
    card = dataclasses.replace(tiny_card(("axial",)), architecture=_WideConfig(len(DRAWEM9)))
    net = _Wide(card.architecture)
    body = {k: v.clone() for k, v in net.body.state_dict().items()}
    head = {k: v.clone() for k, v in net.head.state_dict().items()}
    rec = Recipe(1, 0, 5e-2, batch_size=2, augment=False, steps_per_epoch=2)
    trainer(tmp_path, card, rec, Runtime(progress=False), net=net, from_scratch=False).run()
    assert all(torch.equal(v, body[k]) for k, v in net.body.state_dict().items())
    assert not all(torch.equal(v, head[k]) for k, v in net.head.state_dict().items())

"""Cross-validation by subject, and the final model on every subject.

Folds split *subjects*, never scans or slices: every scan (session, run) of a held-out subject
is held out with it. ``loso`` holds out one subject per fold (as the paper); ``kfold:K``
shuffles the subjects with the seed and deals them into K folds of nearly equal size.

Each fold trains the model's units (one network per view, or one shared) on the other
subjects, then segments every held-out scan as the participant level would (model grid,
views averaged, probabilities resampled to the scan's own grid, argmax) and counts, per
scan, the confusion between that label map and the manual one on the native grid. Dice and
accuracy per label follow from the counts. A fold's result is saved in the run folder, so a
restarted run skips finished folds.

With a learning-rate grid every rate is cross-validated; the rate with the best mean Dice
over brain labels (mean over held-out scans, then over labels) trains the final model. The
reported Dice of that rate is then optimistic (chosen on the same folds): the table of every
rate is written so readers can judge.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bids_infantseg.core.conform import restore_labels
from bids_infantseg.core.inference import predict
from bids_infantseg.core.metrics import confusion_matrix, scores
from bids_infantseg.io.derivatives import atomic_write_json
from bids_infantseg.model.card import Model, ModelCard
from bids_infantseg.train import ddp
from bids_infantseg.train.batches import CachedSlices
from bids_infantseg.train.cache import Volume
from bids_infantseg.train.engine import (
    SHARED,
    Recipe,
    Runtime,
    Unit,
    UnitResult,
    initial_net,
    seed_of,
    train_unit,
    transfers,
    unit_views,
)
from bids_infantseg.utils.errors import InfantsegError

LOGGER = logging.getLogger("bids_infantseg.train")
RESULT_FILE = "result.json"


class FoldError(InfantsegError, ValueError):
    """Folds that cannot be made (too few subjects for the scheme)."""


@dataclass(frozen=True)
class Fold:
    number: int  # 1..n; 0 is the final model, trained on every subject
    test: tuple[str, ...]
    train: tuple[str, ...]


def make_folds(subjects: Sequence[str], scheme: str, k: int | None = None,
               seed: int = 0) -> list[Fold]:
    """Subject-level folds: ``loso``, ``kfold`` (``k`` folds, shuffled by ``seed``), ``none``."""
    subjects = sorted(set(subjects))
    if scheme == "none":
        return []
    if len(subjects) < 2:
        raise FoldError(f"cross-validation needs at least 2 subjects, found {len(subjects)} "
                        "(use --cv none to train on what there is)")
    if scheme == "loso":
        groups = [[s] for s in subjects]
    elif scheme == "kfold":
        if k is None or not 2 <= k <= len(subjects):
            raise FoldError(f"kfold:{k} needs 2 <= K <= {len(subjects)} (the subjects)")
        order = np.random.default_rng([seed, 7]).permutation(len(subjects))
        groups = [sorted(subjects[i] for i in order[f::k]) for f in range(k)]
    else:
        raise FoldError(f"unknown cross-validation scheme {scheme!r}")
    return [Fold(n, tuple(test), tuple(s for s in subjects if s not in test))
            for n, test in enumerate(groups, start=1)]


@dataclass
class FoldResult:
    fold: int
    lr: float
    test: list[str]  # held-out scan keys
    confusion: np.ndarray  # (scans, K, K), rows reference, columns predicted
    curves: dict[str, list[dict]]  # unit -> per-epoch history
    train_seconds: float
    slices: int

    def to_json(self) -> dict:
        return {"fold": self.fold, "lr": self.lr, "test": self.test,
                "confusion": self.confusion.tolist(), "curves": self.curves,
                "train_seconds": self.train_seconds, "slices": self.slices}

    @classmethod
    def from_json(cls, data: dict) -> FoldResult:
        return cls(data["fold"], data["lr"], data["test"],
                   np.asarray(data["confusion"], dtype=np.int64), data["curves"],
                   data["train_seconds"], data["slices"])


def lr_tag(lr: float) -> str:
    return f"{lr:.0e}".replace("+", "")


class Trainer:
    """Trains the units of a fold (or of the final model) and evaluates held-out scans."""

    def __init__(self, card: ModelCard, pretrained: Model | None, recipe_for_lr,
                 runtime: Runtime, run_dir: Path, volumes: Sequence[Volume], *,
                 shared_views: bool, curves: bool) -> None:
        self.card = card
        self.pretrained = pretrained
        self.recipe_for_lr = recipe_for_lr  # lr -> Recipe
        self.runtime = runtime
        self.run_dir = Path(run_dir)
        self.volumes = list(volumes)
        self.shared_views = shared_views
        self.curves = curves

    @property
    def replaces_classifier(self) -> bool:
        return self.pretrained is not None and transfers(self.pretrained.card, self.card)

    def card_view_source(self, view_name: str) -> str:
        """The pretrained network a unit starts from (a shared unit: the first view's)."""
        return next(iter(self.card.views)) if view_name == SHARED else view_name

    def train_units(self, fold: Fold, lr_index: int, lr: float,
                    held_out: Sequence[Volume]) -> tuple[dict[str, nn.Module], dict, float, int]:
        recipe: Recipe = self.recipe_for_lr(lr)
        train = [v for v in self.volumes if v.subject in fold.train]
        folder = self.run_dir / (f"fold-{fold.number:02d}" if fold.number else "final")
        nets: dict[str, nn.Module] = {}
        curves, seconds, slices = {}, 0.0, 0
        for view_name, views, index in unit_views(self.card.views, self.shared_views):
            key = (fold.number, lr_index, index)
            unit = Unit(f"{folder.name}_lr-{lr_tag(lr)}_{view_name}",
                        folder / f"lr-{lr_tag(lr)}" / view_name, views, key)
            net = initial_net(self.card, self.pretrained, self.card_view_source(view_name),
                              seed_of(recipe.seed, *key, 99))
            result: UnitResult = train_unit(
                unit, self.card, net, CachedSlices(train, views, recipe, self.runtime, self.card),
                held_out if self.curves else [], recipe, self.runtime,
                from_scratch=self.pretrained is None)
            net.load_state_dict(result.state)
            net.to(self.runtime.device).eval()
            for view in views:
                nets[view] = net
            curves[view_name] = result.history
            seconds += result.train_seconds
            slices += result.slices
        return nets, curves, seconds, slices

    def evaluate(self, nets: dict[str, nn.Module], volumes: Sequence[Volume]) -> np.ndarray:
        """Per-scan confusion ``(n, K, K)`` on each scan's own grid, as segmented by the
        participant level (each rank does its share)."""
        k = len(self.card.labels)
        counts = torch.zeros((len(volumes), k, k), dtype=torch.int64)
        model = Model(self.card, nets, Path("."), "")
        indices = self.card.labels.indices
        for i, volume in enumerate(volumes):
            if i % self.runtime.place.world != self.runtime.place.rank:
                continue
            probs = predict(model, np.load(volume.image_file), device=self.runtime.device,
                            batch_size=self.runtime.eval_batch_size)
            reference, affine = volume.reference()
            labels = restore_labels(probs, volume.grid(self.card.grid_shape), reference.shape,
                                    affine, indices)
            counts[i] = torch.from_numpy(confusion_matrix(labels, reference, indices))
        return ddp.all_reduce_sum(counts).numpy()

    def run_fold(self, fold: Fold, lr_index: int, lr: float) -> FoldResult:
        folder = self.run_dir / f"fold-{fold.number:02d}" / f"lr-{lr_tag(lr)}"
        saved = folder / RESULT_FILE
        if saved.is_file():
            LOGGER.info("fold %d (lr %g): already done by an earlier run", fold.number, lr)
            return FoldResult.from_json(json.loads(saved.read_text()))
        test = [v for v in self.volumes if v.subject in fold.test]
        LOGGER.info("fold %d: held out %s (%d scan(s)), training on %d subject(s), lr %g",
                    fold.number, ", ".join(fold.test), len(test), len(fold.train), lr)
        nets, curves, seconds, slices = self.train_units(fold, lr_index, lr, test)
        counts = self.evaluate(nets, test)
        result = FoldResult(fold.number, lr, [v.key for v in test], counts, curves, seconds,
                            slices)
        dice = scores(counts)["dice"]
        brain = [i for i, lab in enumerate(self.card.labels.labels)
                 if lab.index not in self.card.labels.non_brain]
        LOGGER.info("fold %d (lr %g): held-out Dice over brain labels %s", fold.number, lr,
                    ", ".join(f"{np.nanmean(d[brain]):.3f}" for d in dice))
        if self.runtime.place.main:
            atomic_write_json(saved, result.to_json())
        ddp.barrier()
        return result

    def final_nets(self, lr_index: int, lr: float) -> tuple[dict[str, nn.Module], dict,
                                                             float, int]:
        subjects = tuple(sorted({v.subject for v in self.volumes}))
        return self.train_units(Fold(0, (), subjects), lr_index, lr, [])

"""The engine's two data sources: slices of a site's cached volumes, or a synthetic stream.

``engine.train_unit`` takes one epoch of batches at a time from a source, and its class
weights from the source's voxel counts; every draw comes from (seed, unit, epoch[, rank]),
so a resumed run sees the batches an uninterrupted one would. Each source counts the
seconds training waited for its batches (``wait_seconds``).

- ``CachedSlices`` (the train level): an epoch is every slice with signal of the cached
  volumes in the unit's views, or ``max_slices_per_epoch`` of them drawn anew, shuffled;
  under DDP each rank takes an equal share. A DataLoader reads (and augments) them, in
  worker processes if asked.
- ``SyntheticStream`` (the starter): there is no end to the data, so an epoch is
  ``steps_per_epoch`` steps, each one batch of every view of the unit in turn (a shared
  network gets one optimiser step per view and step); the volumes are drawn ahead by the
  ``SliceSampler``'s own worker processes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from bids_infantseg.model.card import ModelCard
from bids_infantseg.train import ddp
from bids_infantseg.train.cache import SliceDataset, Volume, epoch_items, slice_pool
from bids_infantseg.train.data import (
    SliceSampler,
    sagittal_merge,
    target_counts,
    target_groups,
)
from bids_infantseg.train.engine import Epoch, Recipe, Runtime

Batch = tuple[torch.Tensor, torch.Tensor]


class EpochSampler(Sampler):
    """The items of the current epoch; set before each pass, so one loader (and its
    persistent worker processes) serves every epoch of a unit."""

    def __init__(self) -> None:
        self.items: list[tuple[int, ...]] = []

    def __iter__(self):
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


def _collate(batch):
    images, targets = zip(*batch, strict=True)
    return torch.stack(images), torch.stack(targets)


class CachedSlices:
    """Slices of cached site volumes in ``views``, through one DataLoader per unit. A site's
    label maps say every class; only sagittal slices of a lateralised set get partial
    targets, each left/right pair as one (``train.sides``)."""

    def __init__(self, volumes: Sequence[Volume], views: Sequence[str], recipe: Recipe,
                 runtime: Runtime, card: ModelCard) -> None:
        if recipe.steps_per_epoch is not None:
            raise ValueError("steps_per_epoch is for a synthetic stream; cached slices use "
                             "max_slices_per_epoch")
        self.volumes = list(volumes)
        self.views = tuple(views)
        self.max_slices = recipe.max_slices_per_epoch
        self.batch_size = recipe.batch_size
        self.wait_seconds = 0.0
        self._pool: np.ndarray | None = None
        self._sampler = EpochSampler()
        self.card = card
        self.groups = target_groups(card)
        merge = sagittal_merge(card)
        workers = runtime.workers
        # workers from a fork server: forked children of a process whose torch threads
        # already ran can hang; persistent, so they start once per unit, not once per epoch
        self._loader = DataLoader(
            SliceDataset(self.volumes, augment=recipe.augment, seed=recipe.seed,
                         sagittal_lut=merge.lut if merge else None),
            batch_size=recipe.batch_size, sampler=self._sampler, num_workers=workers,
            collate_fn=_collate, pin_memory=runtime.device.type == "cuda",
            persistent_workers=workers > 0,
            multiprocessing_context="forkserver" if workers > 0 else None)

    def class_counts(self) -> np.ndarray:
        return target_counts(self.card, np.sum([np.asarray(v.counts, dtype=np.int64)
                                                for v in self.volumes], axis=0))

    def epoch(self, key: tuple[int, ...], epoch: int, place: ddp.Dist) -> Epoch:
        if self._pool is None:
            self._pool = slice_pool(self.volumes, self.views)
            if len(self._pool) < place.world:
                raise ValueError(f"{len(self._pool)} training slice(s) in "
                                 f"{', '.join(self.views)} for {place.world} rank(s)")
        items = epoch_items(self._pool, self.max_slices, np.random.default_rng([*key, epoch]))
        share = len(items) // place.world  # equal steps on every rank, or DDP would hang
        self._sampler.items = [(epoch, *map(int, row))
                               for row in items[place.rank::place.world][:share]]
        return Epoch(math.ceil(share / self.batch_size), self._timed())

    def _timed(self) -> Iterator[Batch]:
        """The loader's batches, timing each wait (the loader starts when first asked)."""
        batches = iter(self._loader)
        while True:
            start = time.monotonic()
            batch = next(batches, None)
            self.wait_seconds += time.monotonic() - start
            if batch is None:
                return
            yield batch


class SyntheticStream:
    """Batches of ``sampler``'s endless stream for a unit's ``views``."""

    def __init__(self, sampler: SliceSampler, views: Sequence[str], recipe: Recipe) -> None:
        if recipe.steps_per_epoch is None:
            raise ValueError("a synthetic stream needs steps_per_epoch")
        if recipe.augment or recipe.max_slices_per_epoch is not None:
            raise ValueError("augment and max_slices_per_epoch are for cached slices; the "
                             "synthetic generator augments its own volumes")
        self.sampler = sampler
        self.views = tuple(views)
        self.steps = recipe.steps_per_epoch
        self.batch_size = recipe.batch_size

    @property
    def wait_seconds(self) -> float:
        return self.sampler.wait_seconds

    @property
    def groups(self) -> tuple[tuple[int, ...], ...]:
        return self.sampler.groups

    def class_counts(self) -> np.ndarray:
        return self.sampler.class_counts()

    def epoch(self, key: tuple[int, ...], epoch: int, place: ddp.Dist) -> Epoch:
        self.sampler.reseed(*key, epoch, place.rank)
        return Epoch(self.steps * len(self.views), self._batches())

    def _batches(self) -> Iterator[Batch]:
        for _ in range(self.steps):
            for view in self.views:
                yield self.sampler.batch(view, self.batch_size)

"""Training data: 2D slices cut from synthetic volumes drawn on the model grid, on the fly.

Volumes are drawn directly on the model's canonical RAS grid at its voxel size and normalised
by the very function inference uses (``conform.normalise_intensity`` with the card's
settings), so training sees what the network sees at run time. A small pool of recent
volumes is kept and refreshed as batches are drawn, so each batch mixes slices of several
heads without paying for a new head per batch.
"""

from __future__ import annotations

import inspect
import multiprocessing
import time
from collections import deque
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from bids_infantseg import synth
from bids_infantseg.core.conform import normalise_intensity
from bids_infantseg.model.card import ModelCard
from bids_infantseg.model.labels import LABEL_GROUPS
from bids_infantseg.model.views import VIEW_AXIS
from bids_infantseg.synth.sources import Source, SourceMix
from bids_infantseg.train.sides import SideMerge, merged_counts, side_merge


def class_lookup(card: ModelCard) -> np.ndarray:
    """Label index -> network class number, for the card's label set; a partial label group
    of the set (``model.labels.LABEL_GROUPS``) -> its target number, after the classes."""
    indices = card.labels.indices
    groups = LABEL_GROUPS.get(card.labels.name, ())
    lut = np.zeros(max([int(indices.max()), *(g.index for g in groups)]) + 1, dtype=np.int64)
    lut[indices] = np.arange(len(indices))
    for number, group in enumerate(groups, start=len(indices)):
        lut[group.index] = number
    return lut


def _set_groups(card: ModelCard) -> tuple[tuple[int, ...], ...]:
    """The class numbers of each of the card's set's partial label groups, in order."""
    number = {int(index): k for k, index in enumerate(card.labels.indices)}
    return tuple(tuple(number[m] for m in group.members)
                 for group in LABEL_GROUPS.get(card.labels.name, ()))


def sagittal_merge(card: ModelCard) -> SideMerge | None:
    """How sagittal slices' sided targets merge (``train.sides``); ``None`` if the set has no
    sides or the card no other view to tell them."""
    if set(card.views) <= {"sagittal"}:
        return None
    return side_merge([lab.name for lab in card.labels.labels], _set_groups(card),
                      [g.name for g in LABEL_GROUPS.get(card.labels.name, ())])


def target_groups(card: ModelCard) -> tuple[tuple[int, ...], ...]:
    """The class numbers each partial target stands for (target ``K + g`` is group ``g``:
    the card's set's label groups, then sagittal side-merged targets): what the loss sums
    probabilities over."""
    merge = sagittal_merge(card)
    return _set_groups(card) + (merge.groups if merge else ())


def target_counts(card: ModelCard, counts: np.ndarray) -> np.ndarray:
    """Voxel counts per target (``target_groups``' order) from counts of the classes, and of
    the set's groups where a source draws them (a site's maps do not: zeros), with the
    sagittal side-merged targets' counts appended (``train.sides.merged_counts``)."""
    full = np.zeros(len(card.labels) + len(_set_groups(card)), dtype=np.int64)
    full[:len(counts)] = counts
    merge = sagittal_merge(card)
    return merged_counts(full, merge) if merge else full


PROCEDURAL_ONLY = SourceMix((Source("procedural", "procedural", 1.0, (synth.Procedural(),),
                                    (None,)),))
"""Procedural heads from birth to 12 months: needs no data files (tests, quick runs)."""


@dataclass(frozen=True)
class SynthSource:
    """What synthetic heads to draw: anatomy sources and ages, and the share skull-stripped."""

    mix: SourceMix = PROCEDURAL_ONLY
    skull_strip: float = 0.0  # share of volumes skull-stripped (brain-only scans)
    device: str = "cpu"  # where the generator draws, when it takes a device

    def to_dict(self) -> dict:
        return {**self.mix.describe(), "skull_strip": self.skull_strip,
                "generator_device": self.device}


def generator_takes_device() -> bool:
    """Whether the synthetic generator can draw on a given device (a torch generator does);
    a GPU run then draws its volumes there."""
    return "device" in inspect.signature(synth.training_volume_sets).parameters


def draw_volume(card: ModelCard, source: SynthSource, rng: np.random.Generator,
                age_months: float | None = None,
                anatomy: synth.Anatomy | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One normalised image and its target map (classes, then partial targets) on the
    card's grid; age and anatomy drawn from ``source`` unless given."""
    image, labels = draw_labelled(card, source, rng, (card.labels.name,), age_months, anatomy)
    return image, class_lookup(card)[labels[card.labels.name]]


def draw_labelled(card: ModelCard, source: SynthSource, rng: np.random.Generator,
                  label_sets: tuple[str, ...], age_months: float | None = None,
                  anatomy: synth.Anatomy | None = None) -> tuple[np.ndarray, dict]:
    """One normalised image on the card's grid and its labels (label indices) in each of
    ``label_sets``; the same draw whatever the sets."""
    if age_months is None:
        age_months = source.mix.draw_age(rng)
    if anatomy is None:
        anatomy = source.mix.draw(rng, age_months)
    where = {"device": source.device} if generator_takes_device() else {}
    image, labels = synth.training_volume_sets(rng, age_months, tuple(card.grid_shape),
                                               card.voxel_size_mm, anatomy=anatomy,
                                               strip_probability=source.skull_strip,
                                               label_sets=label_sets,
                                               config=source.mix.generator, **where)
    return normalise_intensity(image, card.intensity), labels


def _volume_with_slices(card: ModelCard, source: SynthSource, key: tuple[int, ...]) -> tuple:
    """A volume drawn from its own seed ``key`` (reproducible in any process), with the slice
    indices per view that hold brain and head."""
    image, classes = draw_volume(card, source, np.random.default_rng([0, *key]))
    brain = ~np.isin(classes, np.flatnonzero(np.isin(card.labels.indices,
                                                     card.labels.non_brain)))
    head = classes != 0
    slices = {}
    for view, axis in VIEW_AXIS.items():
        others = tuple(a for a in range(3) if a != axis)
        slices[view] = (np.flatnonzero(brain.any(axis=others)),
                        np.flatnonzero(head.any(axis=others)))
    return image, classes, slices


@dataclass
class SliceSampler:
    """Endless batches ``(B, 1, H, W)`` images and ``(B, H, W)`` classes for any view.

    A new volume replaces the oldest in the pool every ``batches_per_volume`` batches.
    Slices come from the part of each volume that holds head (class 0 is outside), four
    times in five from slices that hold brain. With ``workers`` > 0, volumes are drawn ahead
    in that many worker processes (fork server), so training waits for data only when
    drawing is slower than training; each volume has its own seed, so the stream is the same
    with or without workers.
    """

    card: ModelCard
    source: SynthSource
    seed: int = 0
    pool_size: int = 4
    batches_per_volume: int = 6
    workers: int = 0
    _rng: np.random.Generator = field(init=False, repr=False)
    _pool: deque = field(init=False, repr=False)
    _batches: int = field(init=False, default=0, repr=False)
    _key: tuple[int, ...] = field(init=False, default=(), repr=False)
    _drawn: int = field(init=False, default=0, repr=False)
    _ahead: deque = field(init=False, repr=False)
    _executor: Executor | None = field(init=False, default=None, repr=False)
    _merge: SideMerge | None = field(init=False, default=None, repr=False)
    wait_seconds: float = field(init=False, default=0.0)
    """Time ``batch`` spent waiting for volumes (drawing them, or for the workers)."""

    def __post_init__(self) -> None:
        synth.check_label_sets((self.card.labels.name,))  # before any worker starts
        self._merge = sagittal_merge(self.card)
        if self.workers:
            self._executor = ProcessPoolExecutor(
                self.workers, mp_context=multiprocessing.get_context("forkserver"))
        self.reseed(self.seed)

    def reseed(self, *key: int) -> None:
        """Restart the stream at ``key`` (e.g. seed and epoch), so resuming is reproducible."""
        for future in getattr(self, "_ahead", ()):
            future.cancel()
        self._key, self._drawn = tuple(key), 0
        self._rng = np.random.default_rng([3, *key])
        self._pool = deque(maxlen=self.pool_size)
        self._ahead = deque()
        self._batches = 0

    def _next_key(self) -> tuple[int, ...]:
        self._drawn += 1
        return (*self._key, self._drawn)

    def _add_volume(self) -> None:
        start = time.monotonic()
        if self._executor is None:
            self._pool.append(_volume_with_slices(self.card, self.source, self._next_key()))
        else:
            while len(self._ahead) < self.workers + 1:
                self._ahead.append(self._executor.submit(_volume_with_slices, self.card,
                                                         self.source, self._next_key()))
            self._pool.append(self._ahead.popleft().result())
        self.wait_seconds += time.monotonic() - start

    def close(self) -> None:
        """Stop the workers (also done when the sampler is garbage-collected)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    @property
    def groups(self) -> tuple[tuple[int, ...], ...]:
        """Class numbers of each partial target (``target_groups``)."""
        return target_groups(self.card)

    def class_counts(self, volumes: int = 12) -> np.ndarray:
        """Voxel counts per target (classes, then partial targets) over a few fresh volumes
        (for class weights)."""
        rng = np.random.default_rng([2, self.seed])
        counts = np.zeros(len(self.card.labels) + len(_set_groups(self.card)), dtype=np.int64)
        for _ in range(volumes):
            _, classes = draw_volume(self.card, self.source, rng)
            counts += np.bincount(classes.ravel(), minlength=len(counts))
        return target_counts(self.card, counts)

    def batch(self, view: str, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        while len(self._pool) < self.pool_size:
            self._add_volume()
        if self._batches and self._batches % self.batches_per_volume == 0:
            self._add_volume()
        self._batches += 1
        axis = VIEW_AXIS[view]
        images, targets = [], []
        for _ in range(batch_size):
            image, classes, slices = self._pool[self._rng.integers(len(self._pool))]
            brain, head = slices[view]
            choices = brain if (brain.size and self._rng.uniform() < 0.8) or not head.size \
                else head
            index = int(choices[self._rng.integers(len(choices))]) if choices.size else 0
            images.append(torch.from_numpy(image).select(axis, index))
            targets.append(torch.from_numpy(classes).select(axis, index))
        targets = torch.stack(targets)
        if view == "sagittal" and self._merge is not None:
            targets = torch.from_numpy(self._merge.lut)[targets]
        return torch.stack(images).unsqueeze(1), targets

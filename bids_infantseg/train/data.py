"""Training data: 2D slices cut from synthetic volumes drawn on the model grid, on the fly.

Volumes are drawn directly on the model's canonical RAS grid at its voxel size and normalised
by the very function inference uses (``conform.normalise_intensity`` with the card's
settings), so training sees what the network sees at run time. A small pool of recent
volumes is kept and refreshed as batches are drawn, so each batch mixes slices of several
heads without paying for a new head per batch.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from bids_infantseg import synth
from bids_infantseg.conform import normalise_intensity
from bids_infantseg.model.card import ModelCard
from bids_infantseg.model.views import VIEW_AXIS


def class_lookup(card: ModelCard) -> np.ndarray:
    """Label index -> network class number, for the card's label set."""
    indices = card.labels.indices
    lut = np.zeros(int(indices.max()) + 1, dtype=np.int64)
    lut[indices] = np.arange(len(indices))
    return lut


@dataclass(frozen=True)
class SynthSource:
    """What synthetic heads to draw: ages, and the share drawn from which fetal atlases."""

    atlases: tuple[Path, ...] = ()
    atlas_fraction: float = 0.4
    age_range: tuple[float, float] = (0.0, 12.0)
    skull_strip: float = 0.0  # share of volumes skull-stripped (brain-only scans)

    def to_dict(self) -> dict:
        return {"procedural": True, "atlases": [Path(a).name for a in self.atlases],
                "atlas_fraction": self.atlas_fraction if self.atlases else 0.0,
                "age_range_months": list(self.age_range), "skull_strip": self.skull_strip}


def draw_volume(card: ModelCard, source: SynthSource, rng: np.random.Generator,
                age_months: float | None = None,
                atlas: Path | None | str = "random") -> tuple[np.ndarray, np.ndarray]:
    """One normalised image and its class map on the card's grid."""
    if age_months is None:
        age_months = float(rng.uniform(*source.age_range))
    if atlas == "random":
        use_atlas = bool(source.atlases) and rng.uniform() < source.atlas_fraction
        atlas = source.atlases[rng.integers(len(source.atlases))] if use_atlas else None
    image, labels = synth.training_volume(rng, age_months, tuple(card.grid_shape),
                                          card.voxel_size_mm, atlas=atlas,
                                          strip_probability=source.skull_strip)
    return normalise_intensity(image, card.intensity), class_lookup(card)[labels]


@dataclass
class SliceSampler:
    """Endless batches ``(B, 1, H, W)`` images and ``(B, H, W)`` classes for any view.

    A new volume replaces the oldest in the pool every ``batches_per_volume`` batches.
    Slices come from the part of each volume that holds head (class 0 is outside), four
    times in five from slices that hold brain.
    """

    card: ModelCard
    source: SynthSource
    seed: int = 0
    pool_size: int = 4
    batches_per_volume: int = 6
    _rng: np.random.Generator = field(init=False, repr=False)
    _pool: deque = field(init=False, repr=False)
    _batches: int = field(init=False, default=0, repr=False)

    def __post_init__(self) -> None:
        self.reseed(self.seed)

    def reseed(self, *key: int) -> None:
        """Restart the stream at ``key`` (e.g. seed and epoch), so resuming is reproducible."""
        self._rng = np.random.default_rng([0, *key])
        self._pool = deque(maxlen=self.pool_size)
        self._batches = 0

    def _add_volume(self) -> None:
        image, classes = draw_volume(self.card, self.source, self._rng)
        brain = ~np.isin(classes, np.flatnonzero(np.isin(self.card.labels.indices,
                                                         self.card.labels.non_brain)))
        head = classes != 0
        slices = {}
        for view, axis in VIEW_AXIS.items():
            others = tuple(a for a in range(3) if a != axis)
            slices[view] = (np.flatnonzero(brain.any(axis=others)),
                            np.flatnonzero(head.any(axis=others)))
        self._pool.append((torch.from_numpy(image), torch.from_numpy(classes), slices))

    def class_counts(self, volumes: int = 4) -> np.ndarray:
        """Voxel counts per class over a few fresh volumes (for class weights)."""
        rng = np.random.default_rng([2, self.seed])
        counts = np.zeros(len(self.card.labels), dtype=np.int64)
        for _ in range(volumes):
            _, classes = draw_volume(self.card, self.source, rng)
            counts += np.bincount(classes.ravel(), minlength=len(counts))
        return counts

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
            images.append(image.select(axis, index))
            targets.append(classes.select(axis, index))
        return torch.stack(images).unsqueeze(1), torch.stack(targets)

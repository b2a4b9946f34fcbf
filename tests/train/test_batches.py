"""Cached site slices as training batches: a lateralised table's sagittal slices claim no side."""

from __future__ import annotations

import dataclasses

import numpy as np

from bids_infantseg.train import ddp
from bids_infantseg.train.batches import CachedSlices
from bids_infantseg.train.engine import Recipe, Runtime
from tests.train.test_cache import cached, card_for


def _targets(slices: CachedSlices) -> np.ndarray:
    epoch = slices.epoch((0,), 0, ddp.Dist(0, 1))
    return np.concatenate([t.numpy().ravel() for _, t in epoch.batches])


def test_sagittal_site_slices_train_each_side_pair_as_one_target(tmp_path):
    data, result = cached(tmp_path, subjects=("01",))  # labels 0-3: outside, shell, core, blob
    labels = data.label_set
    sided = tuple(dataclasses.replace(lab, name=name) for lab, name in
                  zip(labels.labels, ("Outside", "Shell", "Left-Core", "Right-Core"), strict=True))
    card = card_for(dataclasses.replace(labels, labels=sided))
    recipe = Recipe(0, 1, 1e-3, batch_size=4, augment=False)
    runtime = Runtime(progress=False)
    axial = CachedSlices(result.volumes, ("axial",), recipe, runtime, card)
    sagittal = CachedSlices(result.volumes, ("sagittal",), recipe, runtime, card)
    assert axial.groups == sagittal.groups == ((2, 3),)
    assert set(np.unique(_targets(axial))) >= {2, 3}
    on_sagittal = np.unique(_targets(sagittal))
    assert 4 in on_sagittal and not {2, 3} & set(on_sagittal)
    counts = sagittal.class_counts()
    assert len(counts) == 5 and counts[4] == round((counts[2] + counts[3]) / 2)
    plain = CachedSlices(result.volumes, ("sagittal",), recipe, runtime, card_for(labels))
    assert plain.groups == () and len(plain.class_counts()) == 4

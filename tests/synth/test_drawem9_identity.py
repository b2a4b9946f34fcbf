"""The DrawEM9 training volumes stay bit-identical for the same seed.

Why: the bundled model's config reproduces its training data from seeds, and a training run
that resumes mid-way redraws its volumes; any change to synthesis (e.g. carrying other label
sets through painting) must leave the DrawEM9 image and labels exactly as they were. The
hashes below were taken before the aseg label set was added (commit 29b015e); those of the
aseg heads again after the deliberate change that splits fused sulcal banks
(``labelmaps.split_fused_banks``).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from bids_infantseg import synth
from bids_infantseg.synth.labelmaps import LabelMap, Scheme


def volume_hash(anatomy, seed: int, age: float, strip: float) -> str:
    image, labels = synth.training_volume(np.random.default_rng([7, seed]), age, (64, 64, 64),
                                          3.0, anatomy=anatomy, strip_probability=strip)
    digest = hashlib.sha256()
    for array in (image, labels):
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


PROCEDURAL = {(0, 0.0, 0.0): "c2606d2e2b871d3e", (1, 6.0, 1.0): "a8e4b92e59e77c69"}
ATLAS = {(2, 3.0, 0.0): "efd0a27b99f7cb3e", (3, 0.0, 1.0): "cecea1c385247802"}
ASEG = {("1mo", 4, 1.0, 0.0): "7b0e2e4205dac1ff", ("1mo", 5, 2.0, 1.0): "53f7543c322f82a4",
        ("1mo", 6, 0.5, 0.0): "d3eacbb47dabe89b", ("6mo", 8, 9.0, 1.0): "d7cfed914b31db9c",
        ("6mo", 9, 6.0, 0.0): "77290c0b53a21f68", ("6mo", 10, 3.0, 0.0): "0ef52d9b541d0a52"}


@pytest.mark.parametrize("key", sorted(PROCEDURAL))
def test_procedural_heads_unchanged(key):
    assert volume_hash(synth.Procedural(), *key) == PROCEDURAL[key]


@pytest.mark.parametrize("key", sorted(ATLAS))
def test_fetal_atlas_heads_unchanged(key, atlases):
    assert volume_hash(synth.FetalAtlas(atlases[0]), *key) == ATLAS[key]


@pytest.mark.parametrize("key", sorted(ASEG))
def test_aseg_heads_unchanged(key, aseg_root):
    name, *draw = key
    source = LabelMap(aseg_root / f"{name}_aseg.nii.gz", Scheme.load("freesurfer-aseg"), 1.0)
    assert volume_hash(source, *draw) == ASEG[key]

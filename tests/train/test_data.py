"""Training targets of a label set with partial labels (aseg): classes first, then one
target per group, and the sampler's batches and counts over all of them."""

from __future__ import annotations

import dataclasses

import numpy as np

from bids_infantseg.model.labels import ASEG, DRAWEM9, LABEL_GROUPS
from bids_infantseg.model.quicknat import QuickNATConfig
from bids_infantseg.train.data import SliceSampler, SynthSource, class_lookup, target_groups
from tests.model_factory import tiny_card


def aseg_card():
    card = tiny_card()
    return dataclasses.replace(card, labels=ASEG, architecture=QuickNATConfig(
        len(ASEG), num_filters=4, dropout=0.0))


def test_groups_are_targets_after_the_classes():
    card = aseg_card()
    lut = class_lookup(card)
    assert lut[ASEG.indices].tolist() == list(range(len(ASEG)))
    groups = LABEL_GROUPS["aseg"]
    assert [lut[g.index] for g in groups] == list(range(len(ASEG), len(ASEG) + len(groups)))
    position = {int(i): k for k, i in enumerate(ASEG.indices)}
    assert target_groups(card)[2] == tuple(position[m] for m in groups[2].members)
    assert target_groups(tiny_card()) == () and len(class_lookup(tiny_card())) == len(DRAWEM9)


def test_an_aseg_sampler_draws_partial_targets_from_procedural_heads():
    card = aseg_card()
    sampler = SliceSampler(card, SynthSource(), seed=0, pool_size=1)
    _, targets = sampler.batch("coronal", 8)
    k = len(ASEG)
    assert int(targets.max()) < k + len(LABEL_GROUPS["aseg"]) and (targets >= k).any()
    counts = sampler.class_counts(volumes=1)
    assert len(counts) == k + len(sampler.groups) and counts[k:].sum() > 0
    assert counts[[ASEG.indices.tolist().index(i) for i in (3, 42, 2, 41)]].min() > 0
    assert np.all(counts[[ASEG.indices.tolist().index(i) for i in (10, 49, 17, 53)]] == 0)


def test_sagittal_slices_train_each_side_pair_as_one_partial_target():
    card = aseg_card()
    sampler = SliceSampler(card, SynthSource(), seed=0, pool_size=1)
    k, g = len(ASEG), len(LABEL_GROUPS["aseg"])
    names = [lab.name for lab in ASEG.labels]
    groups = sampler.groups
    left_ctx, right_ctx = names.index("Left-Cerebral-Cortex"), names.index("Right-Cerebral-Cortex")
    assert (left_ctx, right_ctx) in groups[g:]  # a merged pair, after the set's groups
    _, sagittal = sampler.batch("sagittal", 8)
    _, coronal = sampler.batch("coronal", 8)
    sided = [names.index(n) for n in names if n.startswith(("Left-", "Right-"))]
    assert np.isin(coronal.numpy(), sided).any()
    assert not np.isin(sagittal.numpy(), sided).any()  # no side is claimed in a sagittal slice
    assert (sagittal >= k + g).any() and int(sagittal.max()) < k + len(groups)
    assert np.isin(sagittal.numpy(), [names.index("CSF"), names.index("Brain-Stem")]).any()
    counts = sampler.class_counts(volumes=1)
    merged = k + groups.index((left_ctx, right_ctx))
    assert len(counts) == k + len(groups)
    assert counts[merged] == round((counts[left_ctx] + counts[right_ctx]) / 2)


def test_a_set_without_sides_or_a_sagittal_only_card_keeps_its_targets():
    assert target_groups(tiny_card()) == ()
    only_sagittal = dataclasses.replace(aseg_card(), views={"sagittal": 1.0})
    assert target_groups(only_sagittal) == target_groups(aseg_card())[:len(LABEL_GROUPS["aseg"])]

"""Per-label Dice of a model on held-out synthetic volumes, by age.

Evaluation volumes come from their own seed stream (``[1, age, i]``), disjoint from the
training streams (``[0, seed, unit, epoch, rank, n]``), and those built on real anatomy only
from the held-out files of the training configuration.
"""

from __future__ import annotations

import numpy as np

from bids_infantseg import synth
from bids_infantseg.inference import predict
from bids_infantseg.metrics import confusion_matrix, scores
from bids_infantseg.model.card import Model, ModelCard
from bids_infantseg.synth.sources import Source
from bids_infantseg.train.data import SynthSource, draw_volume


def dice_per_label(predicted: np.ndarray, truth: np.ndarray, card: ModelCard) -> dict[str, float]:
    """Dice per label abbreviation of two class maps (NaN where the label is in neither)."""
    classes = np.arange(len(card.labels))
    dice = scores(confusion_matrix(predicted, truth, classes))["dice"]
    return {label.abbreviation: float(d) for label, d in zip(card.labels.labels, dice,
                                                              strict=True)}


def heldout_cases(held_out: tuple[Source, ...],
                  procedural: int) -> dict[str, tuple[synth.Anatomy, ...]]:
    """The evaluation groups: ``procedural`` procedural heads, then each held-out source's
    anatomies (``SourceMix.load(config, held_out=True).sources``)."""
    return {"procedural": (synth.Procedural(),) * procedural,
            **{s.name: s.anatomies for s in held_out}}


def evaluate_synthetic(model: Model, cases: dict[str, tuple[synth.Anatomy, ...]],
                       ages: tuple[float, ...] = (0.0, 6.0, 12.0), batch_size: int = 8,
                       skull_strip: bool = False) -> dict:
    """Mean per-label Dice per case group (e.g. a held-out source) and age, one volume per
    anatomy of the group (all skull-stripped with ``skull_strip``), with the mean over brain
    labels."""
    card = model.card
    brain = [lab.abbreviation for lab in card.labels.labels
             if lab.index not in card.labels.non_brain]
    results: dict[str, dict] = {}
    for group, anatomies in cases.items():
        for age in ages:
            per_volume = []
            for i, anatomy in enumerate(anatomies):
                rng = np.random.default_rng([1, int(round(age * 10)), i])
                image, truth = draw_volume(card, SynthSource(skull_strip=float(skull_strip)),
                                           rng, age_months=age, anatomy=anatomy)
                probs = predict(model, image, batch_size=batch_size)
                per_volume.append(dice_per_label(probs.argmax(axis=0), truth, card))
            mean = {k: round(float(np.nanmean([s[k] for s in per_volume])), 3)
                    for k in per_volume[0]}
            mean["brain_mean"] = round(float(np.mean([mean[k] for k in brain])), 3)
            results.setdefault(group, {})[f"{age:g}_months"] = mean
    return {"heldout_synthetic_dice": results,
            "volumes_per_age": {group: len(a) for group, a in cases.items()}}

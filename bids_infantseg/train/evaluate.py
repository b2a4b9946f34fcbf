"""Per-label Dice of a model on held-out synthetic volumes, by age.

Evaluation volumes come from their own seed stream (``[1, age, i]``), disjoint from the
training streams (``[0, seed, unit, epoch, rank, n]``), and those built on real anatomy only
from the held-out files of the training configuration. The same volumes whatever the
model's label set: a model of another set (aseg) is scored in its own labels and, through
its shipped mapping onto DrawEM9 (``aseg-to-drawem9``), against the very DrawEM9 truth the
DrawEM9 model is scored on, so the two can be compared.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bids_infantseg import synth
from bids_infantseg.core.inference import predict
from bids_infantseg.core.metrics import confusion_matrix, scores
from bids_infantseg.model.card import Model, ModelCard
from bids_infantseg.model.labelmap import LabelMapError, LabelMapping
from bids_infantseg.model.labels import DRAWEM9, LabelSet
from bids_infantseg.synth.sources import Source
from bids_infantseg.train.data import SynthSource, class_lookup, draw_labelled
from bids_infantseg.train.engine import nanmean


def dice_per_label(predicted: np.ndarray, truth: np.ndarray, card: ModelCard) -> dict[str, float]:
    """Dice per label abbreviation of two class maps (NaN where the label is in neither).
    Voxels whose truth is a partial label (a target beyond the classes: "one of these") are
    left out, since which of its classes is right is not known."""
    return _dice(predicted, truth, card.labels)


def _dice(predicted: np.ndarray, truth: np.ndarray, labels: LabelSet) -> dict[str, float]:
    classes = np.arange(len(labels))
    known = truth < len(classes)
    dice = scores(confusion_matrix(predicted[known], truth[known], classes))["dice"]
    return {label.abbreviation: float(d) for label, d in zip(labels.labels, dice, strict=True)}


def drawem9_mapping(labels: LabelSet) -> LabelMapping | None:
    """The shipped mapping of ``labels`` onto DrawEM9 (``<set>-to-drawem9``); None for
    DrawEM9 itself or a set without one."""
    if labels.name == DRAWEM9.name:
        return None
    try:
        return LabelMapping.load(f"{labels.name}-to-{DRAWEM9.name}")
    except LabelMapError:
        return None


def heldout_cases(held_out: tuple[Source, ...],
                  procedural: int) -> dict[str, tuple[synth.Anatomy, ...]]:
    """The evaluation groups: ``procedural`` procedural heads, then each held-out source's
    anatomies (``SourceMix.load(config, held_out=True).sources``)."""
    return {"procedural": (synth.Procedural(),) * procedural,
            **{s.name: s.anatomies for s in held_out}}


def _mean(per_volume: list[dict[str, float]], brain: list[str]) -> dict[str, float]:
    """Mean Dice per label over volumes, and over brain labels (labels without a score in
    any volume, e.g. aseg structures a fetal atlas only has as groups, left out)."""
    mean = {k: round(float(nanmean(np.array([s[k] for s in per_volume]))), 3)
            for k in per_volume[0]}
    mean["brain_mean"] = round(float(nanmean(np.array([mean[k] for k in brain]))), 3)
    return mean


def evaluate_synthetic(model: Model, cases: dict[str, tuple[synth.Anatomy, ...]],
                       ages: tuple[float, ...] = (0.0, 6.0, 12.0), batch_size: int = 8,
                       skull_strip: bool = False) -> dict:
    """Mean per-label Dice per case group (e.g. a held-out source) and age, one volume per
    anatomy of the group (all skull-stripped with ``skull_strip``), with the mean over brain
    labels; for a model of another label set than DrawEM9 also its DrawEM9-mapped Dice
    (``heldout_synthetic_dice_drawem9``)."""
    card = model.card
    mapping = drawem9_mapping(card.labels)
    label_sets = (card.labels.name, *((DRAWEM9.name,) if mapping else ()))
    lookup = class_lookup(card)
    brain = {s.name: [lab.abbreviation for lab in s.labels if lab.index not in s.non_brain]
             for s in (card.labels, DRAWEM9)}
    results: dict[str, dict] = {}
    mapped: dict[str, dict] = {}
    for group, anatomies in cases.items():
        for age in ages:
            own, as_drawem9 = [], []
            for i, anatomy in enumerate(anatomies):
                rng = np.random.default_rng([1, int(round(age * 10)), i])
                image, labels = draw_labelled(card, SynthSource(skull_strip=float(skull_strip)),
                                              rng, label_sets, age, anatomy)
                predicted = predict(model, image, batch_size=batch_size).argmax(axis=0)
                own.append(dice_per_label(predicted, lookup[labels[card.labels.name]], card))
                if mapping:
                    derived = mapping.apply(card.labels.indices[predicted], Path("prediction"))
                    # DrawEM9's indices are its class numbers (0-9)
                    as_drawem9.append(_dice(derived, labels[DRAWEM9.name], DRAWEM9))
            results.setdefault(group, {})[f"{age:g}_months"] = _mean(own, brain[card.labels.name])
            if mapping:
                mapped.setdefault(group, {})[f"{age:g}_months"] = _mean(as_drawem9,
                                                                        brain[DRAWEM9.name])
    metrics = {"heldout_synthetic_dice": results,
               "volumes_per_age": {group: len(a) for group, a in cases.items()}}
    if mapping:
        metrics["heldout_synthetic_dice_drawem9"] = mapped
    return metrics

"""Synthetic training: the starter models, trained on synthetic heads only, by the train level.

    BIDS_INFANTSEG_DATA=$PWD/../shared/data bids_infantseg \
        configs/drawem9-synth-starter.json OUT train -w WORK --minutes 125

reproduces the bundled model: with a synthetic-data configuration in place of the BIDS
dataset, the train level draws its training images from the anatomy sources, ages and
held-out files the configuration names, with the settings of its ``train`` block (the
train level's settings, ``settings.Settings``; flags typed on the command line override
them). ``configs/aseg-synth-starter.json`` trains the lateralised FreeSurfer aseg model the
same way, from the same sources.

Why a starter: the pipeline needs a model that runs end to end without any licensed data.
It is trained only on synthetic images drawn from the configured anatomy sources (real
infant label maps, CC0 fetal atlases, procedural heads; some files held out), then scored on
held-out synthetic volumes at 0, 6 and 12 months; the sources, the split, the recipe and the
scores go into the model card.

Its networks (one shared by every view with ``shared_views``, or one per view) are units of
the training engine (``engine.UnitTrainer``) fed by a synthetic stream
(``batches.SyntheticStream``): a checkpoint in ``WORK/synthetic/<model>/<unit>/`` after every
epoch, so the same command resumes, and a wall-clock budget (``minutes`` less
``eval_minutes``) that stops training in time to score and ship what was learnt. A warm
start (``pretrained``) fixes the architecture and grid; with the same label set the
classifier is kept (no stage I), with another one it is transfer learning as for QuickNAT
(Wang et al.): the body is kept, a fresh classifier for the new labels is trained alone for
``epochs_classifier`` epochs (stage I), then every layer for ``epochs_all`` (stage II).
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from bids_infantseg.model.architectures import build_network
from bids_infantseg.model.card import Model, ModelCard, load_model, load_network, save_model
from bids_infantseg.model.labels import BUILTIN, DRAWEM9, LabelSet
from bids_infantseg.synth.outputs import LABEL_SETS
from bids_infantseg.synth.sources import Source, SourceError, SourceMix
from bids_infantseg.train.batches import SyntheticStream
from bids_infantseg.train.checkpoint import net_weights, read_checkpoint
from bids_infantseg.train.data import (
    SliceSampler,
    SynthSource,
    generator_takes_device,
    target_groups,
)
from bids_infantseg.train.engine import (
    DONE_FILE,
    Progress,
    Recipe,
    Runtime,
    Scorer,
    Unit,
    UnitResult,
    initial_net,
    seed_of,
    train_unit,
    transfers,
    unit_views,
)
from bids_infantseg.train.evaluate import evaluate_synthetic, heldout_cases
from bids_infantseg.train.settings import PROTOCOL, Settings, SettingsError, target_card
from bids_infantseg.train.validation import Protocol

LOGGER = logging.getLogger("bids_infantseg.train")

DESCRIPTION = (
    "Starter model: QuickNAT trained only on synthetic T2w-like images drawn from label maps "
    "({sources}), never on any real infant image (not dHCP, not any real scan). Expect rough "
    "segmentations of real data and fine-tune on real labels before relying on it. "
    "num_filters is {filters} to fit CPU training; 64 (as published) stays the architecture "
    "default. {sharing}{strip}{labels} Metrics are Dice on held-out synthetic volumes, not on "
    "real infants."
)
ASEG_LABELS = (" Labels: lateralised FreeSurfer aseg structures as real infant asegs carry "
               "them; sources without the aseg subdivisions (fetal atlases, procedural heads: "
               "deep grey matter, hippocampus with amygdala, cerebellum, ventricles) were "
               "trained with partial labels (any structure of the group counts as right). "
               "Sagittal slices, which cannot tell left from right, were trained with each "
               "left/right pair as one partial label; at inference their pair mass is split "
               "by the axial and coronal views.")
MODEL_NAME = "{labels}-synth-starter"
"""The starter model of a label set (``drawem9-synth-starter``: ``card.DEFAULT_MODEL``); the
bundled one of each set is ``data/models/<this name>`` (the DrawEM9 one derived from the aseg
network), which ``--label-set`` picks; the default name of a synthetic model."""
STRIP = (" {percent:g}% of training volumes were skull-stripped (zero outside the brain and "
         "its CSF), so brain-only scans are segmented as well as full heads.")
SHARED = ("One network, trained on slices of all three orientations, serves every view (three "
          "times the updates of per-view networks on the same CPU budget).")
SEPARATE = "One network per view, as in QuickNAT."


def synthetic_card(settings: Settings, labels: LabelSet, pretrained: Model | None,
                   sources: str) -> ModelCard:
    """The new model's card (``settings.target_card``) with the starter's description."""
    name = settings.model_name or MODEL_NAME.format(labels=labels.name)
    card = target_card(settings, labels, pretrained, name)
    strip = STRIP.format(percent=100 * settings.skull_strip) if settings.skull_strip else ""
    card.description = DESCRIPTION.format(
        filters=card.architecture.to_dict().get("num_filters"),
        sharing=SHARED if settings.shared_views else SEPARATE, strip=strip, sources=sources,
        labels="" if labels == DRAWEM9 else ASEG_LABELS)
    return card


def warm_start(model: Model, card: ModelCard) -> dict:
    """The provenance of the model a run starts from, for the card: with the card's label set
    its classifier is kept; with another, ``transfers`` says it is replaced."""
    provenance = {**model.provenance(), "training": model.card.training}
    if transfers(model.card, card):
        provenance["transfer"] = {"labels_from": model.card.labels.name,
                                  "labels_to": card.labels.name,
                                  "classifier": "replaced (stage I trains it alone)"}
    return provenance


def starter_units(work: Path, card: ModelCard, shared: bool) -> list[Unit]:
    """The networks to train, each with its checkpoint folder under ``work``."""
    return [Unit(name, Path(work) / name, views, (index,))
            for name, views, index in unit_views(card.views, shared)]


@dataclass
class Trained:
    """The starter's networks per view (one object for every view it serves) and each
    unit's result."""

    nets: dict[str, nn.Module]
    results: dict[str, UnitResult]

    def summary(self) -> dict:
        """What the card's ``training`` says about the run."""
        results = self.results.values()
        seconds = sum(r.train_seconds for r in results)
        return {
            "epochs_done": min(len(r.history) for r in results),
            "stopped_early": any(r.stopped_early for r in results),
            "training_seconds": round(seconds),
            "data_wait_seconds": round(sum(h.get("data_wait_seconds", 0.0)
                                           for r in results for h in r.history)),
            "slices_per_second": round(sum(r.slices for r in results) / seconds, 2)
            if seconds else 0.0,
            "final_loss": {name: r.history[-1]["loss"] if r.history else None
                           for name, r in self.results.items()},
        }


def train_nets(card: ModelCard, units: list[Unit], sampler: SliceSampler, recipe: Recipe, *,
               init: Model | None = None, runtime: Runtime | None = None) -> Trained:
    """Train ``units`` one after the other on ``sampler``'s stream; each resumes from its
    checkpoint and gets an equal share of what is left of the time budget."""
    runtime = runtime or Runtime()
    budget = recipe.time_budget_s
    deadline = None if budget is None else time.monotonic() + budget
    nets, results = {}, {}
    for i, unit in enumerate(units):
        share = recipe if deadline is None else replace(
            recipe, time_budget_s=max(deadline - time.monotonic(), 0.0) / (len(units) - i))
        net = initial_net(card, init, unit.views[0], seed_of(recipe.seed, *unit.key, 99))
        result = train_unit(unit, card, net, SyntheticStream(sampler, unit.views, share), [],
                            share, runtime, from_scratch=init is None)
        net.load_state_dict(result.state)  # a unit finished earlier was not trained here
        net.eval()
        nets.update(dict.fromkeys(unit.views, net))
        results[unit.name] = result
    return Trained(nets, results)


def from_checkpoints(card: ModelCard, units: list[Unit]) -> tuple[Trained, Recipe]:
    """The networks of the units' last checkpoints (to ship a running or interrupted run),
    and the recipe they were trained with."""
    nets, results, recipe = {}, {}, None
    for unit in units:
        tensors, state = read_checkpoint(unit.folder)
        net = build_network(card.architecture)
        net.load_state_dict(net_weights(tensors, "net"))
        net.eval()
        nets.update(dict.fromkeys(unit.views, net))
        results[unit.name] = UnitResult(net.state_dict(), state["history"], stopped_early=not
                                        (unit.folder / DONE_FILE).is_file())
        recipe = Recipe(**state["recipe"])
    return Trained(nets, results), recipe


PARTIAL_LOSS = ("; partial labels (a source's structure without the set's subdivisions): "
                "cross-entropy -log of the probability summed over the group's classes, Dice "
                "over the classes on voxels with a class target only")


def synthetic_recipe(settings: Settings, new_classifier: bool = False) -> Recipe:
    """Stage II only (a fresh network, or a warm start that keeps its classifier), or with
    ``new_classifier`` (a warm start from another label set) stage I first; the generator
    does its own augmentation."""
    return Recipe(epochs_classifier=settings.epochs_classifier if new_classifier else 0,
                  epochs_all=settings.epochs_all, lr=settings.lr, lr_decay=settings.lr_decay,
                  batch_size=settings.batch_size, boundary_weight=settings.boundary_weight,
                  augment=False, amp=settings.amp, seed=settings.seed,
                  steps_per_epoch=settings.steps_per_epoch,
                  time_budget_s=None if settings.minutes is None else
                  60.0 * (settings.minutes - settings.eval_minutes),
                  class_weight_cap=settings.class_weight_cap,
                  compact_checkpoints=settings.compact_checkpoints,
                  score_every=settings.score_every)


def held_out_sources(config: Path) -> tuple[Source, ...]:
    """The configuration's held-out sources (none: the procedural evaluation only)."""
    try:
        return SourceMix.load(config, held_out=True).sources
    except SourceError:
        return ()


def train_synthetic(settings: Settings, args: argparse.Namespace, device: torch.device,
                    scorer: Scorer | None = None) -> int:
    """Train, score and ship a model on the synthetic data ``args.bids_dir`` configures,
    into ``OUTPUT_DIR/models/<name>/``; checkpoints in ``WORK/synthetic/<name>/``."""
    start = time.monotonic()
    config = Path(args.bids_dir)
    label_set = settings.label_set or DRAWEM9.name
    if label_set not in LABEL_SETS:
        raise SettingsError(f"label_set {label_set!r}: synthetic training draws "
                            f"{', '.join(LABEL_SETS)}")
    mix = SourceMix.load(config)
    held_out = held_out_sources(config)
    pretrained = None if settings.from_scratch else load_network(settings.pretrained)
    card = synthetic_card(settings, BUILTIN[label_set], pretrained,
                          ", ".join(s.name for s in mix.sources))
    # the generator paints labels on the CPU (one thread) and only the image on a device:
    # worker processes (--nprocs > 1) draw faster than the training process alone on a GPU
    generator_device = (device if generator_takes_device() and int(args.nprocs or 1) <= 1
                        else torch.device("cpu"))
    source = SynthSource(mix, skull_strip=settings.skull_strip, device=str(generator_device))
    provenance = warm_start(pretrained, card) if pretrained else None
    work = Path(args.work_dir or Path(args.output_dir) / ".work") / "synthetic" / card.name
    if settings.scorer == PROTOCOL:  # its cases are drawn once, cached beside the checkpoints
        scorer = Protocol.from_config(config, work / "protocol")
    units = starter_units(work, card, settings.shared_views)
    recipe = synthetic_recipe(settings, new_classifier=pretrained is not None
                              and transfers(pretrained.card, card))
    # volumes are drawn ahead by --nprocs - 1 processes, unless the generator is on the GPU
    workers = 0 if generator_device.type == "cuda" else max(int(args.nprocs or 1) - 1, 0)
    if args.from_checkpoint:
        trained, recipe = from_checkpoints(card, units)
    else:
        sampler = SliceSampler(card, source, seed=settings.seed, workers=workers)
        try:
            epochs = len(recipe.schedule(from_scratch=pretrained is None))
            runtime = Runtime(device=device, tracker=Progress(len(units) * epochs),
                              scorer=scorer)
            trained = train_nets(card, units, sampler, recipe, init=pretrained,
                                 runtime=runtime)
        finally:
            sampler.close()
    card.training = {
        "data": {**source.to_dict(), "config": mix.config,
                 "held_out": [s.describe() for s in held_out],
                 "real_infant_images": "none (not dHCP, not any real infant scan)"},
        "recipe": {**recipe.to_dict(), "shared_views": settings.shared_views,
                   "optimizer": "Adam", "scheduler": "ExponentialLR (lr_decay per epoch)",
                   "scorer": settings.scorer,
                   "loss": "median-frequency + boundary weighted cross-entropy + soft Dice"
                   + (PARTIAL_LOSS if target_groups(card) else ""),
                   "threads": torch.get_num_threads(), "workers": workers,
                   "device": str(device)},
        **trained.summary(),
    }
    if provenance:
        card.training["warm_start"] = provenance
    out = Path(args.output_dir) / "models" / card.name
    save_model(out, card, trained.nets)
    shipped = load_model(out)  # score what ships (its weights' dtype), not the fp32 copy
    cases = heldout_cases(tuple(held_out), settings.eval_procedural)
    card.metrics = evaluate_synthetic(shipped, cases)
    stripped = evaluate_synthetic(shipped, cases, skull_strip=True)
    for key in ("heldout_synthetic_dice", "heldout_synthetic_dice_drawem9"):
        if key in stripped:
            card.metrics[f"{key}_skull_stripped"] = stripped[key]
    save_model(out, card, trained.nets)
    LOGGER.info("wrote %s in %.0f s; held-out Dice %s", out, time.monotonic() - start,
                card.metrics["heldout_synthetic_dice"])
    return 0


if __name__ == "__main__":  # the old entry point's users get the new command, not silence
    raise SystemExit("bids_infantseg.train.starter: synthetic training is now the train level: "
                     "bids_infantseg CONFIG OUTPUT_DIR train -w WORK (docs/training.md maps the "
                     "old options)")

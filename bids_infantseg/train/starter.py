"""Train the bundled starter model on synthetic heads only, through the training engine.

    BIDS_INFANTSEG_DATA=$PWD/../shared/data python -m bids_infantseg.train.starter \
        --config configs/drawem9-synth-starter.json --out OUT --work WORK --minutes 125

reproduces the bundled model: the config names the anatomy sources, ages and held-out files,
and in its ``starter`` block the label set, the recipe and the model to warm-start from
(option names, ``_`` for ``-``); flags typed on the command line override the file. Without
``--config`` it draws procedural heads only, with the defaults below.
``configs/aseg-synth-starter.json`` trains the lateralised FreeSurfer aseg model the same
way, from the same sources.

Why a starter: the pipeline needs a model that runs end to end without any licensed data.
It is trained only on synthetic images drawn from the configured anatomy sources (real
infant label maps, CC0 fetal atlases, procedural heads; some files held out), then scored on
held-out synthetic volumes at 0, 6 and 12 months; the sources, the split, the recipe and the
scores go into the model card.

Its networks (one shared by every view, or one per view with ``--separate-views``) are units
of the training engine (``engine.train_unit``) fed by a synthetic stream
(``batches.SyntheticStream``): a checkpoint in ``WORK/<unit>/`` after every epoch, so the
same command resumes, and a wall-clock budget (``--minutes`` less ``--eval-minutes``) that
stops training in time to score and ship what was learnt. A warm start (``--init``) needs
the new card's architecture; with the same label set the classifier is kept (no stage I),
with another one it is transfer learning as for QuickNAT (Wang et al.): the body is kept, a
fresh 1x1 classifier for the new labels is trained alone for ``--epochs-classifier`` epochs
(stage I), then every layer for ``--epochs`` (stage II).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from bids_infantseg.inference import resolve_device
from bids_infantseg.model.architectures import build_network
from bids_infantseg.model.card import (
    Model,
    ModelCard,
    ModelError,
    load_model,
    save_model,
)
from bids_infantseg.model.labels import BUILTIN, DRAWEM9, LabelSet
from bids_infantseg.model.quicknat import QuickNAT, QuickNATConfig
from bids_infantseg.synth.outputs import LABEL_SETS
from bids_infantseg.synth.sources import SourceMix
from bids_infantseg.train.batches import SyntheticStream
from bids_infantseg.train.checkpoint import net_weights, read_checkpoint
from bids_infantseg.train.data import PROCEDURAL_ONLY, SliceSampler, SynthSource, target_groups
from bids_infantseg.train.engine import (
    DONE_FILE,
    Progress,
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
from bids_infantseg.train.evaluate import evaluate_synthetic, heldout_cases

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
bundled one of each set is ``data/models/<this name>``, which ``--label-set`` picks."""
STRIP = (" {percent:g}% of training volumes were skull-stripped (zero outside the brain and "
         "its CSF), so brain-only scans are segmented as well as full heads.")
SHARED = ("One network, trained on slices of all three orientations, serves every view (three "
          "times the updates of per-view networks on the same CPU budget).")
SEPARATE = "One network per view, as in QuickNAT."


def starter_card(filters: int, views: tuple[str, ...], grid: int, voxel_size: float,
                 shared: bool, version: str = "0.1.0", skull_strip: float = 0.0,
                 sources: str = "procedural infant heads", labels: LabelSet = DRAWEM9) -> ModelCard:
    strip = STRIP.format(percent=100 * skull_strip) if skull_strip else ""
    return ModelCard(
        name=MODEL_NAME.format(labels=labels.name),
        version=version,
        architecture=QuickNATConfig(num_classes=len(labels), num_filters=filters,
                                    kernel_size=5, dropout=0.1),
        labels=labels,
        voxel_size_mm=voxel_size,
        grid_shape=(grid, grid, grid),
        views={view: 1.0 for view in views},
        description=DESCRIPTION.format(filters=filters, sharing=SHARED if shared else SEPARATE,
                                       strip=strip, sources=sources,
                                       labels="" if labels == DRAWEM9 else ASEG_LABELS),
        weights_dtype="float16",
    )


def warm_start(init: str, card: ModelCard) -> tuple[Model, dict]:
    """The model ``init`` to start from, and its provenance for the card; refused unless it
    has the new card's architecture (but for its classifier's classes) and views. With the
    card's label set its classifier is kept; with another, ``transfers`` says it is replaced."""
    model = load_model(init)
    body = replace(model.card.architecture, num_classes=card.architecture.num_classes)
    if body != card.architecture:
        raise ModelError(f"{init}: architecture differs from the new card's "
                         f"({model.card.architecture} vs {card.architecture})")
    missing = [view for view in card.views if view not in model.nets]
    if missing:
        raise ModelError(f"{init}: no {', '.join(missing)} network")
    provenance = {**model.provenance(), "training": model.card.training}
    if transfers(model.card, card):
        provenance["transfer"] = {"labels_from": model.card.labels.name,
                                  "labels_to": card.labels.name,
                                  "classifier": "replaced (stage I trains it alone)"}
    return model, provenance


def starter_units(work: Path, card: ModelCard, shared: bool) -> list[Unit]:
    """The networks to train, each with its checkpoint folder under ``work``."""
    return [Unit(name, Path(work) / name, views, (index,))
            for name, views, index in unit_views(card.views, shared)]


@dataclass
class Trained:
    """The starter's networks per view (one object for every view it serves) and each
    unit's result."""

    nets: dict[str, QuickNAT]
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="model folder to write")
    parser.add_argument("--config", type=Path,
                        help="anatomy sources, ages, held-out files and (its 'starter' block) "
                             "the recipe (JSON; configs/)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/starter-work"),
                        help="checkpoint folder (resumes from it)")
    parser.add_argument("--minutes", type=float, default=60.0, help="wall-clock budget, all in")
    parser.add_argument("--eval-minutes", type=float, default=5.0,
                        help="part of the budget kept for the held-out evaluation")
    parser.add_argument("--filters", type=int, default=16)
    parser.add_argument("--views", nargs="+", default=["axial", "coronal", "sagittal"])
    parser.add_argument("--grid", type=int, default=128)
    parser.add_argument("--voxel-size", type=float, default=1.5)
    parser.add_argument("--label-set", choices=LABEL_SETS, default=DRAWEM9.name,
                        help="labels the model outputs (aseg: lateralised FreeSurfer aseg)")
    parser.add_argument("--epochs", type=int, default=12, help="stage II epochs (all layers)")
    parser.add_argument("--epochs-classifier", type=int, default=3,
                        help="stage I epochs (the new classifier alone), only when --init has "
                             "another label set")
    parser.add_argument("--steps-per-epoch", type=int, default=60,
                        help="steps per epoch, each one batch of every view")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--lr-decay", type=float, default=0.8)
    parser.add_argument("--class-weight-cap", type=float,
                        help="largest class weight (median frequency; default: none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skull-strip", type=float, default=0.5,
                        help="share of training volumes skull-stripped")
    parser.add_argument("--init", help="warm start from this model (name or folder)")
    parser.add_argument("--version", default="0.1.0", help="version written to the card")
    parser.add_argument("--separate-views", action="store_true",
                        help="one network per view (default: one network shared by all views)")
    parser.add_argument("--from-checkpoint", action="store_true",
                        help="do not train: ship the last checkpoint in --work as it is")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes drawing synthetic volumes ahead of training")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (on a shared 2-core CPU, 1 was fastest)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda[:N] or auto")
    parser.add_argument("--eval-procedural", type=int, default=2,
                        help="procedural held-out volumes per age")
    return parser


PARTIAL_LOSS = ("; partial labels (a source's structure without the set's subdivisions): "
                "cross-entropy -log of the probability summed over the group's classes, Dice "
                "over the classes on voxels with a class target only")
CONFIG_BLOCK = "starter"
NOT_IN_CONFIG = {"config", "out", "work", "from_checkpoint"}  # where and what to do: flags


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Defaults, then the config's ``starter`` block, then the flags on the command line."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.config:
        try:
            block = json.loads(args.config.read_text()).get(CONFIG_BLOCK, {})
        except (OSError, ValueError) as exc:
            parser.error(f"{args.config}: {exc}")
        settings = {key.replace("-", "_"): value for key, value in block.items()}
        unknown = sorted(set(settings) - (set(vars(args)) - NOT_IN_CONFIG))
        if unknown:
            parser.error(f"{args.config}: unknown {CONFIG_BLOCK} setting(s) "
                         f"{', '.join(unknown)}")
        parser.set_defaults(**settings)
        args = parser.parse_args(argv)
    return args


def starter_recipe(args: argparse.Namespace, new_classifier: bool = False) -> Recipe:
    """Stage II only (a fresh network, or a warm start that keeps its classifier), or with
    ``new_classifier`` (a warm start from another label set) stage I first."""
    return Recipe(epochs_classifier=args.epochs_classifier if new_classifier else 0,
                  epochs_all=args.epochs, lr=args.lr,
                  lr_decay=args.lr_decay, batch_size=args.batch_size, augment=False,
                  seed=args.seed, steps_per_epoch=args.steps_per_epoch,
                  time_budget_s=60.0 * (args.minutes - args.eval_minutes),
                  class_weight_cap=args.class_weight_cap)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    start = time.monotonic()
    device = resolve_device(args.device)
    mix = SourceMix.load(args.config) if args.config else PROCEDURAL_ONLY
    held_out = SourceMix.load(args.config, held_out=True).sources if args.config else ()
    source = SynthSource(mix, skull_strip=args.skull_strip)
    shared = not args.separate_views
    card = starter_card(args.filters, tuple(args.views), args.grid, args.voxel_size,
                        shared=shared, version=args.version, skull_strip=args.skull_strip,
                        sources=", ".join(s.name for s in mix.sources),
                        labels=BUILTIN[args.label_set])
    init, provenance = warm_start(args.init, card) if args.init else (None, None)
    units = starter_units(args.work, card, shared)
    recipe = starter_recipe(args, new_classifier=init is not None and transfers(init.card, card))
    if args.from_checkpoint:
        trained, recipe = from_checkpoints(card, units)
    else:
        sampler = SliceSampler(card, source, seed=args.seed, workers=args.workers)
        try:
            epochs = len(recipe.schedule(from_scratch=init is None))
            runtime = Runtime(device=device, tracker=Progress(len(units) * epochs))
            trained = train_nets(card, units, sampler, recipe, init=init, runtime=runtime)
        finally:
            sampler.close()
    card.training = {
        "data": {**source.to_dict(), "config": mix.config,
                 "held_out": [s.describe() for s in held_out],
                 "real_infant_images": "none (not dHCP, not any real infant scan)"},
        "recipe": {**recipe.to_dict(), "shared_views": shared, "optimizer": "Adam",
                   "loss": "median-frequency + boundary weighted cross-entropy + soft Dice"
                   + (PARTIAL_LOSS if target_groups(card) else ""),
                   "threads": args.threads, "workers": args.workers, "device": str(device)},
        **trained.summary(),
    }
    if provenance:
        card.training["warm_start"] = provenance
    save_model(args.out, card, trained.nets)
    shipped = load_model(args.out)  # score what ships (float16 weights), not the fp32 copy
    cases = heldout_cases(tuple(held_out), args.eval_procedural)
    card.metrics = evaluate_synthetic(shipped, cases)
    stripped = evaluate_synthetic(shipped, cases, skull_strip=True)
    for key in ("heldout_synthetic_dice", "heldout_synthetic_dice_drawem9"):
        if key in stripped:
            card.metrics[f"{key}_skull_stripped"] = stripped[key]
    save_model(args.out, card, trained.nets)
    LOGGER.info("wrote %s in %.0f s; held-out Dice %s", args.out, time.monotonic() - start,
                card.metrics["heldout_synthetic_dice"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Train the bundled starter model on synthetic heads only, on a wall-clock budget.

    BIDS_INFANTSEG_DATA=../shared/data python -m bids_infantseg.train.starter \
        --config configs/drawem9-synth-starter.json \
        --out bids_infantseg/data/models/drawem9-synth-starter --minutes 60
    # warm start: fine-tune the bundled model (fresh optimiser) as a new version
    ... --init drawem9-synth-starter --version 0.4.0 --lr 1e-3 --lr-decay 0.85

Why a starter: the pipeline needs a model that runs end to end without any licensed data.
It is trained only on synthetic images drawn from the configured anatomy sources (real
infant label maps, CC0 fetal atlases, procedural heads; some files held out), then scored on
held-out synthetic volumes at 0, 6 and 12 months; the sources, the split, the recipe and the
scores go into the model card. Without ``--config`` it draws procedural heads only.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import torch

from bids_infantseg.model.card import DEFAULT_MODEL, ModelCard, ModelError, load_model, save_model
from bids_infantseg.model.labels import DRAWEM9
from bids_infantseg.model.quicknat import QuickNATConfig
from bids_infantseg.synth import Procedural
from bids_infantseg.synth.sources import SourceMix
from bids_infantseg.train.checkpoint import CHECKPOINT_STATE, save_checkpoint
from bids_infantseg.train.data import PROCEDURAL_ONLY, SliceSampler, SynthSource
from bids_infantseg.train.evaluate import evaluate_synthetic
from bids_infantseg.train.loop import (
    TrainConfig,
    TrainResult,
    adam_per_network,
    nets_from_checkpoint,
    train,
)

LOGGER = logging.getLogger("bids_infantseg.train")

DESCRIPTION = (
    "Starter model: QuickNAT trained only on synthetic T2w-like images drawn from label maps "
    "({sources}), never on any real infant image (not dHCP, not any real scan). Expect rough "
    "segmentations of real data and fine-tune on real labels before relying on it. "
    "num_filters is {filters} to fit CPU training; 64 (as published) stays the architecture "
    "default. {sharing}{strip} Metrics are Dice on held-out synthetic volumes, not on real "
    "infants."
)
STRIP = (" {percent:g}% of training volumes were skull-stripped (zero outside the brain and "
         "its CSF), so brain-only scans are segmented as well as full heads.")
SHARED = ("One network, trained on slices of all three orientations, serves every view (three "
          "times the updates of per-view networks on the same CPU budget).")
SEPARATE = "One network per view, as in QuickNAT."


def starter_card(filters: int, views: tuple[str, ...], grid: int, voxel_size: float,
                 shared: bool, version: str = "0.1.0", skull_strip: float = 0.0,
                 sources: str = "procedural infant heads") -> ModelCard:
    strip = STRIP.format(percent=100 * skull_strip) if skull_strip else ""
    return ModelCard(
        name=DEFAULT_MODEL,
        version=version,
        architecture=QuickNATConfig(num_classes=len(DRAWEM9), num_filters=filters,
                                    kernel_size=5, dropout=0.1),
        labels=DRAWEM9,
        voxel_size_mm=voxel_size,
        grid_shape=(grid, grid, grid),
        views={view: 1.0 for view in views},
        description=DESCRIPTION.format(filters=filters, sharing=SHARED if shared else SEPARATE,
                                       strip=strip, sources=sources),
        weights_dtype="float16",
    )


def warm_start(work: Path, init: str, card: ModelCard, config: TrainConfig,
               data: SliceSampler) -> dict:
    """Seed ``work`` with a checkpoint of ``init``'s weights and a fresh optimiser, so
    ``train`` starts from them; returns the provenance for the card. An existing checkpoint
    in ``work`` is left alone (``train`` resumes from it)."""
    model = load_model(init)
    if model.card.architecture != card.architecture or model.card.labels != card.labels:
        raise ModelError(f"{init}: architecture or label set differs from the new card's")
    provenance = {**model.provenance(), "training": model.card.training}
    if (Path(work) / CHECKPOINT_STATE).is_file():
        return provenance
    first = model.nets[next(iter(card.views))]
    nets = (dict.fromkeys(card.views, first) if config.shared_views
            else {view: model.nets[view] for view in card.views})
    save_checkpoint(Path(work), nets, adam_per_network(nets, config.learning_rate), {
        "epochs_done": 0, "history": [], "class_counts": data.class_counts().tolist(),
        "config": config.to_dict(),
    })
    return provenance


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="model folder to write")
    parser.add_argument("--config", type=Path,
                        help="anatomy sources, ages and held-out files (JSON; configs/)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/starter-work"),
                        help="checkpoint folder (resumes from it)")
    parser.add_argument("--minutes", type=float, default=60.0, help="wall-clock budget, all in")
    parser.add_argument("--eval-minutes", type=float, default=5.0,
                        help="part of the budget kept for the held-out evaluation")
    parser.add_argument("--filters", type=int, default=16)
    parser.add_argument("--views", nargs="+", default=["axial", "coronal", "sagittal"])
    parser.add_argument("--grid", type=int, default=128)
    parser.add_argument("--voxel-size", type=float, default=1.5)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--steps-per-epoch", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--lr-decay", type=float, default=0.8)
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
    parser.add_argument("--eval-procedural", type=int, default=2,
                        help="procedural held-out volumes per age")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    start = time.monotonic()
    mix = SourceMix.load(args.config) if args.config else PROCEDURAL_ONLY
    held_out = SourceMix.load(args.config, held_out=True).sources if args.config else ()
    source = SynthSource(mix, skull_strip=args.skull_strip)
    card = starter_card(args.filters, tuple(args.views), args.grid, args.voxel_size,
                        shared=not args.separate_views, version=args.version,
                        skull_strip=args.skull_strip,
                        sources=", ".join(s.name for s in mix.sources))
    config = TrainConfig(epochs=args.epochs, steps_per_epoch=args.steps_per_epoch,
                         batch_size=args.batch_size, learning_rate=args.lr,
                         lr_decay=args.lr_decay, seed=args.seed,
                         shared_views=not args.separate_views,
                         time_budget_s=60.0 * (args.minutes - args.eval_minutes))
    data = SliceSampler(card, source, seed=args.seed, workers=args.workers)
    init = warm_start(args.work, args.init, card, config, data) if args.init else None
    if args.from_checkpoint:
        nets, state = nets_from_checkpoint(args.work, card)
        config = TrainConfig(**state["config"])
        result = TrainResult(nets, state["epochs_done"], state["history"], stopped_early=True)
    else:
        result = train(card, data, config, args.work)
    data.close()
    card.training = {
        "data": {**source.to_dict(), "config": mix.config,
                 "held_out": [s.describe() for s in held_out],
                 "real_infant_images": "none (not dHCP, not any real infant scan)"},
        "recipe": {**config.to_dict(), "optimizer": "Adam",
                   "loss": "median-frequency + boundary weighted cross-entropy + soft Dice",
                   "slices_per_view_batch": args.batch_size, "threads": args.threads,
                   "device": "cpu"},
        "epochs_done": result.epochs_done,
        "stopped_early": result.stopped_early,
        "training_seconds": round(sum(h["seconds"] for h in result.history)),
        "slices_per_second": round(result.slices_per_second, 2),
        "final_loss": result.history[-1]["loss"] if result.history else None,
    }
    if init:
        card.training["warm_start"] = init
    save_model(args.out, card, result.nets)
    shipped = load_model(args.out)  # score what ships (float16 weights), not the fp32 copy
    cases = {"procedural": (Procedural(),) * args.eval_procedural,
             **{s.name: s.anatomies for s in held_out}}
    card.metrics = evaluate_synthetic(shipped, cases)
    stripped = evaluate_synthetic(shipped, cases, skull_strip=True)
    card.metrics["heldout_synthetic_dice_skull_stripped"] = stripped["heldout_synthetic_dice"]
    save_model(args.out, card, result.nets)
    LOGGER.info("wrote %s in %.0f s; held-out Dice %s", args.out, time.monotonic() - start,
                card.metrics["heldout_synthetic_dice"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

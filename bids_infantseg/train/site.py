"""The train level: ``bids_infantseg BIDS_DIR OUTPUT_DIR train --labels DERIV_DIR ...``.

(With a synthetic-data configuration in place of BIDS_DIR, ``run_train`` hands the run to
``starter.train_synthetic``.)

Finds the labelled T2w scans, caches them on the model grid, cross-validates by subject,
trains the final model on every subject and writes it, with its card and the
cross-validation tables and figures, to ``OUTPUT_DIR/models/<name>/``. Under ``torchrun``
every process runs this same function (see ``ddp.py``).

Work folder (``-w``, default ``OUTPUT_DIR/.work``): ``train_cache/`` (preprocessed volumes,
shared by every run) and ``train/<name>-<id>/`` (one run: checkpoints, finished units and
folds). ``<id>`` hashes the settings, the pretrained weights and the data, so rerunning the
same command resumes a killed run, and changing any of them starts a new one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from pathlib import Path

import torch

from bids_infantseg import __version__
from bids_infantseg.core.inference import DeviceError, resolve_device
from bids_infantseg.io.derivatives import (
    OutputDirError,
    atomic_write_tsv,
    check_output_dir,
    dataset_name,
    write_bidsignore,
    write_dataset_description,
)
from bids_infantseg.io.discovery import DiscoveryError, FilterFileError, load_filter_file
from bids_infantseg.model.architectures import architecture_of
from bids_infantseg.model.card import Model, ModelCard, ModelError, load_network, save_model
from bids_infantseg.model.labels import LabelSet
from bids_infantseg.synth.sources import SourceError
from bids_infantseg.train import ddp, outputs
from bids_infantseg.train.augment import DEFAULT as AUGMENTATION
from bids_infantseg.train.cache import Volume, prepare
from bids_infantseg.train.crossval import FoldError, Trainer, make_folds
from bids_infantseg.train.engine import Progress, Recipe, Runtime
from bids_infantseg.train.pairs import TrainDataError, TrainingData, find_training_data
from bids_infantseg.train.settings import (
    PROTOCOL,
    SITE,
    SYNTHETIC,
    Settings,
    SettingsError,
    from_args,
    is_synthetic,
    load_scorer,
    target_card,
)
from bids_infantseg.train.starter import train_synthetic
from bids_infantseg.utils.errors import InfantsegError

LOGGER = logging.getLogger("bids_infantseg.train")

class TrainError(InfantsegError):
    """A usage error or unusable input of the train level; one line, exit status 2."""


def run_train(args: argparse.Namespace, *, runtime_hook=None) -> int:
    """Run the train level; 0 on success. Raises :class:`TrainError` for usage errors.
    ``args`` come from ``cli.parse_args`` (the settings files already its defaults)."""
    synthetic = is_synthetic(args.bids_dir)
    if not synthetic and Path(args.bids_dir).suffix.lower() == ".json":
        raise TrainError(f"{args.bids_dir}: no such synthetic-data configuration")
    try:
        settings = from_args(args, SYNTHETIC if synthetic else SITE)
        if settings.scorer == PROTOCOL and not synthetic:
            raise SettingsError("scorer protocol: it scores synthetic training (its held-out "
                                "maps come from the synthetic-data configuration); give a site "
                                "run MODULE:FUNCTION")
        scorer = load_scorer(settings.scorer)
        place = ddp.from_environment()
        device = resolve_device(args.device)
    except (SettingsError, DeviceError) as exc:
        raise TrainError(str(exc)) from exc
    if device.type == "cuda" and place.enabled:
        device = torch.device("cuda", place.local_rank)
        torch.cuda.set_device(device)
    if not place.main:
        logging.getLogger("bids_infantseg").setLevel(logging.WARNING)
    if getattr(args, "omp_nthreads", None):
        torch.set_num_threads(args.omp_nthreads)
    ddp.init(place, device)
    try:
        if synthetic:
            return train_synthetic(settings, args, device, scorer)
        return _train(settings, args, place, device, scorer, runtime_hook)
    except (SettingsError, TrainDataError, DiscoveryError, FilterFileError, OutputDirError,
            ModelError, FoldError, SourceError) as exc:
        raise TrainError(str(exc)) from exc
    finally:
        ddp.shutdown()


def default_name(labels: LabelSet, pretrained: Model | None) -> str:
    return f"{labels.name}-scratch" if pretrained is None else \
        f"{labels.name}-from-{pretrained.card.name}"


def _run_id(settings: Settings, card: ModelCard, pretrained: Model | None,
            volumes: list[Volume]) -> str:
    card_part = {k: v for k, v in card.to_dict().items() if k not in ("training", "metrics",
                                                                       "name", "version")}
    source = json.dumps([settings.recipe(), card_part, pretrained.sha256 if pretrained else None,
                         sorted(v.folder.name for v in volumes)], sort_keys=True, default=str)
    return hashlib.sha256(source.encode()).hexdigest()[:10]


def _recipe_for(settings: Settings):
    def recipe(lr: float) -> Recipe:
        return Recipe(settings.epochs_classifier, settings.epochs_all, lr, settings.lr_decay,
                      settings.batch_size, settings.max_slices_per_epoch,
                      settings.boundary_weight, settings.augment, settings.amp, settings.seed,
                      class_weight_cap=settings.class_weight_cap,
                      compact_checkpoints=settings.compact_checkpoints,
                      score_every=settings.score_every)
    return recipe


def _train(settings: Settings, args: argparse.Namespace, place: ddp.Dist,
           device: torch.device, scorer, runtime_hook) -> int:
    start = time.monotonic()
    bids_dir = Path(args.bids_dir).resolve()
    output_dir = Path(args.output_dir).resolve()
    work_dir = Path(args.work_dir or output_dir / ".work").resolve()
    check_output_dir(output_dir, bids_dir)
    filters = load_filter_file(args.bids_filter_file) if args.bids_filter_file else None
    data: TrainingData = find_training_data(
        bids_dir, settings.labels, desc=settings.labels_desc,
        labels_map=settings.labels_map, output_dir=output_dir,
        work_dir=work_dir, participant_labels=args.participant_label,
        session_labels=args.session_label, bids_filters=filters)
    pretrained = None if settings.from_scratch else load_network(settings.pretrained)
    card = target_card(settings, data.label_set, pretrained,
                       settings.model_name or default_name(data.label_set, pretrained))
    processes = max(1, int(getattr(args, "nprocs", 1) or 1) // place.world)  # per rank
    cache = prepare(data.pairs, card, work_dir / "train_cache", rank=place.rank,
                    world=place.world, processes=processes, barrier=ddp.barrier)
    volumes = cache.volumes
    if not volumes:
        raise TrainDataError("no usable training volume (see the log for why each was left "
                             "out)")
    scheme, k = settings.cv_scheme
    folds = make_folds([v.subject for v in volumes], scheme, k, settings.seed)
    run_dir = work_dir / "train" / f"{card.name}-{_run_id(settings, card, pretrained, volumes)}"
    rates = settings.learning_rates
    units = 1 if settings.shared_views else len(card.views)
    epochs = len(Recipe(settings.epochs_classifier, settings.epochs_all, rates[0])
                 .schedule(pretrained is None))
    total = units * epochs * (len(rates) * len(folds) + (1 if settings.final else 0))
    runtime = Runtime(device=device, place=place, workers=processes - 1,
                      eval_batch_size=settings.batch_size, progress=True,
                      tracker=Progress(total), scorer=scorer)
    if runtime_hook:
        runtime_hook(runtime)
    LOGGER.info("run folder %s: %d fold(s) x %d rate(s)%s, %d network(s) of %d epoch(s) each "
                "on %s (%d process(es))", run_dir, len(folds), len(rates),
                " + final model" if settings.final else "", units, epochs, device, place.world)
    trainer = Trainer(card, pretrained, _recipe_for(settings), runtime, run_dir, volumes,
                      shared_views=settings.shared_views, curves=settings.curves)
    results = [trainer.run_fold(fold, i, lr) for i, lr in enumerate(rates) for fold in folds]
    best_lr = outputs.chosen_lr(results, volumes, card.labels) if results else rates[0]
    final = trainer.final_nets(rates.index(best_lr), best_lr) if settings.final else None

    if place.main:
        model_dir = output_dir / "models" / card.name
        if not (output_dir / "dataset_description.json").is_file():
            write_dataset_description(output_dir, bids_dir=bids_dir, version=__version__)
            write_bidsignore(output_dir)
        cv_summary = None
        title = f"{card.name}: {scheme}{f':{k}' if k else ''}, lr {best_lr:g}"
        if results:
            cv_summary = outputs.write_cv(model_dir / "cv", folds=folds, results=results,
                                          volumes=volumes, labels=card.labels,
                                          best_lr=best_lr, title=title)
        skipped = data.skipped + cache.skipped
        if skipped:
            atomic_write_tsv(model_dir / "skipped.tsv", outputs.skipped_table(skipped))
        if final is not None:
            nets, curves, seconds, slices = final
            _describe(card, settings, data, volumes, pretrained, trainer, bids_dir, best_lr,
                      cv_summary, curves, seconds, slices, place, device, skipped)
            save_model(model_dir, card, nets)
        LOGGER.info("done in %.0f s: %s", time.monotonic() - start, model_dir)
    ddp.barrier()
    return 0


def _labels_origin(settings: Settings, labels: LabelSet) -> str:
    where = f"from {Path(settings.labels).name}"
    if settings.labels_map:
        return f"labels {where} mapped to {labels.name} by {settings.labels_map}"
    return f"labels desc-{settings.labels_desc or labels.name} {where}"


def _describe(card: ModelCard, settings: Settings, data: TrainingData, volumes: list[Volume],
              pretrained: Model | None, trainer: Trainer, bids_dir: Path, best_lr: float,
              cv_summary: dict | None, curves: dict, seconds: float, slices: int,
              place: ddp.Dist, device: torch.device, skipped: list) -> None:
    """Fill the card's description, training and metrics."""
    subjects = sorted({v.subject for v in volumes})
    cpu = sum(h.get("cpu_seconds", 0.0) for history in curves.values() for h in history)
    ages = sorted(v.age_weeks for v in volumes if v.age_weeks is not None)
    origin = ("trained from scratch" if pretrained is None else
              f"fine-tuned from {pretrained.card.name} {pretrained.card.version} ("
              + ("new classifier for this label set" if trainer.replaces_classifier
                 else "same label set, classifier kept") + ")")
    card.description = (
        f"{architecture_of(card.architecture).name} {origin} on {len(volumes)} scan(s) of "
        f"{len(subjects)} subject(s) of "
        f"{dataset_name(bids_dir)}, {_labels_origin(settings, card.labels)}. "
        + (f"Cross-validated ({settings.cv}): mean Dice over brain labels "
           f"{cv_summary['brain_dice_mean']:.3f} on held-out subjects. " if cv_summary else "")
        + "See training and metrics for the recipe and the per-label scores.")
    recipe = settings.recipe()
    recipe.update({
        "learning_rate": best_lr, "optimizer": "Adam",
        "loss": "median-frequency and boundary weighted cross-entropy + soft Dice (QuickNAT)",
        "stages": ("stage II only (all layers)" if pretrained is None else
                   "stage I classifier alone, then stage II all layers"),
        "augmentation": vars(AUGMENTATION) if settings.augment else None,
        "lr_grid_note": ("nine rates, half a decade apart, 1e-5..1e-1; the best mean "
                         "cross-validated Dice over brain labels chosen"
                         if settings.lr_grid else None),
    })
    card.training = {
        "pretrained": None if pretrained is None else {
            **pretrained.provenance(), "classifier": "replaced" if trainer.replaces_classifier
            else "kept"},
        "recipe": recipe,
        "data": {
            "dataset": dataset_name(bids_dir), "labels_dir": str(settings.labels),
            "labels_desc": settings.labels_desc, "labels_map": settings.labels_map,
            "lookup_table": str(data.table) if data.table else "built-in",
            "scans": len(volumes), "subjects": len(subjects), "subject_ids": subjects,
            "age_weeks": {"min": round(ages[0], 2), "max": round(ages[-1], 2),
                          "median": round(ages[len(ages) // 2], 2)} if ages else None,
            "left_out": len(skipped),
        },
        "final_model": {"epochs": {n: len(h) for n, h in curves.items()},
                        "final_loss": outputs.mean_final_loss(curves),
                        "training_seconds": round(seconds, 1),
                        "slices_per_second": round(slices / seconds, 2) if seconds else None,
                        # CPU time is this process's: a rate only for one process
                        "slices_per_cpu_second": round(slices / cpu, 2)
                        if cpu and place.world == 1 else None,
                        "device": str(device), "processes": place.world},
        "software": f"bids_infantseg {__version__}, torch {torch.__version__}",
    }
    card.metrics = {"cross_validation": {"scheme": settings.cv, **cv_summary}} \
        if cv_summary else {}

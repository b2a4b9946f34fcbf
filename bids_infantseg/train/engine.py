"""Transfer learning as published for QuickNAT, one network at a time.

A *unit* is one network trained on cached volumes: one view's network (QuickNAT trains one
per view), or with ``shared_views`` one network on the slices of every view. From a
pretrained model the classifier is replaced when the label set differs, then

- stage I trains the classifier alone (everything else frozen: no gradients, batch norm
  statistics and dropout fixed), ``epochs_classifier`` epochs;
- stage II trains every layer, ``epochs_all`` epochs.

From scratch there is only stage II. Adam throughout; QuickNAT's loss (median-frequency and
boundary weighted cross-entropy plus soft Dice). An epoch is every slice with signal of the
training volumes in the unit's views, or ``max_slices_per_epoch`` of them drawn anew each
epoch; under DDP each rank takes an equal share and gradients are averaged.

After every epoch rank 0 writes a checkpoint (weights, Adam moments, history) into the
unit's folder, so a killed run resumes at the next epoch; every random draw is seeded by
(seed, unit, epoch[, rank]), so the resumed run ends with the weights an uninterrupted one
would have. With held-out volumes, each epoch also records per-label accuracy and Dice of the
unit's network on them (the learning curves).
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from bids_infantseg.derivatives import atomic_write_json
from bids_infantseg.files import atomic_write
from bids_infantseg.inference import predict
from bids_infantseg.metrics import confusion_matrix, scores
from bids_infantseg.model.card import Model, ModelCard
from bids_infantseg.model.quicknat import QuickNAT
from bids_infantseg.train import ddp
from bids_infantseg.train.cache import SliceDataset, Volume, epoch_items, slice_pool
from bids_infantseg.train.checkpoint import has_checkpoint, load_checkpoint, save_checkpoint
from bids_infantseg.train.losses import median_frequency_weights, quicknat_loss

LOGGER = logging.getLogger("bids_infantseg.train")
DONE_FILE = "done.json"
WEIGHTS_FILE = "weights.safetensors"


@dataclass(frozen=True)
class Recipe:
    epochs_classifier: int
    epochs_all: int
    lr: float
    lr_decay: float = 1.0
    batch_size: int = 8
    max_slices_per_epoch: int | None = None
    boundary_weight: float = 2.0
    augment: bool = True
    amp: bool = True
    seed: int = 0

    def schedule(self, from_scratch: bool) -> list[str]:
        """Stage of each epoch: ``classifier`` (stage I) then ``all`` (stage II)."""
        first = [] if from_scratch else ["classifier"] * self.epochs_classifier
        return first + ["all"] * self.epochs_all


@dataclass(frozen=True)
class Unit:
    """One network to train: its name, checkpoint folder, views and seed key."""

    name: str
    folder: Path
    views: tuple[str, ...]
    key: tuple[int, ...]


@dataclass
class Runtime:
    """How to run (not what is learnt): device, ranks, loader processes, progress."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    place: ddp.Dist = field(default_factory=ddp.Dist)
    workers: int = 0
    eval_batch_size: int = 8
    progress: bool = True
    tracker: Progress | None = None
    after_epoch: Callable[[Unit, int], None] | None = None  # tests: simulate a kill


@dataclass
class UnitResult:
    state: dict[str, torch.Tensor]
    history: list[dict]
    train_seconds: float = 0.0
    slices: int = 0


class Progress:
    """Epoch counter of a whole run, for one log line per epoch with an overall ETA."""

    def __init__(self, total_epochs: int) -> None:
        self.total = total_epochs
        self.done = 0
        self.timed_epochs = 0
        self.timed_seconds = 0.0

    def skip(self, epochs: int) -> None:
        """Epochs already done by an earlier (killed) run: counted, not timed."""
        self.done += epochs

    def eta(self) -> str:
        """Time left for the whole run, from the epochs timed so far ('?' before the first)."""
        if not self.timed_epochs:
            return "?"
        left = max(self.total - self.done, 0) * self.timed_seconds / self.timed_epochs
        return _duration(left)

    def tick(self, seconds: float) -> str:
        self.done += 1
        self.timed_epochs += 1
        self.timed_seconds += seconds
        left = max(self.total - self.done, 0) * self.timed_seconds / self.timed_epochs
        return f"epoch {self.done}/{self.total} of the run, ETA {_duration(left)}"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def seed_of(*key: int) -> int:
    """A 63-bit seed from integers (stable across runs, platforms and processes)."""
    return int(np.random.SeedSequence([int(k) for k in key]).generate_state(2, np.uint64)[0]
               >> np.uint64(1))


def class_weights(volumes: Sequence[Volume], classes: int) -> np.ndarray:
    """Median-frequency weights from the voxel counts of the training volumes."""
    counts = np.zeros(classes, dtype=np.int64)
    for volume in volumes:
        counts += np.asarray(volume.counts, dtype=np.int64)
    return median_frequency_weights(counts)


def _set_stage(net: QuickNAT, stage: str) -> None:
    if stage == "classifier":
        net.eval()  # frozen layers: batch norm statistics and dropout fixed
        for param in net.parameters():
            param.requires_grad_(False)
        for param in net.classifier.parameters():
            param.requires_grad_(True)
        net.classifier.train()
    else:
        net.train()
        for param in net.parameters():
            param.requires_grad_(True)


def evaluation_card(card: ModelCard, views: Sequence[str]) -> ModelCard:
    return replace(card, views=dict.fromkeys(views, 1.0))


def confusions(card: ModelCard, nets: dict[str, QuickNAT], volumes: Sequence[Volume],
               runtime: Runtime) -> np.ndarray:
    """Per volume, the class confusion ``(n, K, K)`` of the model-grid prediction of
    ``nets`` (rows reference, columns predicted); each rank does its share."""
    k = len(card.labels)
    counts = torch.zeros((len(volumes), k, k), dtype=torch.int64)
    model = Model(evaluation_card(card, list(nets)), nets, Path("."), "")
    for net in nets.values():
        net.eval()
    for i, volume in enumerate(volumes):
        if i % runtime.place.world != runtime.place.rank:
            continue
        image, classes = volume.arrays()
        probs = predict(model, np.array(image), device=runtime.device,
                        batch_size=runtime.eval_batch_size)
        counts[i] = torch.from_numpy(
            confusion_matrix(probs.argmax(axis=0), np.asarray(classes), np.arange(k)))
    return ddp.all_reduce_sum(counts).numpy()


def nanmean(values: np.ndarray, axis: int = 0) -> np.ndarray:
    """Mean ignoring NaN, quietly NaN where everything is (labels absent from every scan)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(values, axis=axis)


def _curve_point(card: ModelCard, net: QuickNAT, unit: Unit, volumes: Sequence[Volume],
                 runtime: Runtime) -> dict[str, list[float | None]]:
    per_scan = scores(confusions(card, dict.fromkeys(unit.views, net), volumes, runtime))
    return {metric: [None if np.isnan(v) else round(float(v), 5) for v in nanmean(values)]
            for metric, values in per_scan.items()}


def _autocast(device: torch.device, enabled: bool):
    if not enabled or device.type != "cuda":
        return torch.autocast("cpu", enabled=False)
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


class EpochSampler(Sampler):
    """The items of the current epoch; set before each pass, so one loader (and its
    persistent worker processes) serves every epoch of a unit."""

    def __init__(self) -> None:
        self.items: list[tuple[int, ...]] = []

    def __iter__(self):
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


def _collate(batch):
    images, targets = zip(*batch, strict=True)
    return torch.stack(images), torch.stack(targets)


def read_done(unit: Unit) -> UnitResult | None:
    """The result of a unit an earlier run finished, if any."""
    done = unit.folder / DONE_FILE
    if not done.is_file() or not (unit.folder / WEIGHTS_FILE).is_file():
        return None
    info = json.loads(done.read_text())
    return UnitResult(load_file(str(unit.folder / WEIGHTS_FILE)), info["history"],
                      info.get("train_seconds", 0.0), info.get("slices", 0))


def train_unit(unit: Unit, card: ModelCard, net: QuickNAT, train: Sequence[Volume],
               held_out: Sequence[Volume], recipe: Recipe, runtime: Runtime, *,
               from_scratch: bool, weights: np.ndarray) -> UnitResult:
    """Train ``net`` (already initialised: pretrained with its classifier, or fresh) on
    ``train``; resume from the unit's checkpoint; returns the final weights and history."""
    done = read_done(unit)
    schedule = recipe.schedule(from_scratch)
    tracker = runtime.tracker
    if done is not None:
        if tracker:
            tracker.skip(len(schedule))
        LOGGER.info("%s: already trained by an earlier run", unit.name)
        return done
    place, device = runtime.place, runtime.device
    net.to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=recipe.lr)
    use_amp = recipe.amp and device.type == "cuda"
    # fp16 autocast needs loss scaling; bf16 (where the GPU has it) does not
    scaler = torch.amp.GradScaler(
        "cuda", enabled=use_amp and not torch.cuda.is_bf16_supported())
    history: list[dict] = []
    first = 0
    if has_checkpoint(unit.folder):
        state = load_checkpoint(unit.folder, {"net": net}, {"net": optimizer})
        first, history = state["epochs_done"], state["history"]
        if state.get("scaler") and scaler.is_enabled():
            scaler.load_state_dict(state["scaler"])
        LOGGER.info("%s: resuming after epoch %d of %d", unit.name, first, len(schedule))
    if tracker:
        tracker.skip(first)
    w = torch.from_numpy(weights).to(device)
    boundary = recipe.boundary_weight * float(np.median(weights))
    pool = slice_pool(list(train), unit.views)
    if len(pool) < place.world:
        raise ValueError(f"{unit.name}: {len(pool)} training slice(s) for {place.world} rank(s)")
    dataset = SliceDataset(list(train), augment=recipe.augment, seed=recipe.seed)
    sampler = EpochSampler()
    workers = runtime.workers
    # workers from a fork server: forked children of a process whose torch threads already
    # ran can hang; persistent, so they start once per unit, not once per epoch
    loader = DataLoader(dataset, batch_size=recipe.batch_size, sampler=sampler,
                        num_workers=workers, collate_fn=_collate,
                        pin_memory=device.type == "cuda", persistent_workers=workers > 0,
                        multiprocessing_context="forkserver" if workers > 0 else None)
    stage, wrapped = None, net
    for epoch in range(first, len(schedule)):
        _set_stage(net, schedule[epoch])  # every epoch: evaluation left the net in eval mode
        if schedule[epoch] != stage:
            stage = schedule[epoch]
            del wrapped  # drop the old DDP wrapper (and its gradient hooks) first
            wrapped = ddp.wrap(net, device)
        items = epoch_items(pool, recipe.max_slices_per_epoch,
                            np.random.default_rng([recipe.seed, *unit.key, epoch]))
        share = len(items) // place.world  # equal steps on every rank, or DDP would hang
        sampler.items = [(epoch, *map(int, row)) for row in items[place.rank::place.world][:share]]
        torch.manual_seed(seed_of(recipe.seed, *unit.key, epoch, place.rank))
        started, cpu_started = time.monotonic(), time.process_time()
        total, steps = 0.0, 0
        label = "I" if stage == "classifier" else "II"
        bar = tqdm(loader, desc=f"{unit.name} stage {label} epoch {epoch + 1}/{len(schedule)}",
                   disable=None if runtime.progress and place.main else True,
                   unit="batch", leave=False, mininterval=5.0)  # None: off unless a terminal
        run_eta = tracker.eta() if tracker else "?"
        for images, targets in bar:
            images = images.to(device, non_blocking=True)
            targets = targets.to(device, non_blocking=True)
            with _autocast(device, use_amp):
                logits = wrapped(images)
            loss = quicknat_loss(logits.float(), targets, w, boundary)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            total += float(loss.detach())
            steps += 1
            bar.set_postfix(loss=f"{total / steps:.4f}", run_eta=run_eta)
        bar.close()
        seconds = time.monotonic() - started
        cpu_seconds = time.process_time() - cpu_started  # this process (and its threads)
        sums = ddp.all_reduce_sum(torch.tensor([total, float(steps)], dtype=torch.float64))
        record = {"epoch": epoch + 1, "stage": stage, "loss": round(float(sums[0] / sums[1]), 6),
                  "lr": optimizer.param_groups[0]["lr"], "slices": share * place.world,
                  "seconds": round(seconds, 2), "cpu_seconds": round(cpu_seconds, 2)}
        for group in optimizer.param_groups:
            group["lr"] *= recipe.lr_decay
        if held_out:
            record["held_out"] = _curve_point(card, net, unit, held_out, runtime)
            if device.type == "cuda":  # GPU inference turns the network channels-last
                net.to(memory_format=torch.contiguous_format)
        history.append(record)
        if place.main:
            save_checkpoint(unit.folder, {"net": net}, {"net": optimizer},
                            {"unit": unit.name, "epochs_done": epoch + 1, "history": history,
                             "scaler": scaler.state_dict() if scaler.is_enabled() else None})
        ddp.barrier()
        note = tracker.tick(time.monotonic() - started) if tracker else ""
        held = record.get("held_out", {}).get("accuracy")
        accuracy = "" if not held else \
            f", held-out mean accuracy {np.nanmean([a for a in held if a is not None]):.3f}"
        LOGGER.info("%s stage %s epoch %d/%d: loss %.4f (%d slices, %.0f s%s); %s",
                    unit.name, label, epoch + 1, len(schedule), record["loss"], record["slices"],
                    seconds, accuracy, note)
        if runtime.after_epoch:
            runtime.after_epoch(unit, epoch + 1)
    net.eval()
    state = {k: v.detach().cpu().clone().contiguous() for k, v in net.state_dict().items()}
    seconds = sum(h["seconds"] for h in history)
    result = UnitResult(state, history, seconds, sum(h["slices"] for h in history))
    spread = ddp.rank_spread(net)
    if place.enabled:
        LOGGER.info("%s: parameters of the %d ranks differ by at most %.3g (sums of tensors)",
                    unit.name, place.world, spread)
    if place.main:
        atomic_write(unit.folder / WEIGHTS_FILE, lambda tmp: save_file(state, str(tmp)))
        atomic_write_json(unit.folder / DONE_FILE, {
            "unit": unit.name, "history": history, "train_seconds": seconds,
            "slices": result.slices, "processes": place.world, "rank_spread": spread})
    ddp.barrier()
    return result

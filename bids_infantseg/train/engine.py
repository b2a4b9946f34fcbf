"""The training engine: one network (a *unit*) trained on batches from a data source.

Both ways this project trains go through ``train_unit``: the train level fine-tunes (or
pre-trains) on a site's cached volumes (``batches.CachedSlices``), and the starter trains on
an endless stream of synthetic slices (``batches.SyntheticStream``). ``Recipe`` is the one
configuration of both, written to the model card.

A unit is one view's network (QuickNAT trains one per view), or with shared views one
network on the slices of every view. From a pretrained model (its classifier replaced when
the label set differs)

- stage I trains the classifier alone (everything else frozen: no gradients, batch norm
  statistics and dropout fixed), ``epochs_classifier`` epochs;
- stage II trains every layer, ``epochs_all`` epochs.

From scratch there is only stage II. Adam throughout; QuickNAT's loss (median-frequency and
boundary weighted cross-entropy plus soft Dice), the class weights from the source's voxel
counts; a source whose targets include partial labels (``groups``) gets their loss
(``losses.py``). Under DDP each rank takes an equal share of each epoch and gradients are averaged.

After every epoch rank 0 writes a checkpoint (weights, Adam moments, history, class counts,
recipe) into the unit's folder, so a killed run resumes at the next epoch; every random draw
is seeded by (seed, unit, epoch[, rank]), so the resumed run ends with the weights an
uninterrupted one would have. With a time budget the unit stops at an epoch's end when the
next epoch would not fit, or mid-epoch (that epoch recorded as ``partial``, its checkpoint
written) when an epoch runs over; it is then not marked done, and a rerun continues from
the checkpoint. Each epoch records its loss, slices, seconds, CPU seconds and seconds spent
waiting for batches, and with held-out volumes per-label accuracy and Dice of the unit's
network on them (the learning curves).
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import NamedTuple, Protocol

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from bids_infantseg.derivatives import atomic_write_json
from bids_infantseg.files import atomic_write
from bids_infantseg.inference import predict
from bids_infantseg.metrics import confusion_matrix, scores
from bids_infantseg.model.architectures import build_network
from bids_infantseg.model.card import Model, ModelCard
from bids_infantseg.model.quicknat import QuickNAT
from bids_infantseg.model.views import VIEW_AXIS
from bids_infantseg.train import ddp
from bids_infantseg.train.cache import Volume
from bids_infantseg.train.checkpoint import has_checkpoint, load_checkpoint, save_checkpoint
from bids_infantseg.train.losses import median_frequency_weights, quicknat_loss

LOGGER = logging.getLogger("bids_infantseg.train")
DONE_FILE = "done.json"
WEIGHTS_FILE = "weights.safetensors"
SHARED = "shared"


@dataclass(frozen=True)
class Recipe:
    """What is learnt and how long: the one training configuration (stored in the card).

    ``max_slices_per_epoch`` and ``augment`` apply to cached slices, ``steps_per_epoch`` to
    a synthetic stream (whose generator does its own augmentation); ``time_budget_s`` is
    wall-clock seconds for one unit.
    """

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
    steps_per_epoch: int | None = None
    time_budget_s: float | None = None
    class_weight_cap: float | None = None  # largest class weight (losses.median_frequency_weights)

    def schedule(self, from_scratch: bool) -> list[str]:
        """Stage of each epoch: ``classifier`` (stage I) then ``all`` (stage II)."""
        first = [] if from_scratch else ["classifier"] * self.epochs_classifier
        return first + ["all"] * self.epochs_all

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Unit:
    """One network to train: its name, checkpoint folder, views and seed key."""

    name: str
    folder: Path
    views: tuple[str, ...]
    key: tuple[int, ...]


def unit_views(views: Sequence[str], shared: bool) -> list[tuple[str, tuple[str, ...], int]]:
    """The networks of a model, as (name, views, seed index): one per view, or one
    (``shared``, index 3) serving every view."""
    if shared:
        return [(SHARED, tuple(views), 3)]
    return [(view, (view,), VIEW_AXIS[view]) for view in views]


class Epoch(NamedTuple):
    """One epoch of a data source: how many batches (for progress) and the batches."""

    steps: int
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]]


class BatchSource(Protocol):
    """Where a unit's training batches come from (``batches.py``): images ``(B, 1, H, W)``
    float32 and classes ``(B, H, W)`` int64."""

    wait_seconds: float  # so far, waiting for batches: the time training stood still for data
    groups: tuple[tuple[int, ...], ...]  # classes of each partial target (K + g); () if none

    def class_counts(self) -> np.ndarray:
        """Voxels per target of the training data, classes then partial targets (for the
        class weights)."""

    def epoch(self, key: tuple[int, ...], epoch: int, place: ddp.Dist) -> Epoch:
        """This rank's batches of ``epoch``, drawn from the seed ``key`` and the epoch."""


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
    stopped_early: bool = False  # the time budget ended it before its last epoch

    @property
    def train_seconds(self) -> float:
        return sum(h["seconds"] for h in self.history)

    @property
    def slices(self) -> int:
        return sum(h["slices"] for h in self.history)


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


def transfers(init: ModelCard, card: ModelCard) -> bool:
    """Whether a warm start from ``init`` needs a new classifier (other classes)."""
    return not init.labels.same_classes(card.labels)


def initial_net(card: ModelCard, init: Model | None, view: str, seed: int) -> QuickNAT:
    """A network seeded by ``seed``: fresh (the card's architecture, built through the
    registry), or a copy of ``init``'s network for ``view`` whose classifier is replaced by
    a fresh one where the classes differ (Wang et al.'s transfer). A checkpoint in the
    unit's folder, if any, replaces these weights: training resumes."""
    torch.manual_seed(seed)
    if init is None:
        return build_network(card.architecture)
    net = build_network(init.card.architecture)
    net.load_state_dict(init.nets[view].state_dict())
    if transfers(init.card, card):
        net.replace_classifier(len(card.labels))
    return net


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


def read_done(unit: Unit) -> UnitResult | None:
    """The result of a unit an earlier run finished, if any."""
    done = unit.folder / DONE_FILE
    if not done.is_file() or not (unit.folder / WEIGHTS_FILE).is_file():
        return None
    info = json.loads(done.read_text())
    return UnitResult(load_file(str(unit.folder / WEIGHTS_FILE)), info["history"])




class Budget:
    """A unit's wall-clock budget: whether one more epoch, or one more batch, still fits."""

    def __init__(self, seconds: float | None, place: ddp.Dist) -> None:
        self.deadline = None if seconds is None else time.monotonic() + seconds
        self.place = place
        self.epoch_seconds: list[float] = []  # epochs run so far by this process

    def room_for_epoch(self) -> bool:
        """Before an epoch: as long as the epochs so far took, on average (the first always
        starts: only its batches can tell)."""
        if self.deadline is None or not self.epoch_seconds:
            return True
        return self._agree(time.monotonic() + float(np.mean(self.epoch_seconds))
                           <= self.deadline)

    def room_for_batch(self, started: float, batches: int) -> bool:
        """After ``batches`` batches of an epoch begun at ``started``: one more, with margin."""
        if self.deadline is None:
            return True
        now = time.monotonic()
        return self._agree(now + 1.5 * (now - started) / batches <= self.deadline)

    def _agree(self, fits: bool) -> bool:
        """Every rank stops together, or DDP would wait forever for the one going on."""
        if not self.place.enabled:
            return fits
        return float(ddp.all_reduce_sum(torch.tensor([0.0 if fits else 1.0]))[0]) == 0.0


def train_unit(unit: Unit, card: ModelCard, net: QuickNAT, source: BatchSource,
               held_out: Sequence[Volume], recipe: Recipe, runtime: Runtime, *,
               from_scratch: bool) -> UnitResult:
    """Train ``net`` (already initialised: pretrained with its classifier, or fresh) on the
    batches of ``source``; resume from the unit's checkpoint; returns the final weights and
    history. A unit an earlier run finished (with at least this schedule) is not retrained."""
    budget = Budget(recipe.time_budget_s, runtime.place)
    done = read_done(unit)
    schedule = recipe.schedule(from_scratch)
    tracker = runtime.tracker
    if done is not None and len(done.history) >= len(schedule):
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
    first, counts = 0, None
    if has_checkpoint(unit.folder):
        state = load_checkpoint(unit.folder, {"net": net}, {"net": optimizer})
        first, history = state["epochs_done"], state["history"]
        counts = state.get("class_counts")
        if state.get("scaler") and scaler.is_enabled():
            scaler.load_state_dict(state["scaler"])
        LOGGER.info("%s: resuming after epoch %d of %d", unit.name, first, len(schedule))
    if tracker:
        tracker.skip(first)
    counts = np.asarray(source.class_counts() if counts is None else counts, dtype=np.int64)
    weights = median_frequency_weights(counts, recipe.class_weight_cap)
    w = torch.from_numpy(weights).to(device)
    boundary = recipe.boundary_weight * float(np.median(weights))
    groups = source.groups  # fixed for the unit (a synthetic source derives them each call)
    stage, wrapped, stopped = None, net, False
    for epoch in range(first, len(schedule)):
        if not budget.room_for_epoch():
            LOGGER.info("%s: the time budget (%.0f s) leaves no room for epoch %d; stopping "
                        "after epoch %d", unit.name, recipe.time_budget_s, epoch + 1, epoch)
            stopped = True
            break
        _set_stage(net, schedule[epoch])  # every epoch: evaluation left the net in eval mode
        if schedule[epoch] != stage:
            stage = schedule[epoch]
            del wrapped  # drop the old DDP wrapper (and its gradient hooks) first
            wrapped = ddp.wrap(net, device)
        torch.manual_seed(seed_of(recipe.seed, *unit.key, epoch, place.rank))
        started, cpu_started = time.monotonic(), time.process_time()
        steps, batches = source.epoch((recipe.seed, *unit.key), epoch, place)
        waited = source.wait_seconds
        total, count, slices, partial = 0.0, 0, 0, False
        label = "I" if stage == "classifier" else "II"
        bar = tqdm(batches, total=steps,
                   desc=f"{unit.name} stage {label} epoch {epoch + 1}/{len(schedule)}",
                   disable=None if runtime.progress and place.main else True,
                   unit="batch", leave=False, mininterval=5.0)  # None: off unless a terminal
        run_eta = tracker.eta() if tracker else "?"
        for images, targets in bar:
            images = images.to(device, non_blocking=True)
            targets = targets.to(device, non_blocking=True)
            with _autocast(device, use_amp):
                logits = wrapped(images)
            loss = quicknat_loss(logits.float(), targets, w, boundary, groups)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            total += float(loss.detach())
            count += 1
            slices += len(images)
            bar.set_postfix(loss=f"{total / count:.4f}", run_eta=run_eta)
            if count < steps and not budget.room_for_batch(started, count):
                partial = True
                break
        bar.close()
        seconds = time.monotonic() - started
        cpu_seconds = time.process_time() - cpu_started  # this process (and its threads)
        sums = ddp.all_reduce_sum(torch.tensor([total, float(count), float(slices)],
                                               dtype=torch.float64))
        record = {"epoch": epoch + 1, "stage": stage, "loss": round(float(sums[0] / sums[1]), 6),
                  "lr": optimizer.param_groups[0]["lr"], "slices": int(sums[2]),
                  "seconds": round(seconds, 2), "cpu_seconds": round(cpu_seconds, 2),
                  "data_wait_seconds": round(source.wait_seconds - waited, 2)}
        if partial:
            record["partial"] = True
        for group in optimizer.param_groups:
            group["lr"] *= recipe.lr_decay
        if held_out:
            record["held_out"] = _curve_point(card, net, unit, held_out, runtime)
            if device.type == "cuda":  # GPU inference turns the network channels-last
                net.to(memory_format=torch.contiguous_format)
        history.append(record)
        if place.main:
            save_checkpoint(unit.folder, {"net": net}, {"net": optimizer}, {
                "unit": unit.name, "epochs_done": epoch + 1, "history": history,
                "class_counts": counts.tolist(), "recipe": recipe.to_dict(),
                "scaler": scaler.state_dict() if scaler.is_enabled() else None})
        ddp.barrier()
        note = tracker.tick(time.monotonic() - started) if tracker else ""
        held = record.get("held_out", {}).get("accuracy")
        accuracy = "" if not held else \
            f", held-out mean accuracy {np.nanmean([a for a in held if a is not None]):.3f}"
        LOGGER.info("%s stage %s epoch %d/%d: loss %.4f (%d slices, %.0f s, %.0f s waiting for "
                    "data%s)%s", unit.name, label, epoch + 1, len(schedule), record["loss"],
                    record["slices"], seconds, record["data_wait_seconds"], accuracy,
                    f"; {note}" if note else "")
        if runtime.after_epoch:
            runtime.after_epoch(unit, epoch + 1)
        budget.epoch_seconds.append(time.monotonic() - started)
        if partial:
            LOGGER.info("%s: time budget (%.0f s) reached during epoch %d; stopping",
                        unit.name, recipe.time_budget_s, epoch + 1)
            stopped = True
            break
    net.eval()
    state = {k: v.detach().cpu().clone().contiguous() for k, v in net.state_dict().items()}
    result = UnitResult(state, history, stopped_early=stopped)
    spread = ddp.rank_spread(net)
    if place.enabled:
        LOGGER.info("%s: parameters of the %d ranks differ by at most %.3g (sums of tensors)",
                    unit.name, place.world, spread)
    if place.main and not stopped:
        atomic_write(unit.folder / WEIGHTS_FILE, lambda tmp: save_file(state, str(tmp)))
        atomic_write_json(unit.folder / DONE_FILE, {
            "unit": unit.name, "history": history, "train_seconds": result.train_seconds,
            "slices": result.slices, "processes": place.world, "rank_spread": spread})
    ddp.barrier()
    return result

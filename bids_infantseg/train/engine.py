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

From scratch there is only stage II. ``UnitTrainer`` holds the loop (``run``, a dozen lines)
and one method per step, to override rather than edit: ``configure_optimizer`` (Adam),
``configure_scheduler`` (``torch.optim.lr_scheduler.ExponentialLR``, ``lr_decay`` per
epoch), ``on_epoch_start``, ``train_step`` (QuickNAT's loss: median-frequency and boundary
weighted cross-entropy plus soft Dice, the class weights from the source's voxel counts; a
source whose targets include partial labels (``groups``) gets their loss, ``losses.py``),
``on_epoch_end``, ``validate`` and ``save_checkpoint``. What the network's classifier is
comes from the architecture registry, never from a network class. Under DDP each rank takes
an equal share of each epoch and gradients are averaged.

Validation: with a scorer (``Runtime.scorer``, named by the ``scorer`` setting) every
checkpoint's network is scored, the score kept in the epoch's record and in ``scores.tsv``
in the unit's folder, the best one's weights in ``best.safetensors``; the unit's result is
then the best checkpoint, not the last epoch (without a scorer: the last epoch).

After every epoch rank 0 writes a checkpoint (weights, Adam moments, scheduler, history, class
counts, recipe) into the unit's folder (``compact_checkpoints``: weights float16 and Adam
moments bfloat16, small enough to commit; a run resumed from one is then close to, not
identical with, an uninterrupted one), so a killed run resumes at the next epoch; every random draw
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
import pandas as pd
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from bids_infantseg.core.inference import predict
from bids_infantseg.core.metrics import confusion_matrix, scores
from bids_infantseg.io.derivatives import atomic_write_json, atomic_write_tsv
from bids_infantseg.model.architectures import Architecture, architecture_of, build_network
from bids_infantseg.model.card import Model, ModelCard
from bids_infantseg.model.views import VIEW_AXIS
from bids_infantseg.train import ddp
from bids_infantseg.train.cache import Volume
from bids_infantseg.train.checkpoint import has_checkpoint, load_checkpoint, save_checkpoint
from bids_infantseg.train.losses import median_frequency_weights, quicknat_loss
from bids_infantseg.utils.files import atomic_write

LOGGER = logging.getLogger("bids_infantseg.train")
DONE_FILE = "done.json"
WEIGHTS_FILE = "weights.safetensors"
BEST_FILE = "best.safetensors"
SCORES_FILE = "scores.tsv"
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
    compact_checkpoints: bool = False  # float16 weights, bfloat16 Adam moments
    score_every: int = 1  # epochs between scored checkpoints (the last is always scored)

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


Scorer = Callable[[Model], tuple[float, object]]
"""Validation: a model (the unit's network for its views) -> (score, higher is better; a
table, a ``pandas.DataFrame`` to keep beside the checkpoint's score, or anything else)."""


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
    scorer: Scorer | None = None  # validation: scores each checkpoint, the best one ships


@dataclass
class UnitResult:
    state: dict[str, torch.Tensor]
    history: list[dict]
    stopped_early: bool = False  # the time budget ended it before its last epoch
    best_epoch: int | None = None  # the scored checkpoint the state is (None: the last epoch)

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


def initial_net(card: ModelCard, init: Model | None, view: str, seed: int) -> nn.Module:
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
        architecture_of(init.card.architecture).replace_classifier(net, len(card.labels))
    return net


def _set_stage(net: nn.Module, protocol: Architecture, stage: str) -> None:
    if stage == "classifier":
        net.eval()  # frozen layers: batch norm statistics and dropout fixed
        for param in net.parameters():
            param.requires_grad_(False)
        classifier = protocol.classifier(net)
        for param in classifier.parameters():
            param.requires_grad_(True)
        classifier.train()
    else:
        net.train()
        for param in net.parameters():
            param.requires_grad_(True)


def evaluation_card(card: ModelCard, views: Sequence[str]) -> ModelCard:
    return replace(card, views=dict.fromkeys(views, 1.0))


def confusions(card: ModelCard, nets: dict[str, nn.Module], volumes: Sequence[Volume],
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


def _curve_point(card: ModelCard, net: nn.Module, unit: Unit, volumes: Sequence[Volume],
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
    return UnitResult(load_file(str(unit.folder / WEIGHTS_FILE)), info["history"],
                      best_epoch=info.get("best_epoch"))


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


def _state_copy(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone().contiguous() for k, v in net.state_dict().items()}


class UnitTrainer:
    """Trains one unit on a batch source. ``run`` is the whole loop; each step is a method,
    so a new optimiser, scheduler, loss or validation rule is an override (or a scorer),
    not an edit in the middle of a loop."""

    def __init__(self, unit: Unit, card: ModelCard, net: nn.Module, source: BatchSource,
                 held_out: Sequence[Volume], recipe: Recipe, runtime: Runtime, *,
                 from_scratch: bool) -> None:
        self.unit, self.card, self.net, self.source = unit, card, net, source
        self.held_out, self.recipe, self.runtime = held_out, recipe, runtime
        self.protocol = architecture_of(card.architecture)
        self.schedule = recipe.schedule(from_scratch)
        self.budget = Budget(recipe.time_budget_s, runtime.place)
        self.device, self.place = runtime.device, runtime.place
        self.use_amp = recipe.amp and self.device.type == "cuda"
        self.history: list[dict] = []
        self.first_epoch = 0
        self.stage: str | None = None
        self.wrapped: nn.Module = net
        self.stopped = False

    # the loop
    def run(self) -> UnitResult:
        """Resume, train the epochs of the schedule the budget allows, return the result."""
        done = self.already_done()
        if done is not None:
            return done
        self.setup()
        for epoch in range(self.first_epoch, len(self.schedule)):
            if not self.budget.room_for_epoch():
                self.stop(f"the time budget ({self.recipe.time_budget_s:.0f} s) leaves no "
                          f"room for epoch {epoch + 1}; stopping after epoch {epoch}")
                break
            self.on_epoch_start(epoch)
            record = self.train_epoch(epoch)
            self.on_epoch_end(epoch, record)
            if record.get("partial"):
                self.stop(f"time budget ({self.recipe.time_budget_s:.0f} s) reached during "
                          f"epoch {epoch + 1}; stopping")
                break
        return self.finish()

    # the steps
    def already_done(self) -> UnitResult | None:
        """A unit an earlier run finished (with at least this schedule) is not retrained."""
        done = read_done(self.unit)
        if done is None or len(done.history) < len(self.schedule):
            return None
        if self.runtime.tracker:
            self.runtime.tracker.skip(len(self.schedule))
        LOGGER.info("%s: already trained by an earlier run", self.unit.name)
        return done

    def configure_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.net.parameters(), lr=self.recipe.lr)

    def configure_scheduler(self) -> torch.optim.lr_scheduler.LRScheduler:
        """Stepped after every epoch: the learning rate times ``lr_decay``."""
        return torch.optim.lr_scheduler.ExponentialLR(self.optimizer, gamma=self.recipe.lr_decay)

    def setup(self) -> None:
        """Optimiser, scheduler, loss scaling, the checkpoint to resume from, class weights."""
        self.net.to(self.device)
        self.optimizer = self.configure_optimizer()
        self.scheduler = self.configure_scheduler()
        # fp16 autocast needs loss scaling; bf16 (where the GPU has it) does not
        self.scaler = torch.amp.GradScaler(
            "cuda", enabled=self.use_amp and not torch.cuda.is_bf16_supported())
        counts = self.resume()
        if self.runtime.tracker:
            self.runtime.tracker.skip(self.first_epoch)
        self.counts = np.asarray(self.source.class_counts() if counts is None else counts,
                                 dtype=np.int64)
        weights = median_frequency_weights(self.counts, self.recipe.class_weight_cap)
        self.class_weights = torch.from_numpy(weights).to(self.device)
        self.boundary = self.recipe.boundary_weight * float(np.median(weights))
        self.groups = self.source.groups  # fixed for the unit (a synthetic source derives them)

    def resume(self) -> list | None:
        """Load the unit's checkpoint, if any; its class counts (``None`` without one)."""
        if not has_checkpoint(self.unit.folder):
            return None
        state = load_checkpoint(self.unit.folder, {"net": self.net}, {"net": self.optimizer})
        self.first_epoch, self.history = state["epochs_done"], state["history"]
        if state.get("scheduler"):
            self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])
        LOGGER.info("%s: resuming after epoch %d of %d", self.unit.name, self.first_epoch,
                    len(self.schedule))
        return state.get("class_counts")

    def on_epoch_start(self, epoch: int) -> None:
        """The epoch's stage (every epoch: evaluation left the net in eval mode), its DDP
        wrapper when the stage changes, and its seed."""
        stage = self.schedule[epoch]
        _set_stage(self.net, self.protocol, stage)
        if stage != self.stage:
            self.stage = stage
            del self.wrapped  # drop the old DDP wrapper (and its gradient hooks) first
            self.wrapped = ddp.wrap(self.net, self.device)
        torch.manual_seed(seed_of(self.recipe.seed, *self.unit.key, epoch, self.place.rank))
        self.started, self.cpu_started = time.monotonic(), time.process_time()

    def train_step(self, images: torch.Tensor, targets: torch.Tensor) -> float:
        """One optimiser step on one batch; its loss."""
        images = images.to(self.device, non_blocking=True)
        targets = targets.to(self.device, non_blocking=True)
        with _autocast(self.device, self.use_amp):
            logits = self.wrapped(images)
        loss = quicknat_loss(logits.float(), targets, self.class_weights, self.boundary,
                             self.groups)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return float(loss.detach())

    def train_epoch(self, epoch: int) -> dict:
        """The epoch's batches through ``train_step`` (mid-epoch stop when the budget ends);
        the epoch's record, summed over ranks."""
        steps, batches = self.source.epoch((self.recipe.seed, *self.unit.key), epoch,
                                           self.place)
        waited = self.source.wait_seconds
        total, count, slices, partial = 0.0, 0, 0, False
        bar = tqdm(batches, total=steps, desc=f"{self.unit.name} stage {self.stage_label} "
                   f"epoch {epoch + 1}/{len(self.schedule)}",
                   disable=None if self.runtime.progress and self.place.main else True,
                   unit="batch", leave=False, mininterval=5.0)  # None: off unless a terminal
        run_eta = self.runtime.tracker.eta() if self.runtime.tracker else "?"
        for images, targets in bar:
            total += self.train_step(images, targets)
            count += 1
            slices += len(images)
            bar.set_postfix(loss=f"{total / count:.4f}", run_eta=run_eta)
            if count < steps and not self.budget.room_for_batch(self.started, count):
                partial = True
                break
        bar.close()
        seconds = time.monotonic() - self.started
        cpu_seconds = time.process_time() - self.cpu_started  # this process (and its threads)
        sums = ddp.all_reduce_sum(torch.tensor([total, float(count), float(slices)],
                                               dtype=torch.float64))
        record = {"epoch": epoch + 1, "stage": self.stage,
                  "loss": round(float(sums[0] / sums[1]), 6),
                  "lr": self.optimizer.param_groups[0]["lr"], "slices": int(sums[2]),
                  "seconds": round(seconds, 2), "cpu_seconds": round(cpu_seconds, 2),
                  "data_wait_seconds": round(self.source.wait_seconds - waited, 2)}
        if partial:
            record["partial"] = True
        return record

    @property
    def stage_label(self) -> str:
        return "I" if self.stage == "classifier" else "II"

    def on_epoch_end(self, epoch: int, record: dict) -> None:
        """Scheduler step, validation, checkpoint, log line, the budget's epoch time."""
        self.scheduler.step()
        self.validate(record)
        self.history.append(record)
        if self.place.main:
            self.save_checkpoint(epoch)
        ddp.barrier()
        tracker = self.runtime.tracker
        note = tracker.tick(time.monotonic() - self.started) if tracker else ""
        held = record.get("held_out", {}).get("accuracy")
        accuracy = "" if not held else \
            f", held-out mean accuracy {np.nanmean([a for a in held if a is not None]):.3f}"
        score = f", score {record['score']:.4f}" if "score" in record else ""
        LOGGER.info("%s stage %s epoch %d/%d: loss %.4f (%d slices, %.0f s, %.0f s waiting for "
                    "data%s%s)%s", self.unit.name, self.stage_label, epoch + 1,
                    len(self.schedule), record["loss"], record["slices"], record["seconds"],
                    record["data_wait_seconds"], accuracy, score, f"; {note}" if note else "")
        if self.runtime.after_epoch:
            self.runtime.after_epoch(self.unit, epoch + 1)
        self.budget.epoch_seconds.append(time.monotonic() - self.started)

    def validate(self, record: dict) -> None:
        """Held-out learning curves (site volumes) and the scorer's score of this checkpoint;
        a new best score keeps the network's weights in ``best.safetensors``."""
        if self.held_out:
            record["held_out"] = _curve_point(self.card, self.net, self.unit, self.held_out,
                                              self.runtime)
        scorer = self.runtime.scorer
        epoch = record["epoch"]
        last = epoch == len(self.schedule) or record.get("partial")
        if scorer is not None and (last or epoch % self.recipe.score_every == 0):
            model = Model(evaluation_card(self.card, self.unit.views),
                          dict.fromkeys(self.unit.views, self.net), self.unit.folder, "")
            self.net.eval()
            score, table = scorer(model)
            record["score"] = round(float(score), 6)
            if self.place.main:
                if isinstance(table, pd.DataFrame):
                    atomic_write_tsv(self.unit.folder / f"score_epoch-{record['epoch']:03d}.tsv",
                                     table)
                if record["score"] > max((h["score"] for h in self.history if "score" in h),
                                         default=-np.inf):
                    state = _state_copy(self.net)
                    atomic_write(self.unit.folder / BEST_FILE,
                                 lambda tmp: save_file(state, str(tmp)))
        if self.device.type == "cuda":  # GPU inference turns the network channels-last
            self.net.to(memory_format=torch.contiguous_format)

    def save_checkpoint(self, epoch: int) -> None:
        """Weights, Adam moments, scheduler and counters; the scores so far as a table."""
        save_checkpoint(self.unit.folder, {"net": self.net}, {"net": self.optimizer}, {
            "unit": self.unit.name, "epochs_done": epoch + 1, "history": self.history,
            "class_counts": self.counts.tolist(), "recipe": self.recipe.to_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None},
            compact=self.recipe.compact_checkpoints)
        scored = [{"epoch": h["epoch"], "stage": h["stage"], "loss": h["loss"],
                   "score": h["score"]} for h in self.history if "score" in h]
        if scored:
            atomic_write_tsv(self.unit.folder / SCORES_FILE, pd.DataFrame(scored))

    def stop(self, why: str) -> None:
        LOGGER.info("%s: %s", self.unit.name, why)
        self.stopped = True

    def best_epoch(self) -> int | None:
        """The epoch of the best-scored checkpoint (``None`` when nothing was scored)."""
        scored = [h for h in self.history if "score" in h]
        if not scored or not (self.unit.folder / BEST_FILE).is_file():
            return None
        return max(scored, key=lambda h: h["score"])["epoch"]  # the first of equal scores

    def finish(self) -> UnitResult:
        """The unit's weights (the best-scored checkpoint's, else the last epoch's); a unit
        that trained its whole schedule is written and marked done."""
        self.net.eval()
        best = self.best_epoch()
        state = _state_copy(self.net)
        if best is not None:
            state = {k: v.to(state[k].dtype) for k, v in
                     load_file(str(self.unit.folder / BEST_FILE)).items()}
            self.net.load_state_dict(state)
            LOGGER.info("%s: the best-scored checkpoint is epoch %d", self.unit.name, best)
        result = UnitResult(state, self.history, stopped_early=self.stopped, best_epoch=best)
        spread = ddp.rank_spread(self.net)
        if self.place.enabled:
            LOGGER.info("%s: parameters of the %d ranks differ by at most %.3g (sums of "
                        "tensors)", self.unit.name, self.place.world, spread)
        if self.place.main and not self.stopped:
            atomic_write(self.unit.folder / WEIGHTS_FILE, lambda tmp: save_file(state, str(tmp)))
            atomic_write_json(self.unit.folder / DONE_FILE, {
                "unit": self.unit.name, "history": self.history,
                "train_seconds": result.train_seconds, "slices": result.slices,
                "processes": self.place.world, "rank_spread": spread, "best_epoch": best})
        ddp.barrier()
        return result


def train_unit(unit: Unit, card: ModelCard, net: nn.Module, source: BatchSource,
               held_out: Sequence[Volume], recipe: Recipe, runtime: Runtime, *,
               from_scratch: bool) -> UnitResult:
    """Train ``net`` (already initialised: pretrained with its classifier, or fresh) on the
    batches of ``source`` with :class:`UnitTrainer`; resumes from the unit's checkpoint."""
    return UnitTrainer(unit, card, net, source, held_out, recipe, runtime,
                       from_scratch=from_scratch).run()
